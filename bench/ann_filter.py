"""Excluding a user's seen items from an HNSW search, four ways, at 1M items: cost per query and
recall against the exact filtered top-k, as the number of excluded items grows.

- **over-fetch**: ask hnswlib for k + |seen| and drop the seen (every release before the
  request-cost work);
- **adaptive**: ``index.ann.search_excluding`` as served now — one search of ef_search, sized
  further by the share excluded only when that comes up short;
- **hnswlib filter**: hnswlib's own ``filter`` (a Python callable asked per candidate);
- **faiss filter**: faiss-cpu HNSW (same M, ef_construction, inner product) searched with an
  ``IDSelectorBatch`` of the seen labels (the filter runs in C++).

Seen sets of each size come in two shapes: **scattered** (drawn from the catalog's power-law
popularity, as the request-cost benchmark's users) and **crowding** (a quarter of them the
query's own nearest items: a trained encoder puts a user near what they met). Queries: the mean
of three popularity-drawn item vectors, re-normalised. One query per call, one thread, the
methods alternating query by query.

    python bench/ann_filter.py [--queries 200]

Writes ``docs/benchmarks/ann_filter.{json,md}``. The faiss index is built once (about 5 min on
2 cores) and cached in ``var/bench/ann_filter``; hnswlib's is the serving bundle's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import faiss
import hnswlib
import numpy as np
from benchlib import ROOT, provenance
from serving import Popularity, bundle_root

sys.path.insert(0, str(ROOT))

from index.ann import ItemIndex, search_excluding
from index.bundle import read_manifest

log = logging.getLogger("ann_filter")
WORK = ROOT / "var" / "bench" / "ann_filter"
OUT = ROOT / "docs" / "benchmarks"
Search = Callable[[np.ndarray, int, frozenset[int]], np.ndarray]


def faiss_index(items: np.ndarray, m: int, ef_construction: int) -> faiss.IndexHNSWFlat:
    path = WORK / f"faiss-{len(items)}-{m}-{ef_construction}.index"
    if path.is_file():
        index = faiss.read_index(str(path))
        assert isinstance(index, faiss.IndexHNSWFlat)
        return index
    WORK.mkdir(parents=True, exist_ok=True)
    faiss.omp_set_num_threads(2)
    index = faiss.IndexHNSWFlat(items.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    started = time.perf_counter()
    index.add(items)
    log.info("faiss HNSW built in %.0f s", time.perf_counter() - started)
    faiss.write_index(index, str(path))
    return index


def methods(hnsw: ItemIndex, raw: hnswlib.Index, flat: faiss.IndexHNSWFlat, ef: int) -> dict[str, Search]:
    count = hnsw.count

    def over_fetch(q: np.ndarray, k: int, seen: frozenset[int]) -> np.ndarray:
        return search_excluding(hnsw.search, count, q, k, seen)[0]  # free=0: asks k + |seen|

    def adaptive(q: np.ndarray, k: int, seen: frozenset[int]) -> np.ndarray:
        return hnsw.search_excluding(q, k, seen)[0]

    def hnswlib_filter(q: np.ndarray, k: int, seen: frozenset[int]) -> np.ndarray:
        labels, _ = raw.knn_query(q, k=k, filter=lambda label: label not in seen)
        return np.asarray(labels[0], dtype=np.int64)

    def faiss_filter(q: np.ndarray, k: int, seen: frozenset[int]) -> np.ndarray:
        batch = faiss.IDSelectorBatch(np.fromiter(seen, np.int64, len(seen)))
        selector = faiss.IDSelectorNot(batch)  # allowed: not in the batch (kept alive until searched)
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(ef, k))
        _, labels = flat.search(q, k, params=params)
        del batch, selector
        return labels[0]

    return {
        "over-fetch": over_fetch,
        "adaptive": adaptive,
        "hnswlib filter": hnswlib_filter,
        "faiss filter": faiss_filter,
    }


def exact_allowed(items: np.ndarray, q: np.ndarray, k: int, seen: frozenset[int]) -> np.ndarray:
    scores = items @ q[0]
    if seen:
        scores[np.fromiter(seen, np.int64, len(seen))] = -np.inf
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = bundle_root(1_000_000, 64, "clustered", 100, True)
    directory = max((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    params = read_manifest(directory).hnsw
    items = np.load(root / "item_vectors.npy").astype(np.float32)
    hnsw = ItemIndex.load(directory / "items.hnsw", items.shape[1], len(items), params)
    raw = hnsw._index
    flat = faiss_index(items, params.M, params.ef_construction)
    faiss.omp_set_num_threads(1)
    search = methods(hnsw, raw, flat, params.ef_search)
    popularity = Popularity(len(items))
    rng = np.random.default_rng(0)
    queries = []
    for _ in range(args.queries):
        q = items[popularity.sample(rng, 3)].mean(axis=0, keepdims=True)
        queries.append((q / np.linalg.norm(q)).astype(np.float32))
    rows = []
    for shape in ("scattered", "crowding"):
        for size in args.seen:
            seen_sets = []
            for q in queries:
                drawn = set(popularity.sample(rng, size).tolist()) if size else set()
                if shape == "crowding" and size:
                    near = exact_allowed(items, q, size // 4, frozenset()).tolist()
                    drawn = set(near) | set(list(drawn)[: size - len(near)])
                seen_sets.append(frozenset(drawn))
            truth = [
                exact_allowed(items, q, max(args.ks), s) for q, s in zip(queries, seen_sets, strict=True)
            ]
            for k in args.ks:
                seconds: dict[str, list[float]] = {name: [] for name in search}
                found: dict[str, float] = dict.fromkeys(search, 0.0)
                for i, (q, seen) in enumerate(zip(queries, seen_sets, strict=True)):
                    names = list(search)
                    shift = i % len(names)
                    for name in names[shift:] + names[:shift]:
                        started = time.perf_counter()
                        try:
                            labels = search[name](q, k, seen)
                        except RuntimeError:  # hnswlib's filter found fewer than k it allows
                            labels = np.zeros(0, np.int64)
                        seconds[name].append(time.perf_counter() - started)
                        found[name] += len(np.intersect1d(labels, truth[i][:k])) / k
                row = {
                    "shape": shape,
                    "seen": size,
                    "k": k,
                    "mean_seen": float(np.mean([len(s) for s in seen_sets])),
                }
                for name in search:
                    row[name] = {
                        "p50_ms": 1000 * float(np.percentile(seconds[name], 50)),
                        "p99_ms": 1000 * float(np.percentile(seconds[name], 99)),
                        "recall": found[name] / len(queries),
                    }
                log.info(
                    "%s seen=%d k=%d: %s", shape, size, k, {n: round(row[n]["p50_ms"], 3) for n in search}
                )
                rows.append(row)
    return {"hnsw": params.model_dump(), "items": len(items), "queries": args.queries, "rows": rows}


def report(results: dict[str, Any]) -> str:
    run_, hnsw = results["provenance"], results["hnsw"]
    names = ["over-fetch", "adaptive", "hnswlib filter", "faiss filter"]
    lines = [
        "# Excluding seen items from an HNSW search",
        "",
        f"Generated by `python bench/ann_filter.py` at commit {run_['commit'][:10]}, {run_['generated_at']}."
        f" {results['items']:,} items (the serving benchmark's 1M-item bundle vectors), inner product,"
        f" M={hnsw['M']},"
        f" ef_construction={hnsw['ef_construction']}, ef_search={hnsw['ef_search']} (the bundle's, tuned to"
        f" recall@{hnsw['tuned_k']} {hnsw['measured_recall']:.3f}) for every method;"
        f" {results['queries']} queries,"
        " one per call, one thread, the methods alternating query by query on the shared 2 cores."
        " Recall: share of the exact top-k among items not excluded. Single run.",
        "",
        "| seen items | shape | k | " + " | ".join(f"{n} p50 ms (recall)" for n in names) + " |",
        "| ---: | --- | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for row in results["rows"]:
        cells = [f"{row[n]['p50_ms']:.2f} ({row[n]['recall']:.3f})" for n in names]
        lines.append(f"| {row['mean_seen']:.0f} | {row['shape']} | {row['k']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seen", nargs="*", type=int, default=[0, 100, 450, 1500])
    parser.add_argument("--ks", nargs="*", type=int, default=[10, 100, 500])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results = {"provenance": provenance(), "config": vars(args), **run(args)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ann_filter.json").write_text(json.dumps(results, indent=2))
    (OUT / "ann_filter.md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
