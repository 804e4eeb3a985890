"""EG-GRPO: align the SID generator with engagement by group-relative policy optimisation with
expert (ground-truth) SIDs injected into each group (arXiv 2605.14434, §3.5 of the notes).

One step: take ``prompts_per_step`` prompts; for each, sample ``group_size`` SIDs from the
policy and *add* up to ``inject`` of the prompt's ground-truth SIDs (the enlarged-group reading
of the paper: a group has ``group_size + K`` rows and its statistics are over all of them).
Every row carries an explicit group id (the prompt's index in the step), never a position
derived from the row number, so two prompts sharing a target SID keep their own rows. Rewards
are tiered (first match from the top), advantages are normalised within each group, and the
policy takes ``inner_updates`` clipped-ratio steps on the sequence log-prob plus a k3 KL
penalty toward the frozen reference (the SFT model).

Choices the paper leaves open, stated here:
- Injected rows use the same ratio as sampled rows: their old log-prob is the policy's at
  rollout time, so ``rho = 1`` on the first inner update. No off-policy correction (importance
  weight for having come from the data, not the policy) is applied; the paper states none.
- The KL term is the k3 estimator on the sequence log-prob of every row, injected rows
  included. k3 is unbiased only for rows drawn from the policy; on injected rows it acts as a
  pull toward the reference on the ground truths, which is what a KL weight of 1.0 intends.
- Dropout is off (``eval()``) for the whole run: with dropout the "old" and "new" log-probs of
  the first inner update differ by noise and the clip fires on noise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from index.sid_layout import LEVELS
from model_export.progress import progress_bar

log = logging.getLogger(__name__)

# Reward tiers, highest first; a SID gets the first tier it matches (never a sum).
REWARD_PAID = 1.0
REWARD_CLICK = 1.0
REWARD_EXPOSED = 0.5
REWARD_VALID = 0.1
REWARD_INVALID = 0.0

Sid = tuple[int, int, int, int]
# Which SIDs exist in the published table: a set, or a vectorised test (n, 4) -> (n,) bool.
Validity = frozenset[Sid] | Callable[[np.ndarray], np.ndarray]


class Policy(Protocol):
    """What EG-GRPO needs of a generator (``model_export.sid.generator.SidGenerator`` has it).

    ``text_ids`` (B, Lt) and ``user_tokens`` (B, Lu) int64, 0-padded; ``sids`` (B, 4) int64
    level values. ``sample`` returns (B * n, 4) level values, row ``b * n + j`` from prompt ``b``.
    """

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def level_logprobs(
        self, text_ids: torch.Tensor, user_tokens: torch.Tensor, sids: torch.Tensor
    ) -> torch.Tensor: ...  # (B, 4)

    def sequence_logprob(
        self, text_ids: torch.Tensor, user_tokens: torch.Tensor, sids: torch.Tensor
    ) -> torch.Tensor: ...  # (B,)

    def sample(
        self,
        text_ids: torch.Tensor,
        user_tokens: torch.Tensor,
        n: int,
        generator: torch.Generator,
        temperature: float = 1.0,
    ) -> torch.Tensor: ...  # (B * n, 4)


@dataclass(frozen=True, eq=False)
class Prompt:
    """One training prompt and its engagement: the SIDs of the items the user paid for,
    clicked and was shown after this query."""

    text_ids: np.ndarray  # (Lt,) int64 tokenizer ids, 0 = pad
    user_tokens: np.ndarray  # (Lu,) int64 SID tokens of the user's recent items (may be empty)
    paid: frozenset[Sid] = frozenset()
    clicked: frozenset[Sid] = frozenset()
    exposed: frozenset[Sid] = frozenset()


@dataclass
class GrpoConfig:
    group_size: int = 8  # sampled SIDs per prompt (paper)
    # Ground-truth SIDs added to each group (paper evaluates 0, 2, 4: 2 best for clicks, 4 for
    # exposure). Added, not replacing samples: a group has group_size + inject rows.
    inject: int = 2
    clip: float = 0.2  # PPO clip range; the paper states none, 0.2 is TRL's default
    kl_weight: float = 1.0  # paper §4.1 (its printed objective omits the KL term)
    # The paper's 1e-6 is for fine-tuning a pretrained 0.5B LLM; our generator is small and
    # trained from scratch on little data, so 1e-6 moves it by nothing measurable in the
    # hundreds of steps we run. 1e-5 with the KL anchor keeps it near the SFT model.
    lr: float = 1e-5
    steps: int = 200  # paper 1,000 at rollout batch 512
    prompts_per_step: int = 32  # 32 x (8 + K) rows per step; paper 512 rollouts (64 prompts x 8)
    # Gradient steps on each rollout: with one, rho == 1 always and the clip never acts.
    inner_updates: int = 2
    temperature: float = 1.0  # sampling temperature of the rollouts
    adv_eps: float = 1e-6  # advantage denominator: std + eps
    max_grad_norm: float = 1.0  # TRL's default
    seed: int = 0
    progress: bool = True


def rewards(sids: np.ndarray, prompt: Prompt, valid: Validity) -> np.ndarray:
    """(n, 4) SIDs -> (n,) float64 reward of each: the first matching tier from the top (paid
    1.0, clicked 1.0, exposed 0.5, valid 0.1, invalid 0.0). Tiers are not summed, so a SID both
    clicked and exposed earns 1.0."""
    sids = np.asarray(sids, dtype=np.int64).reshape(-1, LEVELS)
    keys = [tuple(int(v) for v in row) for row in sids]
    if callable(valid):
        is_valid = np.asarray(valid(sids), dtype=bool)
    else:
        is_valid = np.array([key in valid for key in keys], dtype=bool)
    out = np.full(len(keys), REWARD_INVALID)
    for i, key in enumerate(keys):
        if key in prompt.paid:
            out[i] = REWARD_PAID
        elif key in prompt.clicked:
            out[i] = REWARD_CLICK
        elif key in prompt.exposed:
            out[i] = REWARD_EXPOSED
        elif is_valid[i]:
            out[i] = REWARD_VALID
    return out


def group_advantages(rewards: np.ndarray, groups: np.ndarray | None = None, eps: float = 1e-6) -> np.ndarray:
    """(n,) rewards -> (n,) advantages ``(r - group mean) / (group std + eps)``.

    ``groups`` (n,) int64 is each row's group id (any order; ``None``: one group). The std is
    the population std (divide by the group size, not size - 1). A group whose rewards are all
    equal gets advantage exactly 0 (no signal, and never NaN)."""
    r = np.asarray(rewards, dtype=np.float64)
    g = np.zeros(len(r), dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    _, index = np.unique(g, return_inverse=True)
    count = np.bincount(index)
    mean = np.bincount(index, weights=r) / count
    centred = r - mean[index]
    std = np.sqrt(np.bincount(index, weights=centred**2) / count)
    advantages = centred / (std[index] + eps)
    return np.where(_zero_spread(r, index)[index], 0.0, advantages)


def _zero_spread(r: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(groups,) bool: every reward in the group is the same (exact comparison)."""
    n_groups = int(index.max()) + 1 if len(index) else 0
    high = np.full(n_groups, -np.inf)
    low = np.full(n_groups, np.inf)
    np.maximum.at(high, index, r)
    np.minimum.at(low, index, r)
    return np.asarray(high == low)


def k3_kl(logp_new: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """(n,) per-row k3 estimate of KL(policy || reference): ``exp(d) - d - 1``, ``d = ref - new``.
    Non-negative, zero where the two agree."""
    d = logp_ref - logp_new
    return torch.exp(d) - d - 1


def clipped_rows(ratio: torch.Tensor, advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """(n,) bool: rows where the clipped term is the minimum (no gradient from the ratio)."""
    return ((ratio > 1 + clip) & (advantages > 0)) | ((ratio < 1 - clip) & (advantages < 0))


def grpo_loss(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    logp_ref: torch.Tensor,
    advantages: torch.Tensor,
    clip: float = 0.2,
    kl_weight: float = 1.0,
) -> torch.Tensor:
    """Scalar loss over n rows (sequence log-probs, each (n,)):
    ``mean(-min(rho A, clip(rho, 1-clip, 1+clip) A)) + kl_weight * mean(k3)`` with
    ``rho = exp(logp_new - logp_old)``. Gradients flow through ``logp_new`` only."""
    ratio = torch.exp(logp_new - logp_old.detach())
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip, 1 + clip) * advantages
    policy_loss = -torch.minimum(unclipped, clipped).mean()
    return policy_loss + kl_weight * k3_kl(logp_new, logp_ref.detach()).mean()


def expert_sids(prompt: Prompt, k: int, rng: np.random.Generator) -> np.ndarray:
    """(k', 4) ground-truth SIDs to inject, k' = min(k, distinct ground truths): drawn without
    replacement from paid and clicked first, the rest from exposed. Deterministic for the rng
    state (sets are sorted before drawing). A prompt with fewer than k ground truths injects
    what it has."""
    engaged = sorted(prompt.paid | prompt.clicked)
    shown = sorted(prompt.exposed - set(engaged))
    picked: list[Sid] = []
    for pool in (engaged, shown):
        take = min(k - len(picked), len(pool))
        if take > 0:
            picked += [pool[i] for i in sorted(rng.choice(len(pool), size=take, replace=False))]
    return np.asarray(picked, dtype=np.int64).reshape(-1, LEVELS)


@dataclass(frozen=True)
class Rollout:
    """The rows of one step: sampled and injected SIDs with their group."""

    sids: np.ndarray  # (N, 4) int64
    groups: np.ndarray  # (N,) int64 index of the row's prompt in the step's batch
    injected: np.ndarray  # (N,) bool: a ground-truth row, not sampled


def assemble_groups(
    sampled: np.ndarray, prompts: Sequence[Prompt], group_size: int, inject: int, rng: np.random.Generator
) -> Rollout:
    """Sampled rows ((P * group_size, 4), row ``b * group_size + j`` from prompt ``b``, the
    ``Policy.sample`` order) plus each prompt's injected ground truths, with explicit group ids."""
    sampled = np.asarray(sampled, dtype=np.int64).reshape(len(prompts) * group_size, LEVELS)
    sids, groups, injected = [sampled], [np.repeat(np.arange(len(prompts)), group_size)], []
    injected.append(np.zeros(len(sampled), dtype=bool))
    for b, prompt in enumerate(prompts):
        experts = expert_sids(prompt, inject, rng)
        sids.append(experts)
        groups.append(np.full(len(experts), b, dtype=np.int64))
        injected.append(np.ones(len(experts), dtype=bool))
    return Rollout(np.concatenate(sids), np.concatenate(groups), np.concatenate(injected))


def _pad(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Right-pad 1-D int64 arrays with 0 (text pad and PAD_TOKEN) to (len(rows), longest)."""
    out = np.zeros((len(rows), max((len(r) for r in rows), default=0)), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def train_grpo(
    policy: Policy, reference: Policy, prompts: Sequence[Prompt], valid: Validity, config: GrpoConfig
) -> list[dict[str, float]]:
    """Run ``config.steps`` EG-GRPO steps on ``policy`` in place; ``reference`` is frozen (no
    gradient, never stepped). Returns one log entry per step: ``reward_sampled`` and
    ``reward_all`` (mean over sampled rows / all rows), ``zero_spread`` (share of groups whose
    rewards are all equal: no learning signal), ``kl`` (mean k3), ``unique_sampled`` (distinct
    sampled SIDs per group), ``clip_fraction`` and ``loss`` (both averaged over the inner
    updates). Deterministic for ``config.seed`` on one device. Raises ``ValueError`` on an
    empty prompt list or a non-positive size."""
    if not prompts:
        raise ValueError("EG-GRPO needs at least one prompt")
    if min(config.group_size, config.prompts_per_step, config.inner_updates) < 1 or config.inject < 0:
        raise ValueError(f"group_size, prompts_per_step, inner_updates must be >= 1, inject >= 0: {config}")
    device = next(iter(policy.parameters())).device
    modules = [m for m in (policy, reference) if isinstance(m, nn.Module)]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
    order = rng.permutation(len(prompts))
    cursor = 0
    history: list[dict[str, float]] = []
    try:
        for step in progress_bar(range(config.steps), config.progress, desc="EG-GRPO"):
            picked: list[int] = []
            while len(picked) < min(config.prompts_per_step, len(prompts)):
                if cursor == len(order):  # a new pass over the prompts, in a new order
                    order, cursor = rng.permutation(len(prompts)), 0
                picked.append(int(order[cursor]))
                cursor += 1
            history.append(
                _step(
                    policy,
                    reference,
                    [prompts[i] for i in picked],
                    valid,
                    config,
                    optimizer,
                    rng,
                    generator,
                    device,
                )
            )
            history[-1]["step"] = float(step)
    finally:
        for m, mode in zip(modules, was_training, strict=True):
            m.train(mode)
    if history:
        first, last = history[0], history[-1]
        log.info(
            "EG-GRPO %d steps (K=%d): sampled reward %.3f -> %.3f, zero-spread groups %.2f -> %.2f, "
            "KL %.4f, unique SIDs per group %.1f, clip fraction %.3f",
            len(history),
            config.inject,
            first["reward_sampled"],
            last["reward_sampled"],
            first["zero_spread"],
            last["zero_spread"],
            last["kl"],
            last["unique_sampled"],
            last["clip_fraction"],
        )
    return history


def _step(
    policy: Policy,
    reference: Policy,
    batch: list[Prompt],
    valid: Validity,
    config: GrpoConfig,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, float]:
    text = torch.as_tensor(_pad([p.text_ids for p in batch]), device=device)  # (P, Lt)
    user = torch.as_tensor(_pad([p.user_tokens for p in batch]), device=device)  # (P, Lu)
    with torch.no_grad():
        sampled = policy.sample(
            text, user, config.group_size, generator=generator, temperature=config.temperature
        )
    rollout = assemble_groups(sampled.cpu().numpy(), batch, config.group_size, config.inject, rng)
    reward = np.zeros(len(rollout.sids))
    for b, prompt in enumerate(batch):
        rows = rollout.groups == b
        reward[rows] = rewards(rollout.sids[rows], prompt, valid)
    advantages = group_advantages(reward, rollout.groups, config.adv_eps)

    rows_of = torch.as_tensor(rollout.groups, device=device)
    row_text, row_user = text[rows_of], user[rows_of]  # (N, Lt), (N, Lu): each row's own prompt
    sids = torch.as_tensor(rollout.sids, device=device)  # (N, 4)
    adv = torch.as_tensor(advantages, dtype=torch.float32, device=device)
    with torch.no_grad():
        logp_old = policy.sequence_logprob(row_text, row_user, sids)  # (N,)
        logp_ref = reference.sequence_logprob(row_text, row_user, sids)  # (N,)

    kls, clips, losses = [], [], []
    for _ in range(config.inner_updates):
        logp_new = policy.sequence_logprob(row_text, row_user, sids)
        loss = grpo_loss(logp_new, logp_old, logp_ref, adv, config.clip, config.kl_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(policy.parameters()), config.max_grad_norm)
        optimizer.step()
        with torch.no_grad():
            kls.append(float(k3_kl(logp_new, logp_ref).mean()))
            clips.append(float(clipped_rows(torch.exp(logp_new - logp_old), adv, config.clip).float().mean()))
            losses.append(loss.item())

    _, index = np.unique(rollout.groups, return_inverse=True)
    sampled_rows = ~rollout.injected
    unique = [
        len(np.unique(rollout.sids[sampled_rows & (rollout.groups == b)], axis=0)) for b in range(len(batch))
    ]
    return {
        "reward_sampled": float(reward[sampled_rows].mean()),
        "reward_all": float(reward.mean()),
        "zero_spread": float(_zero_spread(reward, index).mean()),
        "kl": math.fsum(kls) / len(kls),
        "unique_sampled": float(np.mean(unique)),
        "clip_fraction": math.fsum(clips) / len(clips),
        "loss": math.fsum(losses) / len(losses),
    }
