"""Training losses over a batch's target sessions.

Every term has the same form: for a positive item with score s and a set of negatives with
log-sum-exp L, the loss is softplus(L - s) = -log(e^s / (e^s + Σ e^neg)), a softmax of the
positive against its negatives.

``engaged``: each engaged (click or deeper) item against uniformly sampled catalog items.
``cascade`` (TBGRecall): exposed items against sampled items, clicked against
exposed-not-clicked items of the same session, paid against clicked-not-paid ones.
With ``scene_norm`` each term is averaged within each target scene and then summed over
scenes, so a dominant scene does not drown the others.

Under data parallelism each process holds a shard of the batch; ``count_reduce`` (sum over
processes) gives every mean the whole batch's denominators, so the processes' losses add up to
exactly the single-process loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from index.features import ACTION_CODE, CLICK
from model_export.batches import TargetSet

PAY = ACTION_CODE["pay"]
EXPOSURE = ACTION_CODE["exposure"]
NEG_INF = float("-inf")

LossKind = Literal["engaged", "cascade"]
CountReduce = Callable[[torch.Tensor], torch.Tensor]


def scene_mean(
    losses: torch.Tensor,
    scenes: torch.Tensor,
    normalise: bool,
    n_scenes: int | None = None,
    count_reduce: CountReduce | None = None,
) -> torch.Tensor:
    """Mean of ``losses`` (M,), or the sum over scenes of each scene's mean.

    ``count_reduce`` turns this shard's per-scene counts into the whole batch's; it needs
    ``n_scenes`` (the same on every process) and must be called by every process.
    """
    groups = scenes if normalise else torch.zeros_like(scenes)
    if not normalise:
        n = 1
    elif n_scenes is not None:
        n = n_scenes
    else:
        n = int(scenes.max()) + 1 if scenes.numel() else 1
    sums = torch.zeros(n, dtype=losses.dtype).index_add(0, groups, losses)
    counts = torch.zeros(n, dtype=losses.dtype).index_add(0, groups, torch.ones_like(losses))
    if count_reduce is not None:
        counts = count_reduce(counts)
    present = counts > 0
    return (sums[present] / counts[present]).sum()


def _softmax_term(
    scores: torch.Tensor,
    positive: torch.Tensor,
    negative_lse: torch.Tensor,
    scenes: torch.Tensor,
    normalise: bool,
    n_scenes: int | None,
    count_reduce: CountReduce | None,
) -> torch.Tensor:
    """scores (S, L); positive (S, L) bool; negative_lse (S, 1) — -inf rows have no negatives."""
    keep = positive & torch.isfinite(negative_lse)
    losses = F.softplus(negative_lse.expand_as(scores)[keep] - scores[keep])
    kept_scenes = scenes[:, None].expand_as(scores)[keep]
    return scene_mean(losses, kept_scenes, normalise, n_scenes, count_reduce)


def target_loss(
    users: torch.Tensor,
    item_vectors: torch.Tensor,
    negative_vectors: torch.Tensor,
    negatives: torch.Tensor,
    targets: TargetSet,
    temperature: float,
    kind: LossKind,
    scene_norm: bool,
    n_scenes: int | None = None,
    count_reduce: CountReduce | None = None,
) -> torch.Tensor:
    """users (S, D) one per target session; item_vectors (S, L, D); negative_vectors (N, D)."""
    scores = (users[:, None, :] * item_vectors).sum(-1) / temperature  # (S, L)
    neg_scores = users @ negative_vectors.T / temperature  # (S, N)
    # A sampled "negative" that is one of the session's items is not a negative.
    accidental = (negatives[None, None, :] == targets.items[:, :, None]).any(dim=1)  # (S, N)
    sampled_lse = neg_scores.masked_fill(accidental, NEG_INF).logsumexp(dim=1, keepdim=True)
    actions, scene = targets.actions, targets.scene
    norm = (scene_norm, n_scenes, count_reduce)
    if kind == "engaged":
        return _softmax_term(scores, actions >= CLICK, sampled_lse, scene, *norm)

    exposed = actions >= EXPOSURE
    not_clicked = exposed & (actions < CLICK)
    clicked_not_paid = (actions >= CLICK) & (actions < PAY)
    click_lse = scores.masked_fill(~not_clicked, NEG_INF).logsumexp(dim=1, keepdim=True)
    pay_lse = scores.masked_fill(~clicked_not_paid, NEG_INF).logsumexp(dim=1, keepdim=True)
    return (
        _softmax_term(scores, exposed, sampled_lse, scene, *norm)
        + _softmax_term(scores, actions >= CLICK, click_lse, scene, *norm)
        + _softmax_term(scores, actions == PAY, pay_lse, scene, *norm)
    )
