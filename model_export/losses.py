"""Training losses over a batch's target sessions.

Every term has the same form: for a positive item with score s and a set of negatives with
log-sum-exp L, the loss is softplus(L - s) = -log(e^s / (e^s + Σ e^neg)), a softmax of the
positive against its negatives.

``engaged``: each engaged (click or deeper) item against the sampled catalog items.
``cascade`` (TBGRecall): exposed items against sampled items, clicked against
exposed-not-clicked items of the same session, paid against clicked-not-paid ones.
With ``scene_norm`` each term is averaged within each target scene and then summed over
scenes, so a dominant scene does not drown the others.

The sampled negatives may be joined by the batch's other engaged target items (``in_batch``)
and corrected for how likely each was to be a negative (``log_q``: ``model_export.negatives``);
a row's own session items are never its negatives. Only the terms against sampled negatives
are corrected; the click and pay terms compare items of one session.

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
# (items, N sampled, M in-batch) -> log Q(item): ``negatives.NegativeSampler.log_expected_count``
LogExpectedCount = Callable[[torch.Tensor, int, int], torch.Tensor]


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


def _members(items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(S, C) bool: candidate c is one of row s's ``items`` (S, L) (-1 = padding)."""
    everything = torch.cat([items.flatten(), candidates])
    width = int(everything.max()) + 2 if everything.numel() else 1  # keys row * width + item + 1
    rows = torch.arange(len(items))[:, None]
    own = (rows * width + items + 1)[items >= 0]
    return torch.isin(rows * width + candidates[None, :] + 1, own)


def _in_batch(
    targets: TargetSet, item_vectors: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rows' engaged items, each once: (U,) items, (U, D) vectors, (U,) occurrences."""
    engaged = targets.actions >= CLICK
    flat_items, flat_vectors = targets.items[engaged], item_vectors[engaged]
    items, inverse, counts = torch.unique(flat_items, return_inverse=True, return_counts=True)
    first = torch.full_like(items, len(flat_items)).scatter_reduce(
        0, inverse, torch.arange(len(flat_items)), reduce="amin"
    )
    return items, flat_vectors[first], counts


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
    in_batch: bool = False,
    log_q: LogExpectedCount | None = None,
) -> torch.Tensor:
    """users (S, D) one per target session; item_vectors (S, L, D); negative_vectors (N, D).

    ``in_batch``: every engaged item of ``targets`` is also a negative for the other rows,
    counted once per occurrence (M in all). ``log_q``: candidate logits (at temperature) are
    lowered by log Q(item) — the positive's as well as the negatives'.
    """
    scores = (users[:, None, :] * item_vectors).sum(-1) / temperature  # (S, L)
    # A sampled "negative" that is one of the session's items is not a negative.
    accidental = _members(targets.items, negatives)  # (S, N)
    candidates = [(users @ negative_vectors.T / temperature).masked_fill(accidental, NEG_INF)]  # (S, N)
    candidate_items = [negatives]
    n_in_batch = 0
    if in_batch:
        batch_items, batch_vectors, occurrences = _in_batch(targets, item_vectors)
        # An item occurring k times stands for its k copies: + log k.
        batch_scores = users @ batch_vectors.T / temperature + occurrences.log()  # (S, U)
        candidates.append(batch_scores.masked_fill(_members(targets.items, batch_items), NEG_INF))
        candidate_items.append(batch_items)
        n_in_batch = int(occurrences.sum())
    sampled_scores = scores  # the positives' logits against the sampled negatives
    if log_q is not None:
        counts = (len(negatives), n_in_batch)
        pairs = zip(candidates, candidate_items, strict=True)
        candidates = [scores_k - log_q(items_k, *counts)[None, :] for scores_k, items_k in pairs]
        sampled_scores = scores - log_q(targets.items.clamp(min=0), *counts)
    sampled_lse = torch.cat(candidates, dim=1).logsumexp(dim=1, keepdim=True)
    actions, scene = targets.actions, targets.scene
    norm = (scene_norm, n_scenes, count_reduce)
    if kind == "engaged":
        return _softmax_term(sampled_scores, actions >= CLICK, sampled_lse, scene, *norm)

    exposed = actions >= EXPOSURE
    not_clicked = exposed & (actions < CLICK)
    clicked_not_paid = (actions >= CLICK) & (actions < PAY)
    click_lse = scores.masked_fill(~not_clicked, NEG_INF).logsumexp(dim=1, keepdim=True)
    pay_lse = scores.masked_fill(~clicked_not_paid, NEG_INF).logsumexp(dim=1, keepdim=True)
    return (
        _softmax_term(sampled_scores, exposed, sampled_lse, scene, *norm)
        + _softmax_term(scores, actions >= CLICK, click_lse, scene, *norm)
        + _softmax_term(scores, actions == PAY, pay_lse, scene, *norm)
    )
