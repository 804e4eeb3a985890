"""EG-GRPO: reward tiers, group-normalised advantages, the clipped loss with its k3 KL term
(against numbers worked out by hand), expert injection with explicit group ids, and a training
run on a toy policy."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from model_export.sid.grpo import (
    GrpoConfig,
    Policy,
    Prompt,
    assemble_groups,
    expert_sids,
    group_advantages,
    grpo_loss,
    k3_kl,
    rewards,
    train_grpo,
)

SIZES = (4, 4, 4, 2)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The toy model's ops are tiny: thread hand-offs cost more than the maths, badly so on a
    busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ToyPolicy(nn.Module):
    """Each level's logits from an embedding of the prompt's first text token (levels
    independent given the prompt): small enough to train in a second, rich enough that each
    prompt can learn its own SID."""

    def __init__(self, n_prompts: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(n_prompts + 1, 16)
        self.heads = nn.ModuleList([nn.Linear(16, size) for size in SIZES])

    def _logits(self, text_ids: torch.Tensor) -> list[torch.Tensor]:
        h = self.embed(text_ids[:, 0])  # (B, 16)
        return [head(h) for head in self.heads]  # 4 x (B, K_l)

    def level_logprobs(
        self, text_ids: torch.Tensor, user_tokens: torch.Tensor, sids: torch.Tensor
    ) -> torch.Tensor:
        logits = self._logits(text_ids)
        per_level = [
            torch.log_softmax(z, -1).gather(1, sids[:, level : level + 1]) for level, z in enumerate(logits)
        ]
        return torch.cat(per_level, 1)  # (B, 4)

    def sequence_logprob(
        self, text_ids: torch.Tensor, user_tokens: torch.Tensor, sids: torch.Tensor
    ) -> torch.Tensor:
        return self.level_logprobs(text_ids, user_tokens, sids).sum(-1)

    def sample(
        self,
        text_ids: torch.Tensor,
        user_tokens: torch.Tensor,
        n: int,
        generator: torch.Generator,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        probs = [torch.softmax(z / temperature, -1) for z in self._logits(text_ids)]
        draws = [torch.multinomial(p, n, replacement=True, generator=generator) for p in probs]
        return torch.stack([d.reshape(-1) for d in draws], 1)  # (B * n, 4), row b * n + j


def toy_prompt(i: int, **engagement: frozenset[tuple[int, int, int, int]]) -> Prompt:
    return Prompt(np.array([i + 1], dtype=np.int64), np.zeros(0, dtype=np.int64), **engagement)


def test_toy_policy_satisfies_the_protocol() -> None:
    policy: Policy = ToyPolicy(2)
    out = policy.sample(torch.tensor([[1], [2]]), torch.zeros(2, 0, dtype=torch.int64), 3, torch.Generator())
    assert out.shape == (6, 4)


def test_hand_computed_group() -> None:
    # rewards [1, 0.5, 0.1, 0]: mean 1.6 / 4 = 0.4; deviations 0.6, 0.1, -0.3, -0.4; squares
    # 0.36, 0.01, 0.09, 0.16 sum to 0.62; population std sqrt(0.62 / 4) = sqrt(0.155).
    eps = 1e-6
    s = math.sqrt(0.155) + eps
    expected = np.array([0.6, 0.1, -0.3, -0.4]) / s
    advantages = group_advantages(np.array([1.0, 0.5, 0.1, 0.0]), eps=eps)
    np.testing.assert_allclose(advantages, expected, rtol=1e-12)
    sample_std = math.sqrt(0.62 / 3)  # what an n - 1 std would give instead
    assert not np.allclose(advantages, np.array([0.6, 0.1, -0.3, -0.4]) / sample_std)

    # ratios 1.5, 0.5, 1.1, 0.7 with clip 0.2:
    #   row 0 A>0, rho 1.5 -> min(1.5 A, 1.2 A) = 1.2 A   (clipped)
    #   row 1 A>0, rho 0.5 -> min(0.5 A, 0.8 A) = 0.5 A
    #   row 2 A<0, rho 1.1 -> 1.1 A (inside the range)
    #   row 3 A<0, rho 0.7 -> min(0.7 A, 0.8 A) = 0.8 A   (clipped)
    # objective sum (1.2 * 0.6 + 0.5 * 0.1 - 1.1 * 0.3 - 0.8 * 0.4) / s = 0.12 / s; loss = -0.12 / (4 s)
    # k3 with d = ref - new = [0, ln 2, -ln 2, 0]: [0, 2 - ln 2 - 1, 0.5 + ln 2 - 1, 0], mean 0.5 / 4
    adv = torch.tensor(advantages, dtype=torch.float64)
    logp_old = torch.log(torch.full((4,), 0.2, dtype=torch.float64))
    logp_new = torch.log(torch.tensor([0.3, 0.1, 0.22, 0.14], dtype=torch.float64)).requires_grad_()
    d = torch.tensor([0.0, math.log(2), -math.log(2), 0.0], dtype=torch.float64)
    logp_ref = logp_new.detach() + d
    k3 = k3_kl(logp_new, logp_ref).detach().numpy()
    np.testing.assert_allclose(k3, [0, 1 - math.log(2), math.log(2) - 0.5, 0])
    loss = grpo_loss(logp_new, logp_old, logp_ref, adv, clip=0.2, kl_weight=0.5)
    assert loss.item() == pytest.approx(-0.12 / (4 * s) + 0.5 * 0.125, rel=1e-9)

    # clipped rows give no gradient (and their KL term is flat at d = 0); row 1 gets
    # d/dlogp [-rho A / 4] = -rho A / 4 plus 0.5 * (1 - e^d) / 4 from the KL.
    (grad_tensor,) = torch.autograd.grad(loss, logp_new)
    grad = grad_tensor.numpy()
    assert grad[0] == pytest.approx(0.0, abs=1e-12) and grad[3] == pytest.approx(0.0, abs=1e-12)
    assert grad[1] == pytest.approx(-0.5 * expected[1] / 4 + 0.5 * (1 - 2) / 4, rel=1e-9)


def test_advantages_per_group_id_and_zero_spread() -> None:
    # two groups interleaved by id: group 1 has all-equal rewards
    r = np.array([1.0, 0.1, 0.5, 0.1, 0.1, 0.0])
    groups = np.array([0, 1, 0, 1, 1, 0])
    out = group_advantages(r, groups)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[groups == 1], 0.0)
    np.testing.assert_allclose(out[groups == 0], group_advantages(np.array([1.0, 0.5, 0.0])))
    assert out[0] > 0 > out[5]
    # a lone zero-spread group of values that are not exact binary fractions
    np.testing.assert_array_equal(group_advantages(np.full(10, 0.1)), 0.0)


def test_reward_tiers_first_match_not_summed() -> None:
    a, b, c, d, e = (0, 0, 0, 0), (1, 0, 0, 0), (2, 0, 0, 0), (3, 0, 0, 0), (3, 3, 3, 1)
    prompt = toy_prompt(0, paid=frozenset({a}), clicked=frozenset({a, b}), exposed=frozenset({a, b, c}))
    sids = np.array([a, b, c, d, e])
    valid = frozenset({a, b, c, d})
    np.testing.assert_array_equal(rewards(sids, prompt, valid), [1.0, 1.0, 0.5, 0.1, 0.0])
    # an exposed SID missing from the valid set still earns the exposed tier; callable validity
    only_d = lambda s: (s == np.array(d)).all(1)  # noqa: E731
    np.testing.assert_array_equal(rewards(sids, prompt, only_d), [1.0, 1.0, 0.5, 0.1, 0.0])
    np.testing.assert_array_equal(rewards(sids, prompt, frozenset()), [1.0, 1.0, 0.5, 0.0, 0.0])


def test_injection_adds_k_rows_per_group_with_their_own_ids() -> None:
    shared, other, shown = (1, 1, 1, 0), (2, 2, 2, 1), (3, 3, 3, 0)
    prompts = [
        toy_prompt(0, clicked=frozenset({shared, other}), exposed=frozenset({shown})),
        toy_prompt(1, paid=frozenset({shared}), exposed=frozenset({shown, other})),  # same target SID
        toy_prompt(2, clicked=frozenset({shared})),  # one ground truth only: K=2 injects 1
    ]
    g = 3
    sampled = np.arange(len(prompts) * g * 4).reshape(-1, 4) % 2
    rollout = assemble_groups(sampled, prompts, g, inject=2, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(rollout.sids[: len(sampled)], sampled)
    np.testing.assert_array_equal(rollout.groups[: len(sampled)], np.repeat([0, 1, 2], g))
    assert not rollout.injected[: len(sampled)].any()
    for b, prompt in enumerate(prompts):
        rows = rollout.injected & (rollout.groups == b)
        injected = {tuple(int(v) for v in row) for row in rollout.sids[rows]}
        assert rows.sum() == (2 if b < 2 else 1)
        assert len(injected) == rows.sum()  # without replacement
        assert injected <= prompt.paid | prompt.clicked | prompt.exposed
    # paid and clicked first: prompt 0 injects both clicked SIDs, never the exposed one
    injected_of = [
        {tuple(r) for r in rollout.sids[rollout.injected & (rollout.groups == b)].tolist()} for b in range(3)
    ]
    assert injected_of[0] == {shared, other}
    # prompt 1 has one engaged SID: that one and one exposed SID
    assert shared in injected_of[1]
    # deterministic for the seed
    first = expert_sids(prompts[1], 3, np.random.default_rng(5))
    np.testing.assert_array_equal(first, expert_sids(prompts[1], 3, np.random.default_rng(5)))
    assert len(expert_sids(prompts[1], 4, np.random.default_rng(5))) == 3  # only 3 distinct truths
    assert assemble_groups(sampled, prompts, g, 0, np.random.default_rng(0)).sids.shape == (9, 4)


def toy_problem(n: int = 8) -> tuple[list[Prompt], frozenset[tuple[int, int, int, int]]]:
    rng = np.random.default_rng(1)
    every = [(a, b, c, d) for a in range(4) for b in range(4) for c in range(4) for d in range(2)]
    valid = frozenset(every[i] for i in rng.choice(len(every), 64, replace=False))
    prompts = []
    for i in range(n):
        picks = [every[j] for j in rng.choice(len(every), 3, replace=False)]
        prompts.append(toy_prompt(i, clicked=frozenset(picks[:1]), exposed=frozenset(picks[1:])))
    return prompts, valid


def test_training_with_injection_raises_sampled_reward() -> None:
    prompts, valid = toy_problem()
    policy = ToyPolicy(len(prompts))
    reference = copy.deepcopy(policy)
    config = GrpoConfig(inject=2, lr=0.03, steps=40, prompts_per_step=8, kl_weight=0.01, progress=False)
    history = train_grpo(policy, reference, prompts, valid, config)
    start = np.mean([h["reward_sampled"] for h in history[:5]])
    end = np.mean([h["reward_sampled"] for h in history[-5:]])
    assert end > start + 0.2, (start, end)
    # without injection the sparse reward barely moves on this budget (the paper's motivation)
    plain = train_grpo(copy.deepcopy(reference), reference, prompts, valid, replace(config, inject=0))
    assert np.mean([h["reward_sampled"] for h in plain[-5:]]) < end
    assert history[-1]["kl"] > 0  # it moved away from the reference
    assert any(h["clip_fraction"] > 0 for h in history)  # second inner updates hit the clip
    assert all(h["zero_spread"] < 1 for h in history[:5])
    # deterministic for the seed
    short = replace(config, steps=5)
    again = train_grpo(copy.deepcopy(reference), reference, prompts, valid, short)
    assert [h["reward_sampled"] for h in again] == [h["reward_sampled"] for h in history[:5]]
    # the reference was never stepped
    for p, q in zip(reference.parameters(), ToyPolicy(len(prompts)).parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_kl_is_zero_when_policy_is_reference() -> None:
    prompts, valid = toy_problem()
    policy = ToyPolicy(len(prompts))
    config = GrpoConfig(steps=1, inner_updates=1, prompts_per_step=8, lr=0.05, progress=False)
    history = train_grpo(policy, copy.deepcopy(policy), prompts, valid, config)
    assert history[0]["kl"] == 0.0
    assert history[0]["clip_fraction"] == 0.0  # rho == 1 on the first inner update
    # after a step the policy differs and the KL is positive
    later = train_grpo(policy, ToyPolicy(len(prompts)), prompts, valid, config)
    assert later[0]["kl"] > 0


def test_zero_spread_groups_are_counted() -> None:
    # every SID is "exposed": all sampled rows earn 0.5, so every group has zero spread
    every = frozenset((a, b, c, d) for a in range(4) for b in range(4) for c in range(4) for d in range(2))
    prompts = [toy_prompt(i, exposed=every) for i in range(4)]
    policy = ToyPolicy(4)
    config = GrpoConfig(inject=0, steps=2, prompts_per_step=4, progress=False)
    history = train_grpo(policy, copy.deepcopy(policy), prompts, every, config)
    assert [h["zero_spread"] for h in history] == [1.0, 1.0]
    assert all(math.isfinite(h["loss"]) for h in history)
    assert history[0]["unique_sampled"] > 1
