"""The training objectives: targets per horizon, cascade terms and per-scene normalisation."""

import pytest
import torch

from index.features import Session
from index.vocab import Vocabulary
from model_export.batches import TargetSet, make_ar_batch, make_nsp_batch
from model_export.losses import scene_mean, target_loss

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
