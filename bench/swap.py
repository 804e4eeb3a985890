"""Swap benchmark: memory and recall latency of a `nsprecall serve` process while it swaps bundles.

    .venv/bin/python bench/swap.py [--items 200000] [--dim 64] [--swaps 5] [--steady-s 20]

Builds a synthetic bundle of ``--items`` items (an ONNX encoder whose item-embedding table has
one row per item, an HNSW index over the same vectors, the id map, popularity lists and the
probe), publishes copies of it as versions 2.. one at a time while a closed-loop client keeps
posting /v1/recall, and reads the server's memory from ``/proc/<pid>/status``:

- ``VmRSS`` with no bundle loaded and with one bundle (steady state), polled every few ms;
- the peak during each swap: ``VmHWM`` after resetting it (``clear_refs``) just before the
  publish, and the highest ``VmRSS`` polled until the new version answers and the old is freed.

Latency percentiles of requests that started while a swap was in progress (publish → the new
version answering) are compared with steady state. Writes ``docs/benchmarks/swap.json``,
``swap.md`` and ``swap.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from benchlib import latency_summary, start_serve, wait_for

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from index.ann import ItemIndex  # noqa: E402
from index.bundle import (  # noqa: E402
    ENCODER_FILE,
    INDEX_FILE,
    POPULARITY_FILE,
    PROBE_FILE,
    HnswParams,
    commit,
    read_manifest,
    staging,
)
from index.features import COL, N_FEATURES, Event, build_tokens, group_sessions, stack_left_padded  # noqa: E402
from index.vocab import ITEM_OFFSET, Vocabulary  # noqa: E402

log = logging.getLogger("bench.swap")

OUT = ROOT / "docs" / "benchmarks"
SCENES = ("homepage", "search", "feed")
MAX_SESSIONS, MAX_ITEMS = 20, 12
WATCH_INTERVAL_S = 0.1
RSS_POLL_S = 0.005
SETTLE_S = 2.0  # after a swap: in-flight requests drop the old bundle, the allocator settles


# --- the synthetic bundle ---------------------------------------------------------------------


def _encoder(embedding: np.ndarray, bias: np.ndarray) -> bytes:
    """user_vec = L2-normalise(mean over positions of embedding[item token] + bias)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dim = embedding.shape[1]
    item_column = np.asarray([COL["item"]], dtype=np.int64)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["tokens", "item_column"], ["item_tokens3"], axis=2),
            helper.make_node("Squeeze", ["item_tokens3", "squeeze_axes"], ["item_tokens"]),
            helper.make_node("Gather", ["embedding", "item_tokens"], ["vectors"], axis=0),
            helper.make_node("ReduceMean", ["vectors"], ["pooled"], axes=[1], keepdims=0),
            helper.make_node("Add", ["pooled", "bias"], ["shifted"]),
            helper.make_node("LpNormalization", ["shifted"], ["user_vec"], axis=1, p=2),
        ],
        "synthetic_encoder",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "length", N_FEATURES])],
        [helper.make_tensor_value_info("user_vec", TensorProto.FLOAT, ["batch", dim])],
        initializer=[
            numpy_helper.from_array(embedding, "embedding"),
            numpy_helper.from_array(bias, "bias"),
            numpy_helper.from_array(item_column, "item_column"),
            numpy_helper.from_array(np.asarray([2], dtype=np.int64), "squeeze_axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def user_events(vocab: Vocabulary, user: str, rng: np.random.Generator) -> list[Event]:
    """Three request sessions of five clicks each on random catalog items."""
    items = rng.choice(vocab.n_items, size=15, replace=False)
    start = 1_767_225_600 + int(rng.integers(0, 86_400))
    return [
        Event(user, str(vocab.item_ids[item]), start + 60 * n, "click", SCENES[n % 3], f"{user}-r{n // 5}")
        for n, item in enumerate(items)
    ]


def build_bundle(root: Path, n_items: int, dim: int, hnsw: HnswParams, seed: int) -> Path:
    """Publish version 1 of the synthetic bundle under ``root``."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    ids = [f"item-{i:07d}" for i in range(n_items)]
    vocab = Vocabulary.build(
        ids, [f"cat-{i % 200}" for i in range(n_items)], rng.uniform(1, 500, n_items).tolist(), list(SCENES)
    )
    vectors = rng.normal(size=(n_items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # Rows 0 (padding) and 1 (unknown item) first, then one row per item: token i + ITEM_OFFSET.
    embedding = np.concatenate([np.zeros((ITEM_OFFSET, dim), np.float32), vectors])
    bias = (0.01 * rng.normal(size=dim)).astype(np.float32)
    encoder = _encoder(embedding, bias)
    probe_users = [group_sessions(user_events(vocab, f"probe{u}", rng)) for u in range(4)]
    tokens = stack_left_padded([build_tokens(s, "homepage", 1_767_312_000, vocab) for s in probe_users])
    session = ort.InferenceSession(encoder, providers=["CPUExecutionProvider"])
    expected = session.run(["user_vec"], {"tokens": tokens})[0]
    started = time.perf_counter()
    index = ItemIndex.build(vectors, hnsw, num_threads=os.cpu_count() or 1)
    log.info("built HNSW over %d items in %.0fs", n_items, time.perf_counter() - started)
    fields = {
        "parent_version": None,
        "training": {"kind": "pretrain"},
        "model_config": {"synthetic": True, "items": n_items, "dim": dim},
        "embedding_dim": dim,
        "encoder": {
            "inputs": ["tokens"],
            "outputs": ["user_vec"],
            "max_sessions": MAX_SESSIONS,
            "max_items_per_session": MAX_ITEMS,
        },
        "hnsw": hnsw.model_dump(),
        "item_count": n_items,
        "metrics": {},
    }
    with staging(root) as stage:
        vocab.save(stage)
        (stage / ENCODER_FILE).write_bytes(encoder)
        index.save(stage / INDEX_FILE)
        popular = {"*": ids[:500], **{scene: ids[100 * n : 100 * n + 500] for n, scene in enumerate(SCENES)}}
        (stage / POPULARITY_FILE).write_text(json.dumps(popular))
        with (stage / PROBE_FILE).open("wb") as f:
            np.savez(f, tokens=tokens, user_vec=expected)
        return commit(root, stage, fields, version=1)


def copy_as(source: Path, root: Path, version: int) -> Path:
    """A byte-for-byte copy of bundle ``source`` published as ``version`` under ``root``."""
    manifest = read_manifest(source)
    fields = manifest.model_dump(by_alias=True, exclude={"version", "files", "created_at"})
    fields["parent_version"] = version - 1
    with staging(root) as stage:
        for name in manifest.files:
            shutil.copyfile(source / name, stage / name)
        return commit(root, stage, fields, version=version)


# --- measuring --------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024  # reported in kB
    return values


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux: writing 5 to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int]] = []  # (time, VmRSS bytes)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.monotonic(), proc_status(self.pid)["VmRSS"]))
            time.sleep(RSS_POLL_S)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def between(self, start: float, end: float) -> list[int]:
        return [rss for t, rss in list(self.samples) if start <= t <= end]


@dataclass
class RecallClient:
    """Closed-loop clients posting /v1/recall; records (start time, seconds, version) per request."""

    base_url: str
    users: list[str]
    threads: int
    records: list[tuple[float, float, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _halt: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._workers = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        self._halt.set()
        for worker in self._workers:
            worker.join()

    def _run(self, n: int) -> None:
        rng = np.random.default_rng(n)
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self._halt.is_set():
                user = self.users[int(rng.integers(len(self.users)))]
                started = time.monotonic()
                try:
                    response = client.post("/v1/recall", json={"user_id": user, "k": 100})
                    elapsed = time.monotonic() - started
                    if response.status_code != 200:
                        self.errors.append(f"{response.status_code}: {response.text[:200]}")
                        continue
                    self.records.append((started, elapsed, int(response.json()["bundle_version"])))
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")


def load_stages(directory: Path) -> list[dict[str, Any]]:
    """Time each step of loading ``directory`` in this process, and the longest pause another
    thread sees meanwhile: a step that holds the GIL stalls the event loop and every request."""
    from index.ann import ItemIndex
    from index.bundle import verify_files
    from service import runtime

    ticks: list[tuple[float, float]] = []
    done = threading.Event()

    def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            ticks.append((now, now - last))
            last = now

    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    time.sleep(0.2)
    manifest = read_manifest(directory)
    steps = {
        "sha256 of every file": lambda: verify_files(directory, manifest),
        "vocabulary (id map)": lambda: Vocabulary.load(directory),
        "ONNX Runtime session": lambda: runtime._open_encoder(directory / ENCODER_FILE, manifest, 1, "cpu"),
        "hnswlib load_index": lambda: ItemIndex.load(
            directory / INDEX_FILE,
            dim=manifest.embedding_dim,
            count=manifest.item_count,
            params=manifest.hnsw,
        ),
        "whole LoadedBundle.load": lambda: runtime.LoadedBundle.load(directory),
    }
    stages = []
    for name, step in steps.items():
        started = time.perf_counter()
        step()
        ended = time.perf_counter()
        stall = max((gap for at, gap in list(ticks) if started <= at <= ended + 0.05), default=0.0)
        stages.append({"step": name, "seconds": ended - started, "longest_stall_ms": 1000 * stall})
        time.sleep(0.1)
    done.set()
    thread.join()
    return stages


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="nsp-swap-bench-"))
    scratch, root = work / "scratch", work / "bundles"
    root.mkdir()
    hnsw = HnswParams(space="ip", M=16, ef_construction=args.ef_construction, ef_search=128)
    log.info("building a synthetic bundle: %d items, dim %d", args.items, args.dim)
    first = build_bundle(scratch, args.items, args.dim, hnsw, seed=0)
    versions = [first] + [copy_as(first, scratch, v) for v in range(2, args.swaps + 2)]
    bundle_bytes = sum(p.stat().st_size for p in first.iterdir())
    vocab = Vocabulary.load(first)
    stages = load_stages(versions[-1])

    port = args.port
    env: dict[str, str | None] = {
        "NSP_WATCH_INTERVAL_S": str(WATCH_INTERVAL_S),
        "NSP_CPU_WORKERS": "2",
        "NSP_LOG_LEVEL": "warning",
        "NSP_REDIS_URL": None,  # the in-memory store: this benchmark measures the bundle, not Redis
        "REDIS_URL": None,
    }
    server_log = (work / "serve.log").open("wb")
    server = start_serve(root, port, env, server_log)
    admin = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    sampler = RssSampler(server.pid)
    try:
        wait_for(lambda: admin.get("/livez").status_code == 200, 60, "the server to start", 0.01, server)
        time.sleep(1.0)
        rss_empty = statistics.median(proc_status(server.pid)["VmRSS"] for _ in range(20))
        sampler.start()
        t_origin = time.monotonic()
        os.rename(versions[0], root / "1")
        wait_for(lambda: admin.get("/readyz").status_code == 200, 120, "bundle 1", 0.01, server)

        rng = np.random.default_rng(1)
        users = [f"user{u}" for u in range(args.users)]
        for start in range(0, len(users), 50):
            batch = [e for user in users[start : start + 50] for e in user_events(vocab, user, rng)]
            body = {"events": [{f: v for f, v in e._asdict().items() if f != "query"} for e in batch]}
            assert admin.post("/v1/events", json=body).status_code == 202

        client = RecallClient(f"http://127.0.0.1:{port}", users, args.clients)
        client.start()
        time.sleep(args.warmup_s)
        steady_start = time.monotonic()
        time.sleep(args.steady_s)
        steady_end = time.monotonic()
        rss_one = statistics.median(sampler.between(steady_start, steady_end))

        swaps = []
        for version, directory in enumerate(versions[1:], start=2):
            reset_peak(server.pid)
            published = time.monotonic()
            os.rename(directory, root / str(version))
            wait_for(
                lambda v=version: admin.get("/readyz").json()["bundle_version"] == v,
                120,
                f"bundle {version}",
                0.01,
                server,
            )
            served = time.monotonic()
            time.sleep(SETTLE_S)
            settled = time.monotonic()
            status = proc_status(server.pid)
            polled_peak = max(sampler.between(published, settled))
            swaps.append(
                {
                    "version": version,
                    "published_s": published - t_origin,
                    "served_s": served - t_origin,
                    "swap_s": served - published,
                    "peak_rss_bytes": max(status["VmHWM"], polled_peak),
                    "polled_peak_rss_bytes": polled_peak,
                    "vmhwm_bytes": status["VmHWM"],
                    "rss_after_bytes": status["VmRSS"],
                }
            )
            log.info(
                "swap to %d in %.2fs, peak RSS %.0f MB",
                version,
                served - published,
                swaps[-1]["peak_rss_bytes"] / 2**20,
            )
            time.sleep(args.gap_s)
        client.stop()
        sampler.stop()
    finally:
        admin.close()
        server.terminate()
        server.wait(timeout=30)
        server_log.close()
        shutil.rmtree(work, ignore_errors=True)

    windows = [(s["published_s"] + t_origin, s["served_s"] + t_origin) for s in swaps]
    during = [e for t, e, _ in client.records if any(a <= t <= b for a, b in windows)]
    steady = [e for t, e, _ in client.records if steady_start <= t <= steady_end]
    peaks = [s["peak_rss_bytes"] for s in swaps]
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_end": os.getloadavg(),
        },
        "bundle": {
            "items": args.items,
            "dim": args.dim,
            "hnsw": hnsw.model_dump(),
            "bytes_on_disk": bundle_bytes,
            "synthetic": True,
        },
        "setup": {
            "swaps": args.swaps,
            "clients": args.clients,
            "users": args.users,
            "k": 100,
            "watch_interval_s": WATCH_INTERVAL_S,
            "cpu_workers": 2,
            "session_store": "in-memory",
        },
        "rss_no_bundle_bytes": rss_empty,
        "rss_one_bundle_bytes": rss_one,
        "bundle_rss_bytes": rss_one - rss_empty,
        "peak_rss_during_swap_bytes": max(peaks),
        "peak_ratio": max(peaks) / rss_one,
        "peak_ratio_median": statistics.median(peaks) / rss_one,
        "rss_after_last_swap_bytes": swaps[-1]["rss_after_bytes"],
        "swaps": swaps,
        "latency_steady": latency_summary(steady),
        "latency_during_swap": latency_summary(during),
        "load_stages": stages,
        "errors": len(client.errors),
        "error_examples": client.errors[:5],
        "rss_trace": [
            (t - t_origin, rss) for t, rss in sampler.samples[:: max(1, len(sampler.samples) // 4000)]
        ],
        "latency_trace": [(t - t_origin, e) for t, e, _ in client.records],
    }
    result["latency_ratio_p50"] = result["latency_during_swap"]["p50_ms"] / result["latency_steady"]["p50_ms"]
    result["latency_ratio_p99"] = result["latency_during_swap"]["p99_ms"] / result["latency_steady"]["p99_ms"]
    return result


# --- reporting --------------------------------------------------------------------------------


def mb(value: float) -> str:
    return f"{value / 2**20:.0f} MB"


def report(r: dict[str, Any]) -> str:
    b, s, steady, during = r["bundle"], r["setup"], r["latency_steady"], r["latency_during_swap"]
    lines = [
        "# Swap benchmark",
        "",
        "Generated by `bench/swap.py`; do not edit by hand. One `nsprecall serve` process,",
        f"{s['clients']} closed-loop clients posting `/v1/recall` (k={s['k']}, {s['users']} users with",
        f"history, {s['session_store']} session store) while {s['swaps']} bundles are published one",
        f"after another. Machine: {r['machine']['cpus']} CPUs, shared with other work (load average",
        f"{r['machine']['load_average_at_end'][0]:.1f} at the end).",
        "",
        f"Bundle: **synthetic**, {b['items']:,} items, dim {b['dim']}, HNSW M={b['hnsw']['M']}, "
        f"ef_construction={b['hnsw']['ef_construction']}; {mb(b['bytes_on_disk'])} on disk. The encoder is "
        "an item-embedding mean (one table row per item), not the trained NSP network: its weights "
        "scale with the catalog like the real one's item table, its compute is smaller.",
        "",
        "## Memory (VmRSS / VmHWM from /proc)",
        "",
        "| | RSS |",
        "|---|---|",
        f"| process, no bundle loaded | {mb(r['rss_no_bundle_bytes'])} |",
        f"| one bundle loaded (steady state) | {mb(r['rss_one_bundle_bytes'])} |",
        f"| of which the bundle | {mb(r['bundle_rss_bytes'])} |",
        f"| peak during a swap (max over {s['swaps']}) | {mb(r['peak_rss_during_swap_bytes'])} |",
        f"| after the last swap settled | {mb(r['rss_after_last_swap_bytes'])} |",
        "",
        f"**Peak during swap / one bundle = {r['peak_ratio']:.2f}** (median over swaps "
        f"{r['peak_ratio_median']:.2f}). The design bound is two bundles: "
        f"(no bundle + 2 x bundle) / one bundle = "
        f"{(r['rss_no_bundle_bytes'] + 2 * r['bundle_rss_bytes']) / r['rss_one_bundle_bytes']:.2f}.",
        "",
        "| swap to | publish → served | peak RSS | VmHWM | RSS 2 s later |",
        "|---|---|---|---|---|",
    ]
    for w in r["swaps"]:
        lines.append(
            f"| {w['version']} | {w['swap_s']:.2f} s | {mb(w['peak_rss_bytes'])} | {mb(w['vmhwm_bytes'])} "
            f"| {mb(w['rss_after_bytes'])} |"
        )
    lines += [
        "",
        "## Recall latency",
        "",
        "| | requests | p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in (("steady state", steady), ("during a swap (publish → served)", during)):
        lines.append(
            f"| {name} | {p['n']} | {p['p50_ms']:.1f} ms | {p['p95_ms']:.1f} ms | {p['p99_ms']:.1f} ms "
            f"| {p['max_ms']:.1f} ms |"
        )
    lines += [
        "",
        f"**During swap / steady: p50 x {r['latency_ratio_p50']:.2f}, p99 x {r['latency_ratio_p99']:.2f}.** "
        f"Failed requests: {r['errors']}.",
        "",
        "## Where a swap stalls requests",
        "",
        "Loading the same bundle in the benchmark process, one step at a time, while another thread",
        "wakes every millisecond: a step that holds the GIL stalls the event loop and every request",
        "thread for as long as the longest pause that thread sees.",
        "",
        "| step | seconds | longest stall |",
        "|---|---|---|",
    ]
    for stage in r["load_stages"]:
        lines.append(f"| {stage['step']} | {stage['seconds']:.2f} | {stage['longest_stall_ms']:.0f} ms |")
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (memory, latency) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    t, rss = zip(*r["rss_trace"], strict=True)
    memory.plot(t, np.asarray(rss) / 2**20, lw=0.8, color="tab:blue")
    memory.axhline(r["rss_one_bundle_bytes"] / 2**20, color="grey", ls="--", lw=0.8, label="one bundle")
    memory.set_ylabel("VmRSS (MB)")
    memory.legend(loc="lower right")
    lt, le = zip(*r["latency_trace"], strict=True)
    latency.scatter(lt, np.asarray(le) * 1000, s=2, color="tab:orange")
    latency.set_yscale("log")
    latency.set_ylabel("recall latency (ms)")
    latency.set_xlabel("seconds since bundle 1 was published")
    for swap in r["swaps"]:
        for axis in (memory, latency):
            axis.axvspan(swap["published_s"], swap["served_s"], color="tab:red", alpha=0.2, lw=0)
    memory.set_title(f"bundle swaps (shaded: publish → served), {r['bundle']['items']:,} synthetic items")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--swaps", type=int, default=5)
    parser.add_argument("--clients", type=int, default=2, help="closed-loop client threads")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--steady-s", type=float, default=20.0)
    parser.add_argument("--gap-s", type=float, default=2.0, help="pause between swaps (after settling)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in result.items() if k not in ("rss_trace", "latency_trace")}
    (args.out / "swap.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = report(result)
    (args.out / "swap.md").write_text(text + "\n")
    plot(result, args.out / "swap.png")
    print(text)


if __name__ == "__main__":
    main()
