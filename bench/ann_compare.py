"""hnswlib vs faiss-cpu HNSW on the same item vectors: build time, index memory, and recall@k
against exact search next to single-query latency, over an ef ladder.

    .venv/bin/python bench/ann_compare.py [--vectors PATH | --synthetic N] [--queries 500] [--k 200]

Items: the 1M x 64 L2-normalised item vectors of the serving benchmark's bundle
(``item_vectors.npy`` in ``bench/serving.py``'s cached 1M-item bundle directory),
inner-product space; ``--synthetic N`` uses N random unit vectors instead (a quick run).

Query sets (each gets its own ef ladder; the first one decides the conclusion):

- **users**: ``queries.npy`` beside the vectors when present — encoder outputs for the serving
  benchmark's users, i.e. the distribution the service searches with (duplicates dropped);
- **perturbed**: ``--queries`` item vectors held out of both indexes, plus Gaussian noise
  (``--noise`` times the items' per-dimension spread around their mean), re-normalised;
- **random**: ``--queries`` random unit vectors (the same seed every run).

Both indexes get the same graph (M, ef_construction, inner product) and are built with the same
thread count. Every query then runs at batch 1 on one thread — as the service does, one query
per request and one ANN thread — alternating the two libraries query by query so that noise
from other work on the machine falls on both alike. Batch throughput (all queries in one call,
``--build-threads`` threads) is measured last, once the single-thread timings are done.

Writes ``docs/benchmarks/ann_compare.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
import json
import logging
import os
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import faiss
import hnswlib
import numpy as np
from benchlib import latency_summary

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from index.ann import exact_top_k  # noqa: E402

log = logging.getLogger("bench.ann_compare")

# bench/serving.py's cached 1M-item bundle (its directory name carries the layout and i2i N)
VECTORS = ROOT / "var" / "bench" / "serving" / "bundles-1000000-64-clustered-v2-i2i100" / "item_vectors.npy"
OUT = ROOT / "docs" / "benchmarks"
LIBRARIES = ("hnswlib", "faiss")
RECALL_TARGET = 0.95


def unit_rows(x: np.ndarray) -> np.ndarray:
    unit: np.ndarray = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return unit


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _Mallinfo2


def heap_mb() -> float:
    """Bytes malloc has handed out and not had back, all arenas (glibc ``mallinfo2``). Unlike
    RSS, not hidden by freed memory that malloc keeps for reuse; both libraries allocate through
    malloc."""
    info = _libc.mallinfo2()
    return float(info.uordblks + info.hblkhd) / 2**20


# --- vectors and queries ----------------------------------------------------------------------


def load_items(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    if args.synthetic:
        rng = np.random.default_rng(args.seed)
        items = unit_rows(rng.standard_normal((args.synthetic, args.dim), dtype=np.float32))
        return items, f"{args.synthetic:,} random unit vectors (synthetic, seed {args.seed})"
    path = args.vectors or VECTORS
    if not path.is_file():
        sys.exit(
            f"{path} is missing: run bench/serving.py first (it writes the 1M item vectors), "
            "or pass --vectors PATH or --synthetic N"
        )
    items = np.ascontiguousarray(np.load(path), dtype=np.float32)
    norms = np.linalg.norm(items, axis=1)
    log.info("loaded %s: %s, row norms %.4f..%.4f", path, items.shape, norms.min(), norms.max())
    return items, f"`{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`"


def make_queries(
    items: np.ndarray, args: argparse.Namespace, query_file: Path | None
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, str]]:
    """(the indexed items, {query set: (Q, D) queries}, {query set: description}).

    The perturbed set's source rows are removed from the items, so labels are rows of what is
    returned as the indexed items."""
    rng = np.random.default_rng(args.seed + 1)
    sets: dict[str, np.ndarray] = {}
    about: dict[str, str] = {}
    if query_file is not None:
        users = np.unique(np.load(query_file).astype(np.float32).reshape(-1, items.shape[1]), axis=0)
        sets["users"] = users[: args.queries]
        about["users"] = (
            f"{len(sets['users'])} distinct encoder outputs from `{query_file.name}` "
            "(the serving benchmark's users)"
        )
    held = np.sort(rng.choice(len(items), args.queries, replace=False))
    # noise on the scale of the items' own spread, so "nearby" means the same on any data
    spread = items[rng.choice(len(items), min(len(items), 100_000), replace=False)].std(axis=0)
    noise = args.noise * spread * rng.standard_normal((args.queries, items.shape[1]), dtype=np.float32)
    sets["perturbed"] = unit_rows(items[held] + noise)
    cosine = float(np.mean(np.sum(sets["perturbed"] * items[held], axis=1)))
    about["perturbed"] = (
        f"{args.queries} item vectors held out of both indexes, plus Gaussian noise at {args.noise} x "
        f"the items' per-dimension spread, re-normalised (mean cosine to the source item {cosine:.3f})"
    )
    sets["random"] = unit_rows(rng.standard_normal((args.queries, items.shape[1]), dtype=np.float32))
    about["random"] = f"{args.queries} random unit vectors"
    # where the queries lie relative to the items: the items' mean direction, as a cosine
    centre = unit_rows(items.mean(axis=0, keepdims=True))[0]
    for name, queries in sets.items():
        about[name] += f"; mean cosine to the items' mean direction {float(np.mean(queries @ centre)):.3f}"
    return np.delete(items, held, axis=0), sets, about


def recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    hits = sum(len(np.intersect1d(f[:k], e[:k])) for f, e in zip(found, exact, strict=True))
    return hits / (k * len(exact))


# --- the two indexes --------------------------------------------------------------------------


def build_hnswlib(items: np.ndarray, m: int, ef_construction: int, threads: int) -> hnswlib.Index:
    # as index.ann.ItemIndex.build does, but bare, so both libraries are timed through their own calls
    index = hnswlib.Index(space="ip", dim=items.shape[1])
    index.init_index(max_elements=len(items), M=m, ef_construction=ef_construction)
    index.set_num_threads(threads)
    index.add_items(items, np.arange(len(items)))
    return index


def build_faiss(items: np.ndarray, m: int, ef_construction: int, threads: int) -> faiss.IndexHNSWFlat:
    faiss.omp_set_num_threads(threads)
    index = faiss.IndexHNSWFlat(items.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(items)
    return index


def measure_build(items: np.ndarray, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """({library: index}, {library: build seconds, heap growth, serialized size}).

    Each build is one library call (no progress bar): chunking the adds would change how faiss
    orders insertions (it inserts a batch level by level)."""
    builders = {"hnswlib": build_hnswlib, "faiss": build_faiss}
    indexes: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for name in LIBRARIES:
        gc.collect()
        before = heap_mb()
        log.info("building %s over %d items (%d threads)...", name, len(items), args.build_threads)
        started = time.perf_counter()
        indexes[name] = builders[name](items, args.M, args.ef_construction, args.build_threads)
        seconds = time.perf_counter() - started
        stats[name] = {"build_s": seconds, "heap_mb": heap_mb() - before}
        log.info("%s built in %.1f s", name, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        indexes["hnswlib"].save_index(f"{tmp}/hnswlib.bin")
        faiss.write_index(indexes["faiss"], f"{tmp}/faiss.index")
        stats["hnswlib"]["file_mb"] = os.path.getsize(f"{tmp}/hnswlib.bin") / 2**20
        stats["faiss"]["file_mb"] = os.path.getsize(f"{tmp}/faiss.index") / 2**20
    return indexes, stats


def set_ef(indexes: dict[str, Any], ef: int) -> None:
    indexes["hnswlib"].set_ef(ef)
    indexes["faiss"].hnsw.efSearch = ef


def search(name: str, index: Any, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) labels, best first, as the library returns them (hnswlib: uint64, faiss: int64,
    -1 for a missing result): nothing but the library call is timed."""
    if name == "hnswlib":
        labels, _ = index.knn_query(queries, k=k)
    else:
        _, labels = index.search(queries, k)
    return np.asarray(labels)


def measure_ladder(
    indexes: dict[str, Any], queries: np.ndarray, exact: np.ndarray, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Per ef and library: recall@k (and at the smaller ks, from the same search) and batch-1,
    one-thread latency over ``--repeats`` passes through the queries."""
    indexes["hnswlib"].set_num_threads(1)
    faiss.omp_set_num_threads(1)
    set_ef(indexes, args.ef[0])
    for q in queries[:50]:  # warm-up: page in both graphs
        for name in LIBRARIES:
            search(name, indexes[name], q[None], args.k)
    rows = []
    for ef in args.ef:
        set_ef(indexes, ef)
        found = {name: np.empty((len(queries), args.k), dtype=np.int64) for name in LIBRARIES}
        timings: dict[str, list[float]] = {name: [] for name in LIBRARIES}
        for _ in range(args.repeats):
            for i, q in enumerate(queries):
                one = q[None]
                # alternate who goes first, so neither always runs in the other's wake (caches)
                for name in LIBRARIES if i % 2 == 0 else LIBRARIES[::-1]:
                    started = time.perf_counter()
                    labels = search(name, indexes[name], one, args.k)
                    timings[name].append(time.perf_counter() - started)
                    found[name][i] = labels[0]
        row: dict[str, Any] = {"ef": ef}
        for name in LIBRARIES:
            recalls = {f"recall@{k}": recall(found[name], exact, k) for k in args.ks}
            row[name] = {**recalls, **latency_summary(timings[name])}
        log.info(
            "ef %d: %s",
            ef,
            "; ".join(
                f"{n} recall@{args.k} {row[n][f'recall@{args.k}']:.4f} p50 {row[n]['p50_ms']:.3f} ms"
                for n in LIBRARIES
            ),
        )
        rows.append(row)
    return rows


def measure_batch(
    indexes: dict[str, Any], queries: np.ndarray, rows: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    """Adds ``batch_qps`` (all queries in one call, ``--build-threads`` threads; best of 3) to rows."""
    indexes["hnswlib"].set_num_threads(args.build_threads)
    faiss.omp_set_num_threads(args.build_threads)
    for row in rows:
        set_ef(indexes, row["ef"])
        for name in LIBRARIES:
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                search(name, indexes[name], queries, args.k)
                best = min(best, time.perf_counter() - started)
            row[name]["batch_qps"] = len(queries) / best


# --- the verdict and the report ---------------------------------------------------------------


def p50_at(rows: list[dict[str, Any]], name: str, k: int, target: float) -> tuple[float, str] | None:
    """(p50 ms, how it was read) for recall@k = ``target`` on this library's recall/p50 curve:
    interpolated linearly in recall between the bracketing ladder points, or the smallest ef's
    p50 (an upper bound) when that already reaches the target; None when no ef does."""
    points = [(row["ef"], row[name][f"recall@{k}"], row[name]["p50_ms"]) for row in rows]
    ef0, r0, t0 = points[0]
    if r0 >= target:
        return t0, f"at ef {ef0}, the smallest, already at recall {r0:.4f}: an upper bound"
    for (e0, r0, t0), (e1, r1, t1) in itertools.pairwise(points):
        if r0 < target <= r1:
            return t0 + (t1 - t0) * (target - r0) / (r1 - r0), f"interpolated between ef {e0} and {e1}"
    return None


def verdict(rows: list[dict[str, Any]], k: int) -> str:
    """Which library reaches recall@k >= target at the lower p50. The ladder is coarse, so each
    library's p50 is read off its own recall/p50 curve at the target rather than taken at the
    first ef past it (which may overshoot the target by more for one library than the other)."""
    at = {name: p50_at(rows, name, k, RECALL_TARGET) for name in LIBRARIES}
    reached = {name: v for name, v in at.items() if v is not None}
    if not reached:
        best = {name: max(row[name][f"recall@{k}"] for row in rows) for name in LIBRARIES}
        common = min(best.values())
        both = {name: p50_at(rows, name, k, common) for name in LIBRARIES}
        return (
            f"neither reaches recall@{k} ≥ {RECALL_TARGET} on this ef ladder "
            f"(best: {', '.join(f'{n} {r:.4f}' for n, r in best.items())}); at recall {common:.4f}, "
            f"the best both reach, p50 {', '.join(f'{n} {ms(v[0] if v else None)}' for n, v in both.items())}"
        )
    if len(reached) == 1:
        ((name, (p50, how)),) = reached.items()
        return f"only {name} reaches recall@{k} ≥ {RECALL_TARGET}: p50 {ms(p50)} ({how})"
    ranked = sorted(reached, key=lambda name: reached[name][0])
    (w, w_how), (lo, lo_how) = reached[ranked[0]], reached[ranked[1]]
    return (
        f"{ranked[0]} reaches recall@{k} = {RECALL_TARGET} at the lower p50: {ms(w)} ({w_how}) vs "
        f"{ranked[1]} {ms(lo)} ({lo_how}), {lo / w:.2f}x"
    )


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} ms"


def write_report(results: dict[str, Any]) -> str:
    c, env, build = results["config"], results["environment"], results["build"]
    k = c["k"]
    lines = [
        "# hnswlib vs faiss-cpu HNSW",
        "",
        "Generated by `bench/ann_compare.py`; do not edit by hand. "
        f"Items: {c['items_description']}, {c['indexed_items']:,} indexed, dim {c['dim']}; "
        # unit vectors: the mean's norm is their mean cosine to their mean direction
        f"their mean vector has norm {c['mean_item_norm']:.3f} (0: spread evenly, 1: all alike); "
        f"inner product; HNSW M={c['M']} ef_construction={c['ef_construction']} for both; "
        f"k = {k}, recall against exact (numpy) search. "
        f"hnswlib {env['hnswlib']}, faiss-cpu {env['faiss']}; {env['cpus']} CPUs; "
        f"load average (1/5/15 min) {env['load_before']} before, {env['load_after']} after"
        + (f"; {env['note']}" if env.get("note") else "")
        + ".",
        "",
        f"**Conclusion ({results['primary']} queries): {results['conclusion']}.**",
        "",
        f"## Build ({c['build_threads']} threads)",
        "",
        "| | build s | memory MB (malloc in use) | index file MB |",
        "|---|---|---|---|",
        *(
            f"| {n} | {b['build_s']:.1f} | {b['heap_mb']:.0f} | {b['file_mb']:.0f} |"
            for n, b in ((n, build[n]) for n in LIBRARIES)
        ),
    ]
    for name, q in results["query_sets"].items():
        other_ks = [x for x in c["ks"] if x != k]
        lines += [
            "",
            f"## Queries: {name}",
            "",
            f"{q['description']}. Latency: one query per call, one thread, p50/p99 over "
            f"{c['repeats']} passes through the {q['n']} queries; "
            f"batch: all {q['n']} in one call on {c['build_threads']} threads. "
            f"Recall@{'/'.join(map(str, other_ks))} are prefixes of the same k={k} search.",
            "",
            f"Verdict: {q['conclusion']}.",
            "",
            "| ef | "
            + " | ".join(f"{n} recall@{k} | {n} p50 ms | {n} p99 ms" for n in LIBRARIES)
            + " | "
            + " | ".join(f"{n} recall@{x}" for x in other_ks for n in LIBRARIES)
            + " | "
            + " | ".join(f"{n} batch q/s" for n in LIBRARIES)
            + " |",
            "|---" * (1 + 3 * len(LIBRARIES) + len(other_ks) * len(LIBRARIES) + len(LIBRARIES)) + "|",
        ]
        for row in q["ladder"]:
            cells = [str(row["ef"])]
            for n in LIBRARIES:
                r = row[n]
                cells += [f"{r[f'recall@{k}']:.4f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}"]
            cells += [f"{row[n][f'recall@{x}']:.4f}" for x in other_ks for n in LIBRARIES]
            cells += [f"{row[n].get('batch_qps', float('nan')):.0f}" for n in LIBRARIES]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = results["config"]["k"]
    sets = results["query_sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.5), squeeze=False)
    for ax, (name, q) in zip(axes[0], sets.items(), strict=True):
        for lib in LIBRARIES:
            p50 = [row[lib]["p50_ms"] for row in q["ladder"]]
            rec = [row[lib][f"recall@{k}"] for row in q["ladder"]]
            ax.plot(p50, rec, marker="o", label=lib)
            for row, x, y in zip(q["ladder"], p50, rec, strict=True):
                ax.annotate(str(row["ef"]), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
        ax.axhline(RECALL_TARGET, color="red", linestyle="--", linewidth=0.8, label=f"recall {RECALL_TARGET}")
        ax.set_xlabel("p50 latency ms (batch 1, 1 thread)")
        ax.set_ylabel(f"recall@{k}")
        ax.set_title(f"{name} queries (labels: ef)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--vectors", type=Path, help=f"(N, D) float32 .npy; default {VECTORS}")
    source.add_argument("--synthetic", type=int, metavar="N", help="N random unit vectors instead")
    parser.add_argument("--dim", type=int, default=64, help="dimension of --synthetic vectors")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--noise", type=float, default=0.5, help="perturbation / item spread")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes through the queries")
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--ks", type=int, nargs="*", default=[10, 100], help="smaller ks (same search)")
    parser.add_argument("--ef", type=int, nargs="*", default=[200, 250, 300, 400, 600, 800, 1200, 1600])
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="a remark for the report (e.g. the machine was shared)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if min(args.ef) < args.k:
        parser.error(f"every ef must be >= k ({args.k}); both libraries search with max(ef, k)")
    args.ef = sorted(set(args.ef))
    args.ks = sorted({*(x for x in args.ks if x < args.k), args.k})

    load_before = [round(x, 2) for x in os.getloadavg()]
    items, items_description = load_items(args)
    mean_norm = float(np.linalg.norm(items.mean(axis=0)))
    query_file = None if args.synthetic else (args.vectors or VECTORS).parent / "queries.npy"
    query_file = query_file if query_file is not None and query_file.is_file() else None
    items, query_sets, about = make_queries(items, args, query_file)
    log.info("query sets: %s", {name: len(q) for name, q in query_sets.items()})

    started = time.perf_counter()
    # best first, so prefixes give the top-10/100; 32 x N scores at a time
    exact = {name: exact_top_k(items, q, args.k, "ip", chunk=32) for name, q in query_sets.items()}
    log.info("exact top-%d for all query sets in %.1f s", args.k, time.perf_counter() - started)

    indexes, build = measure_build(items, args)
    ladders = {name: measure_ladder(indexes, q, exact[name], args) for name, q in query_sets.items()}
    for name, q in query_sets.items():
        measure_batch(indexes, q, ladders[name], args)

    primary = next(iter(query_sets))
    results: dict[str, Any] = {
        "config": {
            **{key: value for key, value in vars(args).items() if key not in ("vectors", "note")},
            "vectors": "" if args.synthetic else items_description.strip("`"),
            "items_description": items_description,
            "mean_item_norm": mean_norm,
            "indexed_items": len(items),
            "dim": int(items.shape[1]),
        },
        "environment": {
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "hnswlib": version("hnswlib"),
            "faiss": faiss.__version__,
            "note": args.note,
        },
        "build": build,
        "primary": primary,
        "query_sets": {
            name: {
                "description": about[name],
                "n": len(query_sets[name]),
                "ladder": ladders[name],
                "conclusion": verdict(ladders[name], args.k),
                "p50_at_target": {
                    lib: p50_at(ladders[name], lib, args.k, RECALL_TARGET) for lib in LIBRARIES
                },
            }
            for name in query_sets
        },
    }
    results["conclusion"] = results["query_sets"][primary]["conclusion"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ann_compare.json").write_text(json.dumps(results, indent=2))
    report = write_report(results)
    (OUT / "ann_compare.md").write_text(report + "\n")
    plot(results, OUT / "ann_compare.png")
    print(report)


if __name__ == "__main__":
    main()
