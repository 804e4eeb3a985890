"""The training objectives: targets per horizon, cascade terms, per-scene normalisation and the
sampling correction."""

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from index.features import Session
from index.vocab import Vocabulary
from model_export.batches import TargetSet, make_ar_batch, make_nsp_batch
from model_export.losses import LogExpectedCount, LossKind, scene_mean, target_loss
from model_export.negatives import NegativeSampler

T0 = 1767225600
VOCAB = Vocabulary.build([f"i{i}" for i in range(10)], ["c"] * 10, list(range(10)), ["a", "b"])


def sessions() -> list[Session]:
    return [
        Session("r0", T0, "a", (("i0", 2), ("i1", 1))),
        Session("r1", T0 + 60, "b", (("i2", 4), ("i3", 1))),
        Session("r2", T0 + 120, "a", (("i4", 1),)),
        Session("r3", T0 + 180, "a", (("i5", 3),)),
    ]


def test_nsp_batch_targets_each_horizon_with_actions() -> None:
    batch = make_nsp_batch([sessions()], [2], VOCAB, max_sessions=20, max_items=12, horizons=2)
    # Queries: context of r1 (p=1) and the query token for r2; r0 has no history.
    assert len(batch.query_rows) == 2
    rows = sorted(
        zip(
            batch.targets.query.tolist(),
            batch.targets.horizon.tolist(),
            batch.targets.items[:, 0].tolist(),
            strict=True,
        )
    )
    assert rows == [(0, 0, 2), (0, 1, 4), (1, 0, 4), (1, 1, 5)]
    first = batch.targets.items[0].tolist()
    assert batch.targets.actions[0, : first.index(-1) if -1 in first else None].tolist() == [4, 1]


def test_ar_batch_predicts_the_next_engaged_item() -> None:
    batch = make_ar_batch([sessions()], [3], VOCAB, max_len=50)
    # Engaged items in order: i0 (click), i2 (pay), i5 (cart): i0 → i2, i2 → i5.
    assert batch.targets.items[:, 0].tolist() == [2, 5]
    assert batch.tokens.shape[1] == 2


def test_scene_mean_gives_each_scene_equal_weight() -> None:
    losses = torch.tensor([1.0, 1.0, 1.0, 4.0])
    scenes = torch.tensor([0, 0, 0, 1])
    assert scene_mean(losses, scenes, normalise=False).item() == 1.75
    assert scene_mean(losses, scenes, normalise=True).item() == 5.0  # mean 1 + mean 4


def _targets(actions: list[int]) -> TargetSet:
    return TargetSet(
        query=torch.tensor([0]),
        horizon=torch.tensor([0]),
        items=torch.arange(len(actions))[None],
        actions=torch.tensor([actions]),
        scene=torch.tensor([1]),
    )


def test_cascade_prefers_clicked_over_exposed_and_paid_over_clicked() -> None:
    user = torch.tensor([[1.0, 0.0]])
    negatives = torch.tensor([5, 6])
    negative_vecs = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    targets = _targets([1, 2, 4])  # exposed, clicked, paid

    def loss_with(vectors: list[list[float]]) -> float:
        items = torch.tensor(vectors)[None]
        return target_loss(user, items, negative_vecs, negatives, targets, 0.5, "cascade", True).item()

    ordered = loss_with([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]])  # pay > click > exposure
    inverted = loss_with([[1.0, 0.0], [0.5, 0.0], [0.0, 0.0]])
    assert ordered < inverted
    engaged = target_loss(
        user,
        torch.tensor([[[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]]]),
        negative_vecs,
        negatives,
        targets,
        0.5,
        "engaged",
        True,
    )
    assert engaged.item() < ordered  # the engaged loss has one term, the cascade three


@pytest.mark.parametrize("normalise", [False, True])
def test_shards_with_reduced_counts_add_up_to_the_whole_batch(normalise: bool) -> None:
    """What data-parallel training relies on: each process's shard mean, with the batch's
    denominators, sums to the single-process mean."""
    losses = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0])
    scenes = torch.tensor([1, 1, 2, 1, 2])
    shards = [slice(0, None, 2), slice(1, None, 2)]

    def counts(shard: slice) -> torch.Tensor:
        groups = scenes[shard] if normalise else torch.zeros_like(scenes[shard])
        return torch.zeros(3 if normalise else 1).index_add(0, groups, torch.ones(len(groups)))

    total_counts = counts(shards[0]) + counts(shards[1])
    parts = [
        scene_mean(losses[s], scenes[s], normalise, n_scenes=3, count_reduce=lambda _: total_counts)
        for s in shards
    ]
    whole = scene_mean(losses, scenes, normalise)
    assert torch.isclose(parts[0] + parts[1], whole)
    assert not torch.isclose(scene_mean(losses[shards[0]], scenes[shards[0]], normalise) * 2, whole)


def _sampled_world() -> tuple[
    torch.Tensor, torch.Tensor, TargetSet, torch.Tensor, torch.Tensor, NegativeSampler
]:
    """Three rows over a 12-item catalog: item 3 is in rows 0 and 1 (never their negative),
    item 8 in rows 1 and 2 (twice a negative of row 0); sampled negative 5 hits row 0's
    session, 7 is drawn twice; popularity counts make Q differ per item."""
    torch.manual_seed(0)
    # Unit vectors as the model's; one per item: in-batch negatives reuse target vectors.
    table = F.normalize(torch.randn(12, 4), dim=1)
    users = F.normalize(torch.randn(3, 4), dim=1)
    items = torch.tensor([[3, 5, 1, -1], [3, 8, 9, 2], [8, 4, -1, -1]])
    targets = TargetSet(
        query=torch.tensor([0, 1, 2]),
        horizon=torch.tensor([0, 0, 0]),
        items=items,
        actions=torch.tensor([[2, 4, 1, 0], [3, 2, 2, 1], [2, 3, 0, 0]]),  # 1 and 2 only exposed
        scene=torch.tensor([1, 2, 1]),
    )
    negatives = torch.tensor([5, 7, 7, 0, 11])
    sampler = NegativeSampler.fit("popularity", np.array([9, 0, 4, 30, 1, 2, 0, 7, 5, 3, 0, 1]))
    return users, table, targets, negatives, table[negatives], sampler


def _reference(
    users: torch.Tensor,
    table: torch.Tensor,
    targets: TargetSet,
    negatives: torch.Tensor,
    log_q: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Cross-entropy of each engaged item against the sampled negatives and every other row's
    engaged occurrences (not deduplicated), minus the rows' own items, logits at temperature
    minus log Q; the mean over positives."""
    temperature = 0.5
    occurrences = [
        int(i) for i, a in zip(targets.items.flatten(), targets.actions.flatten(), strict=True) if a >= 2
    ]
    losses = []
    for row, user in enumerate(users):
        own = set(targets.items[row].tolist())
        others = [int(i) for i in negatives if int(i) not in own] + [i for i in occurrences if i not in own]
        for item, action in zip(targets.items[row].tolist(), targets.actions[row].tolist(), strict=True):
            if action < 2:
                continue
            candidates = torch.tensor([item, *others])
            logits = table[candidates] @ user / temperature - log_q(candidates)
            losses.append(F.cross_entropy(logits[None], torch.tensor([0])))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("correct", [True, False])
def test_log_q_corrected_loss_matches_a_direct_softmax(correct: bool) -> None:
    users, table, targets, negatives, negative_vecs, sampler = _sampled_world()
    m = int((targets.actions >= 2).sum())  # in-batch occurrences: M of Q = N·q + M·p

    def log_q(items: torch.Tensor) -> torch.Tensor:
        if not correct:
            return torch.zeros(items.shape)
        expected = len(negatives) * sampler.draw_probability[items] + m * sampler.target_share[items]
        return expected.log().float()

    got = target_loss(
        users,
        table[targets.items.clamp(min=0)],
        negative_vecs,
        negatives,
        targets,
        0.5,
        "engaged",
        False,
        in_batch=True,
        log_q=sampler.log_expected_count if correct else None,
    )
    torch.testing.assert_close(got, _reference(users, table, targets, negatives, log_q))


@pytest.mark.parametrize("kind", ["engaged", "cascade"])
def test_correcting_uniform_draws_leaves_the_loss_unchanged(kind: LossKind) -> None:
    users, table, targets, negatives, negative_vecs, _ = _sampled_world()
    uniform = NegativeSampler.uniform(12)
    log_q = uniform.log_expected_count(negatives, len(negatives), 0)
    np.testing.assert_allclose(log_q.numpy(), np.log(5 / 12), rtol=1e-6)  # a constant, not zero

    def loss(log_q: LogExpectedCount | None) -> torch.Tensor:
        item_vecs = table[targets.items.clamp(min=0)]
        return target_loss(users, item_vecs, negative_vecs, negatives, targets, 0.05, kind, True, log_q=log_q)

    torch.testing.assert_close(loss(uniform.log_expected_count), loss(None))  # float32 rounding only
    popularity = NegativeSampler.fit("popularity", np.arange(12))
    assert abs(loss(popularity.log_expected_count).item() - loss(None).item()) > 1e-2


def test_in_batch_negatives_skip_the_rows_own_items() -> None:
    """Row 0 holds a and b, row 1 b and c (all clicked); no sampled negatives. Row 0's only
    in-batch negative is c, row 1's only a."""
    a, b, c = 0, 1, 2
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    users = torch.tensor([[0.3, -0.5], [-0.2, 0.9]])
    targets = TargetSet(
        query=torch.tensor([0, 1]),
        horizon=torch.tensor([0, 0]),
        items=torch.tensor([[a, b], [b, c]]),
        actions=torch.tensor([[2, 2], [2, 2]]),
        scene=torch.tensor([1, 1]),
    )
    got = target_loss(
        users,
        table[targets.items],
        torch.zeros(0, 2),
        torch.zeros(0, dtype=torch.long),
        targets,
        1.0,
        "engaged",
        False,
        in_batch=True,
    )
    s = users @ table.T
    expected = torch.stack(
        [
            F.softplus(s[0, c] - s[0, a]),
            F.softplus(s[0, c] - s[0, b]),
            F.softplus(s[1, a] - s[1, b]),
            F.softplus(s[1, a] - s[1, c]),
        ]
    ).mean()
    torch.testing.assert_close(got, expected)
