"""Search retrieval: every channel alone, the merged search list and the oracle union, on the test
search sessions of the synthetic search world, side by side in one run.

    .venv/bin/python bench/search.py [--users 2000] [--items 5000] [--days 30] [--epochs 5]
                                     [--seed 0] [--smoke]

One search world (``model_export.search_world``, world seed 0) and one training run
(``nsprecall train``'s defaults: the NSP model reading queries, BM25 and the dense two-tower on
the shared tokenizer, the search merge fitted on validation search sessions). Every test search
session with an engaged item is a case: its clicked/carted/paid items are the targets, the
request is answered at the session's time with the user's earlier sessions as history and the
session's query, seen items kept (a shopper searches for what they bought before, too).

Metrics: Recall@10/100/300, HR@100 and the relevance rate@100 (the share of the top 100 that
matches the query's intent by the world's ground truth, ``search_intents.csv``, which nothing in
training reads); split by the query's frequency in the training period (head: seen ≥ 10 times,
torso: 1-9, tail: never) and, for targets that arrived after the training period, the recall of
those new items alone. ``nsp (no query)`` is the same model asked without the query.

The run directory is cached under ``var/bench/search/``; writes ``docs/benchmarks/search.{md,json,
png}`` (``--smoke``: a tiny world into ``var/bench/search-smoke/``, docs left alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import cached, config_digest, prepared, provenance  # noqa: E402

from index.bundle import ChannelsSpec  # noqa: E402
from index.features import QueryText  # noqa: E402
from index.i2i import I2I_FILE, I2IParams, ItemToItem  # noqa: E402
from index.tokenizer import TOKENIZER_FILE, TextTokenizer  # noqa: E402
from model_export.channels import OfflineChannels, merged_rows, pad_rows  # noqa: E402
from model_export.data import DAY, Dataset, EvalCase, load_dataset, read_catalog  # noqa: E402
from model_export.evaluate import item_matrix, user_matrix  # noqa: E402
from model_export.metrics import hit_metrics  # noqa: E402
from model_export.publish import load_run  # noqa: E402
from model_export.ranking import case_targets  # noqa: E402
from model_export.search_world import generate_search_world, read_table, relevant_items  # noqa: E402
from model_export.synth import DAY0_TS, SynthConfig  # noqa: E402
from model_export.text.build import offline_text_searches, read_text_spec  # noqa: E402
from model_export.train import CHANNELS, TrainConfig, run  # noqa: E402

log = logging.getLogger("bench.search")

NAME = "search"
DOCS = ROOT / "docs" / "benchmarks"
KS = (10, 100, 300)
DEPTH = max(KS)
RELEVANCE_AT = 100
HEAD_MIN, TORSO_MIN = 10, 1  # training-period count of the exact (normalised) query
VAL_DAYS, TEST_DAYS = 1, 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="training seed (the world's is 0)")
    parser.add_argument("--smoke", action="store_true", help="a tiny world, results under var/ only")
    return parser.parse_args()


def nsp_lists(
    model: Any,
    config: TrainConfig,
    cases: Sequence[EvalCase],
    dataset: Dataset,
    tokenizer: TextTokenizer | None,
) -> Callable[[Sequence[EvalCase]], np.ndarray]:
    query_text = (
        QueryText(tokenizer, model.config.query_pieces) if tokenizer and model.config.query_pieces else None
    )

    def vectors(chosen: Sequence[EvalCase]) -> np.ndarray:
        return user_matrix(
            model, chosen, dataset.vocab, config.max_sessions, config.max_items, query_text=query_text
        )

    return vectors


def without_query(cases: Sequence[EvalCase]) -> list[EvalCase]:
    return [dataclasses.replace(c, target=dataclasses.replace(c.target, query="")) for c in cases]


def query_counts(dataset: Dataset) -> Counter[str]:
    return Counter(s.query for sessions in dataset.train.values() for s in sessions if s.query)


def frequency_band(count: int) -> str:
    return "head" if count >= HEAD_MIN else "torso" if count >= TORSO_MIN else "tail"


def judge_rows(
    rows: list[np.ndarray],
    targets: Sequence[set[int]],
    relevant: Sequence[set[int] | None],
    new_targets: Sequence[set[int]],
) -> dict[str, float]:
    ranked = pad_rows(rows, [np.zeros(0, np.int64)] * len(rows), DEPTH)
    metrics = hit_metrics(ranked, targets, KS)
    out = {f"recall@{k}": metrics[f"recall@{k}"] for k in KS} | {"hr@100": metrics["hr@100"]}
    rates = [
        float(np.mean([label in rel for label in row[:RELEVANCE_AT] if label >= 0]))
        if rel is not None and (row[:RELEVANCE_AT] >= 0).any()
        else np.nan
        for row, rel in zip(ranked, relevant, strict=True)
    ]
    out[f"relevance@{RELEVANCE_AT}"] = (
        float(np.nanmean(rates)) if not np.all(np.isnan(rates)) else float("nan")
    )
    with_new = [(row, t) for row, t in zip(ranked, new_targets, strict=True) if t]
    if with_new:
        new = hit_metrics(np.stack([r for r, _ in with_new]), [t for _, t in with_new], [100, 300])
        out["new_recall@100"], out["new_recall@300"] = new["recall@100"], new["recall@300"]
    return out


def evaluate_search(data: Path, run_dir: Path, config: TrainConfig) -> dict[str, Any]:
    dataset = load_dataset(data / "events.csv", data / "catalog.csv", VAL_DAYS, TEST_DAYS)
    vocab = dataset.vocab
    catalog = read_catalog(data / "catalog.csv")
    model, _, _ = load_run(run_dir)
    spec = ChannelsSpec.model_validate_json((run_dir / CHANNELS).read_text())
    text_spec = read_text_spec(run_dir)
    tokenizer = TextTokenizer.load(run_dir / TOKENIZER_FILE) if (run_dir / TOKENIZER_FILE).is_file() else None
    source = OfflineChannels(
        vocab,
        dataset.popularity,
        spec.history,
        ItemToItem.load(run_dir / I2I_FILE, vocab.n_items),
        spec.i2i or I2IParams(),
        nsp_lists(model, config, dataset.search_test, dataset, tokenizer),
        item_matrix(model, vocab),
        min_depth=spec.min_depth,
        text=offline_text_searches(run_dir, text_spec, tokenizer, vocab.n_items)
        if text_spec and tokenizer
        else {},
    )
    cases, targets = case_targets(dataset.search_test, vocab)
    started = time.perf_counter()
    lists = source.lists(cases, source.depth(DEPTH), exclude_seen=False)
    no_query = source.lists(without_query(cases), source.depth(DEPTH), exclude_seen=False, only=["nsp"])
    for row, extra in zip(lists, no_query, strict=True):
        row["nsp (no query)"] = extra["nsp"]
    list_seconds = time.perf_counter() - started

    intents = relevant_items(read_table(data / "search_intents.csv"), read_table(data / "catalog.csv"))
    relevant = [
        {label for item in intents[c.target.request_id] if (label := vocab.item_index(item)) is not None}
        if c.target.request_id in intents
        else None
        for c in cases
    ]
    first_day = dict(zip(catalog["item_id"].astype(str), catalog["first_day"].astype(int), strict=True))
    new_after = dataset.val_start
    new_targets = [
        {t for t in target if DAY0_TS + DAY * first_day.get(str(vocab.item_ids[t]), 0) >= new_after}
        for target in targets
    ]
    counts = query_counts(dataset)
    bands = [frequency_band(counts.get(c.target.query, 0)) for c in cases]

    fusion = spec.fusion_for(False, search=True)
    channel_names = [*source.names, "nsp (no query)"]

    def rows_of(name: str, subset: Sequence[int]) -> list[np.ndarray]:
        if name == "merged":
            chosen = [{n: c for n, c in lists[i].items() if n != "nsp (no query)"} for i in subset]
            return merged_rows(chosen, fusion, DEPTH)
        if name == "union":
            return [
                np.unique(np.concatenate([c[0] for n, c in lists[i].items() if n != "nsp (no query)"]))
                for i in subset
            ]
        return [lists[i][name][0] for i in subset]

    def table(subset: Sequence[int]) -> dict[str, dict[str, float]]:
        out = {}
        for name in [*channel_names, "merged"]:
            out[name] = judge_rows(
                rows_of(name, subset),
                [targets[i] for i in subset],
                [relevant[i] for i in subset],
                [new_targets[i] for i in subset],
            )
        union = rows_of("union", subset)
        found = [
            len(set(u.tolist()) & targets[i]) / len(targets[i]) for u, i in zip(union, subset, strict=True)
        ]
        out["union"] = {
            "recall@union": float(np.mean(found)) if found else 0.0,
            "size": float(np.mean([len(u) for u in union])) if union else 0.0,
        }
        return out

    everything = list(range(len(cases)))
    result: dict[str, Any] = {
        "cases": len(cases),
        "list_seconds": list_seconds,
        "fusion": fusion.model_dump(),
        "all": table(everything),
        "bands": {},
    }
    for band in ("head", "torso", "tail"):
        subset = [i for i, b in enumerate(bands) if b == band]
        result["bands"][band] = {"cases": len(subset), **({"table": table(subset)} if subset else {})}
    result["new_item_cases"] = sum(1 for t in new_targets if t)
    return result


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args()
    if args.smoke:
        args.users, args.items, args.days, args.epochs = 300, 800, 12, 1
    world = SynthConfig(n_users=args.users, n_items=args.items, n_days=args.days, seed=0)
    config = TrainConfig(epochs=args.epochs, seed=args.seed, baselines=False)
    root = ROOT / "var" / "bench" / (f"{NAME}-smoke" if args.smoke else NAME)
    world_dir = root / f"u{args.users}-i{args.items}-d{args.days}-{config_digest(world)}"
    data = prepared(world_dir / "data", lambda out: generate_search_world(world, out))
    run_dir = world_dir / f"run-{config_digest(config)}"
    if not (run_dir / CHANNELS).is_file():
        started = time.perf_counter()
        run(
            data / "events.csv",
            data / "catalog.csv",
            run_dir,
            config,
            progress=False,
            val_days=VAL_DAYS,
            test_days=TEST_DAYS,
        )
        (run_dir / "train_seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - started}))
    result = cached(run_dir / "search_eval.json", lambda: evaluate_search(data, run_dir, config))
    result["world"] = dataclasses.asdict(world)
    result["train"] = dataclasses.asdict(config)
    out_dir = root if args.smoke else DOCS
    write_report(result, out_dir, args)


def write_report(result: dict[str, Any], out_dir: Path, args: argparse.Namespace) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    result["provenance"] = provenance()
    (out_dir / f"{NAME}.json").write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps(result["all"], indent=1))


if __name__ == "__main__":
    main()
