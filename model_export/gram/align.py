"""GRAM's co-alignment: DPO over code preferences of clicked (query, product) pairs, with the
loss written here rather than taken from TRL, whose DPO has one β and no longer supports
encoder-decoder models.

A pair's policy is both sides at once: ``π(c | q, t) = (π(c | q) + π(c | t)) / 2``, the mean of
the query side's and the product side's probabilities of the code, computed in log space as
``logaddexp(log π(c|q), log π(c|t)) - log 2``. A code's reward is its log-ratio against the
frozen reference, divided by its length to the power ``length_penalty``:

    r(c) = (log π_θ(c|q,t) - log π_ref(c|q,t)) / len(c) ** length_penalty

with ``len(c)`` the code's real tokens (values + EOS). A code's log-probability is a sum over
its tokens, so without the division a short, coarse code moves its log-ratio as far as a long
one with fewer tokens to move, and the preference drifts toward coarse codes. The loss takes a
separate β for the chosen and the rejected code:

    loss = -log sigmoid(β_chosen · r(chosen) - β_rejected · r(rejected))   (mean over pairs)

When the policy is the reference, every r is 0 and the loss is log 2 ≈ 0.693; a loss that stays
there means the log-probabilities never reach the loss (masked out, zero learning rate), and one
that collapses to 0 means the margin grew without bound: ``train_dpo`` warns about both.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from index.gram_trie import CodeTable, CodeTrie
from index.gram_vocab import PAD
from index.tokenizer import TextTokenizer
from model_export.gram.coder import Coder
from model_export.gram.config import GramConfig
from model_export.gram.generator import PRODUCT_TASK, QUERY_TASK, GramGenerator, check_code_rows
from model_export.gram.targets import CodeData
from model_export.progress import progress_bar

log = logging.getLogger(__name__)

LOG2 = math.log(2.0)
ALARM_TOLERANCE = 1e-3  # a run whose loss stays this close to log 2, or falls below it, is suspect


@dataclass
class PreferencePairs:
    """One row per (query, product, chosen code, rejected code): int64 arrays, texts
    right-padded with 0, codes as ``index.gram_vocab`` token rows."""

    query_ids: np.ndarray  # (P, Lq)
    product_ids: np.ndarray  # (P, Lt)
    chosen: np.ndarray  # (P, 7)
    rejected: np.ndarray  # (P, 7)

    def __post_init__(self) -> None:
        if self.query_ids.ndim != 2 or self.product_ids.ndim != 2:
            raise ValueError(
                f"query_ids and product_ids need (P, L), got {self.query_ids.shape}, {self.product_ids.shape}"
            )
        if len({len(self.query_ids), len(self.product_ids), len(self.chosen), len(self.rejected)}) != 1:
            raise ValueError("query_ids, product_ids, chosen and rejected need the same number of rows")
        check_code_rows(self.chosen, "chosen codes")
        check_code_rows(self.rejected, "rejected codes")

    def __len__(self) -> int:
        return len(self.chosen)


@dataclass
class DpoConfig:
    beta_chosen: float = 0.2  # β on the chosen code's reward
    beta_rejected: float = 0.1  # β on the rejected code's reward
    length_penalty: float = 1.0  # rewards divided by len(code) ** this; 0 = plain summed log-ratios
    steps: int = 100
    batch_size: int = 64
    lr: float = 1e-4  # DPO moves a trained model: far below the SFT rate
    grad_clip: float = 1.0  # max global grad norm
    seed: int = 0  # batch order; the same seed and models give the same result
    progress: bool = True  # a progress bar over the steps (drawn only when stderr is a terminal)


def pair_logprob(
    model: GramGenerator, query_ids: torch.Tensor, product_ids: torch.Tensor, codes: torch.Tensor
) -> torch.Tensor:
    """(P,) ``log π(c | q, t) = log((π(c|q) + π(c|t)) / 2)`` of each code (P, 7) for its query
    (P, Lq) and product (P, Lt) texts: the mean of the two sides' sequence probabilities."""
    rows = len(codes)
    query_task = torch.full((rows,), QUERY_TASK, dtype=torch.int64, device=codes.device)
    product_task = torch.full((rows,), PRODUCT_TASK, dtype=torch.int64, device=codes.device)
    query_side = model.sequence_logprob(query_ids, query_task, codes)  # (P,)
    product_side = model.sequence_logprob(product_ids, product_task, codes)  # (P,)
    return torch.logaddexp(query_side, product_side) - LOG2


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    len_chosen: torch.Tensor,
    len_rejected: torch.Tensor,
    config: DpoConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The mean DPO loss over P pairs (all arguments (P,): log-probabilities of whole codes and
    the codes' real token counts) and its stats: ``loss``, ``chosen_reward`` and
    ``rejected_reward`` (means of β·r), ``margin`` (their difference, the sigmoid's argument)
    and ``accuracy`` (pairs whose margin is positive)."""
    reward_chosen = (policy_chosen - ref_chosen) / len_chosen.float() ** config.length_penalty  # (P,)
    reward_rejected = (policy_rejected - ref_rejected) / len_rejected.float() ** config.length_penalty
    chosen = config.beta_chosen * reward_chosen
    rejected = config.beta_rejected * reward_rejected
    margin = chosen - rejected  # (P,)
    loss = -F.logsigmoid(margin).mean()
    stats = {
        "loss": loss.item(),
        "chosen_reward": chosen.mean().item(),
        "rejected_reward": rejected.mean().item(),
        "margin": margin.mean().item(),
        "accuracy": (margin > 0).float().mean().item(),
    }
    return loss, stats


def train_dpo(
    model: GramGenerator, reference: GramGenerator, pairs: PreferencePairs, config: DpoConfig
) -> list[dict[str, float]]:
    """``config.steps`` Adam steps of ``dpo_loss`` on batches of ``pairs``, updating ``model``
    in place against ``reference`` (a frozen copy; its log-probabilities are computed once, in
    eval mode). The policy also runs in eval mode: with dropout on, its log-probabilities would
    differ from the reference's at step 0 and the rewards would start from noise instead of 0.
    Returns one stats dict per step (``dpo_loss``'s, plus ``step``); logs a warning when the
    loss alarm fires (``loss_alarm``). Raises ``ValueError`` for no pairs or a ``reference``
    that is ``model`` itself. Leaves the model in eval mode."""
    if len(pairs) == 0:
        raise ValueError("no preference pairs")
    if reference is model:
        raise ValueError("the DPO reference must be a frozen copy, not the policy itself")
    query, product, chosen, rejected = (
        torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
        for a in (pairs.query_ids, pairs.product_ids, pairs.chosen, pairs.rejected)
    )
    len_chosen, len_rejected = (chosen != PAD).sum(-1), (rejected != PAD).sum(-1)  # (P,)
    ref_chosen, ref_rejected = _reference_logprobs(
        reference, query, product, chosen, rejected, config.batch_size
    )
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.eval()
    order = _order(len(pairs), config.batch_size, config.steps, generator)
    history: list[dict[str, float]] = []
    for step, batch in enumerate(progress_bar(order, config.progress, desc="gram dpo", leave=False)):
        policy_chosen = pair_logprob(model, query[batch], product[batch], chosen[batch])
        policy_rejected = pair_logprob(model, query[batch], product[batch], rejected[batch])
        loss, stats = dpo_loss(
            policy_chosen,
            policy_rejected,
            ref_chosen[batch],
            ref_rejected[batch],
            len_chosen[batch],
            len_rejected[batch],
            config,
        )
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        history.append({"step": float(step), **stats})
    if history:
        first, last = history[0], history[-1]
        log.info(
            "gram dpo: loss %.4f → %.4f, margin %.4f → %.4f, accuracy %.3f → %.3f over %d steps",
            first["loss"],
            last["loss"],
            first["margin"],
            last["margin"],
            first["accuracy"],
            last["accuracy"],
            len(history),
        )
    alarm = loss_alarm([h["loss"] for h in history])
    if alarm:
        log.warning("gram dpo: %s", alarm)
    return history


def loss_alarm(losses: Sequence[float]) -> str | None:
    """Why a run's DPO losses look broken, or None: every step within ``ALARM_TOLERANCE`` of
    log 2 (the policy never moved from the reference: log-probabilities masked out, no
    gradient, a zero learning rate), or the last quarter's mean below ``ALARM_TOLERANCE`` (the
    margin grew without bound: the pairs are trivial or β is far too large)."""
    if not losses:
        return None
    if max(abs(loss - LOG2) for loss in losses) < ALARM_TOLERANCE:
        return f"loss stayed at log 2 = {LOG2:.3f} for all {len(losses)} steps: the policy does not move"
    tail = losses[-max(1, len(losses) // 4) :]
    if sum(tail) / len(tail) < ALARM_TOLERANCE:
        return f"loss collapsed to {sum(tail) / len(tail):.2e}: the preference margin grows without bound"
    return None


@torch.no_grad()
def _reference_logprobs(
    reference: GramGenerator,
    query: torch.Tensor,
    product: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    reference.eval()
    out_chosen, out_rejected = [], []
    for start in range(0, len(chosen), chunk):
        rows = slice(start, start + chunk)
        out_chosen.append(pair_logprob(reference, query[rows], product[rows], chosen[rows]))
        out_rejected.append(pair_logprob(reference, query[rows], product[rows], rejected[rows]))
    return torch.cat(out_chosen), torch.cat(out_rejected)


def _order(rows: int, batch_size: int, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``steps`` batches of ``min(batch_size, rows)`` pair indices, permutations one after another."""
    size = min(batch_size, rows)
    passes = math.ceil(steps * size / rows)
    order = torch.cat([torch.randperm(rows, generator=generator) for _ in range(passes)])
    return list(order[: steps * size].split(size))


def preference_pairs(
    model: GramGenerator,
    data: CodeData,
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    universe: CodeTable,
    config: GramConfig,
) -> PreferencePairs:
    """For each clicked (query, product): chosen = codes both sides generate (top ``beam``),
    rejected = codes only one side does; up to ``dpo_pairs_per_click`` (chosen, rejected) pairs."""
    coder = Coder(model, CodeTrie.build(universe))
    queries = sorted({q for q, _ in data.clicks})
    labels = sorted({t for _, t in data.clicks})
    q_ids = tokenizer.ids(queries, config.max_query_tokens)
    t_ids = tokenizer.ids([texts[t] for t in labels], config.max_item_tokens)
    q_rows, _, _ = coder.codes(
        q_ids, QUERY_TASK, config.beam, config.max_codes, config.progress, "gram dpo queries"
    )
    t_rows, _, _ = coder.codes(
        t_ids, PRODUCT_TASK, config.beam, config.max_codes, config.progress, "gram dpo products"
    )
    q_at = {q: n for n, q in enumerate(queries)}
    t_at = {t: n for n, t in enumerate(labels)}
    rng = np.random.default_rng(config.seed)
    rows_q, rows_t, chosen, rejected = [], [], [], []
    for query, label in data.clicks:
        side_q = {int(r) for r in q_rows[q_at[query]] if r >= 0}
        side_t = {int(r) for r in t_rows[t_at[label]] if r >= 0}
        agreed = sorted(side_q & side_t)
        other = sorted(side_q ^ side_t)
        if not agreed or not other:
            continue
        for _ in range(config.dpo_pairs_per_click):
            rows_q.append(q_at[query])
            rows_t.append(t_at[label])
            chosen.append(agreed[int(rng.integers(len(agreed)))])
            rejected.append(other[int(rng.integers(len(other)))])
    return PreferencePairs(
        query_ids=q_ids[np.asarray(rows_q, np.int64)].reshape(-1, q_ids.shape[1]),
        product_ids=t_ids[np.asarray(rows_t, np.int64)].reshape(-1, t_ids.shape[1]),
        chosen=universe.codes[np.asarray(chosen, np.int64)].reshape(-1, 7),
        rejected=universe.codes[np.asarray(rejected, np.int64)].reshape(-1, 7),
    )
