"""The switchable training options: negative samplers, target filtering, the lr schedule,
early stopping, longer histories, and a tiny run with all of them on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from index.features import Session, build_tokens
from index.vocab import Vocabulary
from model_export import train as train_module
from model_export.batches import TargetSet, make_ar_batch, make_nsp_batch
from model_export.data import Dataset, EvalCase, load_dataset
from model_export.model import Encoder
from model_export.negatives import NegativeSampler
from model_export.synth import SynthConfig, generate
from model_export.train import CHECKPOINT, METRICS, TrainConfig, lr_factor, model_ranker_for, train

T0 = 1767225600
VOCAB = Vocabulary.build([f"i{i}" for i in range(10)], ["c"] * 10, list(range(10)), ["a", "b"])
TINY = TrainConfig(epochs=1, baselines=False, channels=False, threads=1, model={"dim": 16, "n_layers": 1})


def session(n: int, *items: tuple[int, int]) -> Session:
    return Session(f"r{n}", T0 + 600 * n, "a", tuple((f"i{item}", action) for item, action in items))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("world")
    generate(SynthConfig(n_users=60, n_items=200, n_categories=10, n_days=6, seed=5), out, progress=False)
    return load_dataset(out / "events.csv", out / "catalog.csv")


def test_popularity_sampler_draws_head_items_more_often() -> None:
    counts = np.array([300, 30, 3] + [0] * 47)
    sampler = NegativeSampler.fit("popularity", counts)
    weights = (counts + 1.0) ** 0.75
    np.testing.assert_allclose(sampler.draw_probability.numpy(), weights / weights.sum())
    drawn = np.bincount(sampler.draw(np.random.default_rng(0), 40_000).numpy(), minlength=50) / 40_000
    np.testing.assert_allclose(drawn, weights / weights.sum(), atol=0.01)
    assert drawn[0] > drawn[1] > drawn[2] > 2 * drawn[3:].mean()
    assert sampler.target_share[0].item() == pytest.approx(300 / 333)


def test_uniform_sampler_draws_what_training_drew_before() -> None:
    got = NegativeSampler.uniform(50).draw(np.random.default_rng(3), 64)
    assert got.tolist() == np.random.default_rng(3).integers(0, 50, 64).tolist()


def _rows(targets: TargetSet) -> list[tuple[int, int, list[int]]]:
    """(query, horizon, items) of every target row, sorted."""
    rows = zip(targets.query.tolist(), targets.horizon.tolist(), targets.items.tolist(), strict=True)
    return sorted((q, h, [i for i in items if i >= 0]) for q, h, items in rows)


def test_drop_seen_targets_removes_items_of_earlier_sessions() -> None:
    history = [
        session(0, (0, 1), (1, 2)),
        session(1, (1, 2), (2, 2)),  # 1 seen in r0
        session(2, (0, 4), (3, 2)),  # 0 seen in r0
        session(3, (2, 3), (1, 1)),  # both seen: the row goes
        session(4, (2, 2), (4, 2)),  # 2 seen in r1
    ]
    kept = make_nsp_batch([history], [4], VOCAB, 20, 12, horizons=2)
    dropped = make_nsp_batch([history], [4], VOCAB, 20, 12, horizons=2, drop_seen=True)
    # Queries 0..3 stand for r1..r4; horizon 1 is the session after.
    assert _rows(kept.targets) == [
        (0, 0, [1, 2]),
        (0, 1, [0, 3]),
        (1, 0, [0, 3]),
        (1, 1, [2, 1]),
        (2, 0, [2, 1]),
        (2, 1, [2, 4]),
        (3, 0, [2, 4]),
    ]
    assert _rows(dropped.targets) == [(0, 0, [2]), (0, 1, [3]), (1, 0, [3]), (2, 1, [4]), (3, 0, [4])]


def test_drop_seen_targets_in_the_autoregressive_batch() -> None:
    history = [session(0, (5, 2)), session(1, (6, 2), (5, 3)), session(2, (7, 2)), session(3, (6, 4))]
    # Engaged in order: 5, 6, 5, 7, 6; the second 5 and the last 6 were seen in earlier sessions.
    assert make_ar_batch([history], [3], VOCAB, 50).targets.items[:, 0].tolist() == [6, 5, 7, 6]
    assert make_ar_batch([history], [3], VOCAB, 50, drop_seen=True).targets.items[:, 0].tolist() == [6, 7]


def test_lr_warms_up_then_decays_to_a_tenth_on_a_cosine() -> None:
    assert [lr_factor(s, 4, "none", 20) for s in (0, 1, 3, 4, 19)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert [lr_factor(s, 0, "none", 20) for s in (0, 19)] == [1.0, 1.0]
    cosine = [lr_factor(s, 4, "cosine", 14) for s in (3, 4, 9, 14, 30)]
    assert cosine == pytest.approx([1.0, 1.0, 0.55, 0.1, 0.1])
    # The same values through LambdaLR as train() uses it: one scheduler step per optimizer step.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, 4, "cosine", 14))
    seen = []
    for _ in range(15):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert (
        seen[0] == pytest.approx(5e-4)
        and seen[9] == pytest.approx(1.1e-3)
        and seen[14] == pytest.approx(2e-4)
    )


def test_training_stops_after_patience_epochs_without_improvement(
    world: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores: Iterator[float] = iter([0.2, 0.5, 0.4, 0.45, 0.9, 0.9])  # best at epoch 2
    calls: list[float] = []

    def scripted(*args: object, **kwargs: object) -> dict[str, float]:
        calls.append(next(scores, 0.0))
        return {"hr@100": calls[-1]}

    monkeypatch.setattr(train_module, "evaluate_cases", scripted)
    summary = train(world, replace(TINY, epochs=6, patience=2), tmp_path, progress=False)
    assert summary["train"]["epochs"] == 4  # epochs 3 and 4 did not beat epoch 2
    assert summary["train"]["best_epoch"] == 2
    assert json.loads((tmp_path / METRICS).read_text())["train"]["epochs"] == 4


def test_without_patience_every_epoch_runs(
    world: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_module, "evaluate_cases", lambda *a, **k: {"hr@100": 0.5})
    summary = train(world, replace(TINY, epochs=3), tmp_path, progress=False)
    assert summary["train"]["epochs"] == 3 and summary["train"]["best_epoch"] == 1


def test_a_run_with_every_option_on_trains_and_writes_the_run(world: Dataset, tmp_path: Path) -> None:
    config = replace(
        TINY,
        epochs=2,
        negative_sampler="popularity",
        in_batch_negatives=True,
        logq_correction=True,
        drop_seen_targets=True,
        warmup_steps=2,
        lr_decay="cosine",
        patience=1,
        max_sessions=40,
        n_negatives=64,
    )
    summary = train(world, config, tmp_path, progress=False)
    assert 1 <= summary["train"]["epochs"] <= 2
    assert 0 <= summary["val"]["hr@100"] <= 1
    checkpoint = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert checkpoint["train_config"] == asdict(config)
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


def test_evaluation_reads_as_many_sessions_as_training(world: Dataset) -> None:
    """``model_ranker_for`` embeds a case from the config's ``max_sessions``, not the default."""
    config = replace(TINY, max_sessions=40)
    model = train_module.build_model(world.vocab, config).eval()
    ids = [str(i) for i in world.vocab.item_ids[:30]]
    history = [Session(f"r{j}", T0 + 600 * j, "homepage", ((ids[j], 2),)) for j in range(30)]
    case = EvalCase("u", history, Session("t", T0 + 600 * 30, "search", ((ids[0], 2),)))
    got = model_ranker_for(model, config, world.vocab).user_vectors([case])[0]

    def encoded(max_sessions: int) -> torch.Tensor:
        tokens = build_tokens(history, "search", case.target.ts, world.vocab, max_sessions)
        with torch.no_grad():
            vector: torch.Tensor = Encoder(model)(torch.from_numpy(tokens[None]))[0]
        return vector

    np.testing.assert_allclose(got, encoded(40).numpy(), atol=1e-5)
    assert not np.allclose(got, encoded(20).numpy(), atol=1e-3)
