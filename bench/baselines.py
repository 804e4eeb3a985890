"""Every baseline (and optionally a trained run, exact and through HNSW) in the one harness.

    .venv/bin/python bench/baselines.py --data DIR [--run RUN] [--val-days N --test-days N]

Prints, for the validation and test cases, HR/Recall/NDCG@K with and without seen items, plus
fit and ranking times. Numbers, not assertions: this is where quality and speed are read.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from model_export.baselines import fit_baselines
from model_export.data import load_dataset
from model_export.metrics import DEFAULT_KS
from model_export.ranking import Ranker, case_targets, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="directory with events.csv and catalog.csv")
    parser.add_argument("--run", type=Path, default=None, help="a training run directory to judge as well")
    parser.add_argument("--val-days", type=int, default=1)
    parser.add_argument("--test-days", type=int, default=1)
    parser.add_argument("--ef", type=int, nargs="*", default=[10, 50, 128], help="HNSW ef_search values")
    parser.add_argument("--splits", nargs="*", default=["val", "test"])
    args = parser.parse_args()

    started = time.perf_counter()
    dataset = load_dataset(args.data / "events.csv", args.data / "catalog.csv", args.val_days, args.test_days)
    seconds = time.perf_counter() - started
    print(f"load: {seconds:.1f} s, {dataset.vocab.n_items} items, {len(dataset.train)} training users")
    started = time.perf_counter()
    rankers: dict[str, Ranker] = fit_baselines(dataset.train, dataset.vocab)
    print(f"fit baselines: {time.perf_counter() - started:.2f} s")
    per_k: set[str] = set()
    if args.run is not None:
        rankers.update(_model_rankers(args.run, args.ef, per_k))

    for split in args.splits:
        cases = getattr(dataset, split)
        kept = len(case_targets(cases, dataset.vocab)[0])
        print(f"\n{split}: {len(cases)} cases, {kept} with a target item in the catalog")
        names = [f"{m}@{k}" for k in DEFAULT_KS for m in ("hr", "recall", "ndcg")]
        print(f"{'':40}" + "".join(f"{n:>11}" for n in names) + f"{'seconds':>9}")
        for exclude_seen in (False, True):
            for name, ranker in rankers.items():
                started = time.perf_counter()
                metrics = evaluate(
                    ranker, cases, dataset.vocab, DEFAULT_KS, exclude_seen, per_k=name in per_k
                )
                label = f"{name}{' -seen' if exclude_seen else ''}"
                seconds = time.perf_counter() - started
                print(f"{label:40}" + "".join(f"{metrics[n]:11.4f}" for n in names) + f"{seconds:9.2f}")


def _model_rankers(run: Path, efs: list[int], per_k: set[str]) -> dict[str, Ranker]:
    """The run's model, exact and through HNSW; the run must be trained on ``--data``."""
    from index.bundle import HnswParams
    from model_export.evaluate import model_ranker
    from model_export.publish import load_run

    model, checkpoint, run_vocab = load_run(run)
    config = checkpoint["train_config"]
    max_sessions, max_items = int(config["max_sessions"]), int(config["max_items"])
    rankers: dict[str, Ranker] = {
        "NSP model (exact)": model_ranker(model, run_vocab, max_sessions, max_items)
    }
    for ef in efs:
        name = f"NSP model (HNSW ef={ef}, per k)"
        rankers[name] = model_ranker(model, run_vocab, max_sessions, max_items, HnswParams(ef_search=ef))
        per_k.add(name)
    return rankers


if __name__ == "__main__":
    main()
