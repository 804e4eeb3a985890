"""Ablations: (a) the paper's table on the full TBGRecall structure, one part removed per row,
and (b) the training options, each toggled from the served default model, on the session world
and on the Instacart sample, every row with several seeds and its paired difference to the
reference row (full / default).

    .venv/bin/python bench/ablations.py [--seeds 0] [--paper-seeds 0 1 2] [--datasets session instacart]
                                        [--parts paper options] [--epochs N] [--smoke]

The rows are data (``PAPER_ROWS``, ``OPTION_ROWS``: label -> ``TrainConfig`` overrides); an
option row that trains exactly as the default does (its value is the default's, or it is a
no-op there) is skipped and listed as such. Option rows train up to ``--epochs`` (10), paper
rows as ``bench/quality.py``'s ``DATASETS`` say (the session world takes its "synthetic" entry:
3 epochs; Instacart 20) unless ``--paper-epochs``; every row stops early after ``--patience``
(2) epochs without a better validation HR@100 unless the row sets its own; the epoch
is selected on validation HR@100, and every row is judged on the test cases with seen items
kept and excluded (``bench/quality.py``'s ``train_and_judge``).

Each finished run is cached as JSON under ``var/bench/ablations/`` so an interrupted run
resumes. Writes ``docs/benchmarks/ablations.{md,json,png}``; ``--smoke`` runs a tiny version end
to end into ``var/bench/ablations-smoke/`` instead, leaving ``docs/benchmarks`` alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import (  # noqa: E402
    Interval,
    binomial_half_width,
    cached,
    config_digest,
    generate_world,
    prepared,
    provenance,
    synthetic_world,
    timed,
)
from quality import ABLATIONS, DATASETS, FULL, DatasetSpec, train_and_judge  # noqa: E402

from model_export.data import Dataset, load_dataset  # noqa: E402
from model_export.synth import SESSION_WORLD  # noqa: E402
from model_export.train import TrainConfig  # noqa: E402

log = logging.getLogger("bench.ablations")

NAME = "ablations"
DOCS = ROOT / "docs" / "benchmarks"

# (a) The paper's table: the full structure, then one part removed per row.
PAPER_ROWS: dict[str, dict[str, Any]] = {
    **{label: {"model": {**FULL["model"], **overrides}} for label, overrides in ABLATIONS.items()},
    "full + cascade loss": {**FULL, "loss": "cascade"},
}
# (b) Training options on the served default model. Both values of each option are listed: the
# one equal to the default is skipped, so the table follows a change of default by itself.
OPTION_ROWS: dict[str, dict[str, Any]] = {
    "default": {},
    "negatives: popularity": {"negative_sampler": "popularity"},
    "negatives: uniform": {"negative_sampler": "uniform"},
    "in-batch negatives on": {"in_batch_negatives": True},
    "in-batch negatives off": {"in_batch_negatives": False},
    "logQ correction off": {"logq_correction": False},
    "warm-up 50 steps + cosine decay": {"warmup_steps": 50, "lr_decay": "cosine"},
    "no warm-up, constant lr": {"warmup_steps": 0, "lr_decay": "none"},
    "early stopping (patience 2)": {"patience": 2},
    "drop seen targets on": {"drop_seen_targets": True},
    "drop seen targets off": {"drop_seen_targets": False},
    # What a deployment that excludes seen items would train: both options that help there.
    "drop seen targets + in-batch negatives": {"drop_seen_targets": True, "in_batch_negatives": True},
    "max_sessions 40": {"max_sessions": 40},
    "max_sessions 20": {"max_sessions": 20},
    "scene_norm off": {"scene_norm": False},
}
PARTS: dict[str, tuple[str, dict[str, dict[str, Any]], str]] = {
    "paper": ("The paper's table: full TBGRecall structure, one part removed per row", PAPER_ROWS, "full"),
    "options": ("Training options, each toggled from the served default", OPTION_ROWS, "default"),
}
SMOKE_INSTACART_USERS = 100
# (title, view, metric) of each quality column
COLUMNS = (
    ("HR@20", "all", "hr@20"),
    ("HR@100", "all", "hr@100"),
    ("Recall@100", "all", "recall@100"),
    ("HR@100 seen excluded", "unseen", "hr@100"),
    ("NDCG@100", "all", "ndcg@100"),
)


def dataset_specs(args: argparse.Namespace) -> dict[str, DatasetSpec]:
    """The session world (sized by ``--users/--items/--days``, with quality.py's synthetic
    split and epochs) and quality.py's Instacart sample (under ``--smoke`` its first
    ``SMOKE_INSTACART_USERS`` users only)."""
    _, world = synthetic_world(args, SESSION_WORLD)

    def prepare_small_instacart(out: Path) -> None:
        _prepare_small(DATASETS["instacart"], out)

    return {
        "session": dataclasses.replace(DATASETS["synthetic"], prepare=generate_world(world)),
        "instacart": (
            dataclasses.replace(DATASETS["instacart"], prepare=prepare_small_instacart)
            if args.smoke
            else DATASETS["instacart"]
        ),
    }


def _prepare_small(spec: DatasetSpec, out: Path) -> None:
    """``spec``'s data cut to its first users (by id) and the items they engaged with."""
    import pandas as pd

    spec.prepare(out)
    events = pd.read_csv(out / "events.csv", dtype=str)
    users = sorted(events["user_id"].unique())[:SMOKE_INSTACART_USERS]
    events = events[events["user_id"].isin(users)]
    catalog = pd.read_csv(out / "catalog.csv", dtype=str)
    catalog[catalog["item_id"].isin(events["item_id"])].to_csv(out / "catalog.csv", index=False)
    events.to_csv(out / "events.csv", index=False)


def data_key(args: argparse.Namespace, name: str) -> str:
    if name == "session":
        return f"session-{synthetic_world(args, SESSION_WORLD)[0]}"
    return f"{name}-u{SMOKE_INSTACART_USERS}" if args.smoke else name


def load(work: Path, key: str, spec: DatasetSpec) -> Dataset:
    data = prepared(work / "data" / key, spec.prepare)
    return load_dataset(data / "events.csv", data / "catalog.csv", spec.val_days, spec.test_days)


def config_for(
    overrides: dict[str, Any], seed: int, epochs: int, model: dict[str, Any], patience: int | None
) -> TrainConfig:
    """A row's config: channels and baselines off (this page judges the encoder alone); every
    row stops early after ``patience`` epochs without improvement unless it says otherwise."""
    row = {"patience": patience, **overrides}
    row["model"] = {**row.get("model", {}), **model}
    return TrainConfig(seed=seed, epochs=epochs, channels=False, baselines=False, **row)


def effective(config: TrainConfig) -> TrainConfig:
    """``config`` with the settings that cannot change its training set as the default's, so a
    no-op row compares equal to the reference: the log Q correction with uniform draws alone
    (``TrainConfig.uniform_negatives_alone``), and a patience that cannot stop before the
    last epoch (a stop needs ``patience`` epochs after the best, which is at least the first)."""
    default = TrainConfig()
    if config.uniform_negatives_alone:
        config = dataclasses.replace(config, logq_correction=default.logq_correction)
    if config.patience is not None and config.patience >= config.epochs - 1:
        config = dataclasses.replace(config, patience=None)
    return config


def plan_rows(
    rows: dict[str, dict[str, Any]], reference: str, epochs: int, model: dict[str, Any], patience: int | None
) -> tuple[list[str], list[str]]:
    """(labels to run, the reference first; labels skipped as trained exactly as the reference)."""
    base = effective(config_for(rows[reference], 0, epochs, model, patience))
    run: list[str] = [reference]
    skipped: list[str] = []
    for label, overrides in rows.items():
        if label == reference:
            continue
        same = effective(config_for(overrides, 0, epochs, model, patience)) == base
        (skipped if same else run).append(label)
    return run, skipped


# Instacart's validation HR@100 wobbles over the first epochs before its best (epochs 6-8 of 20
# in our runs), so a patience of 2 would stop it at epoch 3.
MIN_PATIENCE = {"instacart": 5}


def dataset_patience(args: argparse.Namespace, name: str) -> int | None:
    if args.patience is None:
        return None
    return max(args.patience, MIN_PATIENCE.get(name, 0))


def part_epochs(args: argparse.Namespace, part: str) -> int | None:
    """The epochs a part asks for (None: the dataset's own)."""
    epochs: int | None = args.paper_epochs if part == "paper" else args.epochs
    return epochs


def part_seeds(args: argparse.Namespace, part: str) -> list[int]:
    seeds: list[int] = args.paper_seeds if part == "paper" and args.paper_seeds else args.seeds
    return seeds


def run_all(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    specs = dataset_specs(args)
    plans = {}
    for name in args.datasets:
        for part in args.parts:
            epochs = part_epochs(args, part) or specs[name].epochs
            _, rows, reference = PARTS[part]
            run, skipped = plan_rows(rows, reference, epochs, args.model, dataset_patience(args, name))
            if args.rows:  # the reference row always runs: every row is compared with it
                run = [label for label in run if label == reference or label in args.rows]
            plans[name, part] = (run[: args.max_rows], skipped, epochs)
    total = sum(len(run) * len(part_seeds(args, part)) for (_, part), (run, _, _) in plans.items())
    done = 0
    results: dict[str, Any] = {}
    for name in args.datasets:
        key = data_key(args, name)
        dataset = load(work, key, specs[name])
        entry: dict[str, Any] = {
            "epochs": {part: plans[name, part][2] for part in args.parts},
            "users": len(dataset.train),
            "items": dataset.vocab.n_items,
            "cases": {"val": len(dataset.val), "test": len(dataset.test)},
            "parts": {},
        }
        for part in args.parts:
            _, rows, reference = PARTS[part]
            labels, skipped, epochs = plans[name, part]
            out: dict[str, Any] = {"reference": reference, "skipped": skipped, "rows": {}}
            for label in labels:
                runs = {}
                for seed in part_seeds(args, part):
                    done += 1
                    config = config_for(rows[label], seed, epochs, args.model, dataset_patience(args, name))
                    slug = f"{part}-seed{seed}-{config_digest(config)}"
                    if args.report_only and not (work / key / f"{slug}.json").is_file():
                        continue
                    log.info("[%d/%d] %s / %s / %s / seed %d", done, total, name, part, label, seed)
                    runs[str(seed)] = cached(
                        work / key / f"{slug}.json",
                        timed(partial(train_and_judge, dataset, config, work / "runs" / key / slug, False)),
                    )
                if runs:
                    out["rows"][label] = {"overrides": rows[label], "runs": runs}
            if reference not in out["rows"]:
                continue
            for row in out["rows"].values():
                row["stats"] = row_stats(row["runs"], out["rows"][reference]["runs"])
            entry["parts"][part] = out
        results[name] = entry
    return results


def row_stats(runs: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Mean, sd and 95 % interval of every column, and of HR@100's per-seed difference to the
    reference row (same seed paired)."""
    stats: dict[str, Any] = {
        f"{view}.{metric}": Interval.of([r[view][metric] for r in runs.values()]).to_dict()
        for _, view, metric in COLUMNS
    }
    stats["train_seconds"] = Interval.of([r["train_seconds"] for r in runs.values()]).to_dict()
    diffs = {s: r["all"]["hr@100"] - reference[s]["all"]["hr@100"] for s, r in runs.items() if s in reference}
    stats["hr@100_minus_reference"] = {"per_seed": diffs, **Interval.of(list(diffs.values())).to_dict()}
    return stats


def _difference(runs: dict[str, Any], reference: dict[str, Any]) -> str:
    diffs = [r["all"]["hr@100"] - reference[s]["all"]["hr@100"] for s, r in runs.items() if s in reference]
    interval = Interval.of(diffs)
    if interval.n == 1:
        return f"{interval.mean:+.4f} (one seed)"
    mark = " **beyond noise**" if interval.excludes(0.0) else ""
    return f"{interval.mean:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}]{mark}"


def write_report(results: dict[str, Any]) -> str:
    settings, run = results["settings"], results["provenance"]
    n_runs = sum(
        len(row["runs"])
        for entry in results["datasets"].values()
        for part in entry["parts"].values()
        for row in part["rows"].values()
    )
    lines = [
        "# Ablations and training options",
        "",
        f"Generated by `bench/ablations.py` on {run['generated_at']} from commit {run['commit']}"
        + (" (with uncommitted changes)" if run["dirty"] else "")
        + "; do not edit by hand. Regenerate with `.venv/bin/python bench/ablations.py` "
        f"(`{results['command']}` made this page).",
        "",
        f"Seeds {settings['seeds']} (paper rows: {settings['paper_seeds'] or settings['seeds']}, "
        f"early stopping after {settings['patience']} epochs without improvement, Instacart after "
        f"{MIN_PATIENCE['instacart']}); each row trains "
        "the encoder alone (no channels), the epoch "
        "selected on validation HR@100, and is judged on the test cases over the full catalog "
        "(`bench/quality.py`'s harness). Session world: "
        f"{settings['users']} users x {settings['items']} items x {settings['days']} days, every "
        "session-context knob at 1 (`model_export.synth.SESSION_WORLD`, world seed 0). Instacart: "
        "the order sample (`model_export/instacart.py`), 14 validation days, 1 test day. Option rows "
        "that train exactly as the default are skipped and listed under their table: an option at its "
        "default value, the log Q correction where negatives are uniform alone (then it is a no-op), "
        "and a patience of at least epochs - 1 (it cannot stop before the last epoch).",
        "",
        f"**Runtime**: this invocation {results['wall_seconds'] / 60:.1f} min; the {n_runs} training "
        f"runs on the page took {results['run_seconds'] / 60:.1f} min of measured wall time in all "
        "(cached runs included), on a 2-core machine shared with other jobs: train s are indicative.",
        "",
        "**Noise**: mean ± sd over seeds; 95 % CI = mean ± t(0.975, n-1)·sd/√n (no interval with one "
        "seed). Δ HR@100 is the row minus the reference row with the same seed, its 95 % CI from those "
        "paired differences; **beyond noise** marks an interval that excludes 0. All rows of a dataset "
        "are judged on the same test cases, so the case-sampling noise (below, per dataset) matters "
        "for generalising, not for comparing rows.",
        "",
        "![HR@100 per row](ablations.png)",
        "",
    ]
    for name, entry in results["datasets"].items():
        cases = entry["cases"]["test"]
        lines += [
            f"## {name}",
            "",
            f"{entry['users']} training users, {entry['items']} items, {entry['cases']['val']} validation "
            f"and {cases} test cases; epochs (max): "
            + ", ".join(f"{part} {epochs}" for part, epochs in entry["epochs"].items())
            + f". Case-sampling noise of an HR near 0.5: "
            f"±{binomial_half_width(0.5, cases):.3f} (95 %).",
            "",
        ]
        for part_name, part in entry["parts"].items():
            lines += _part_table(part_name, part)
    return "\n".join(lines)


def _part_table(part_name: str, part: dict[str, Any]) -> list[str]:
    title, rows, _ = PARTS[part_name]
    reference = part["rows"][part["reference"]]["runs"]
    lines = [
        f"### {title}",
        "",
        "| row | seeds | "
        + " | ".join(title for title, _, _ in COLUMNS[:2])
        + f" | HR@100 95 % CI | Δ HR@100 vs {part['reference']} (95 % CI) | "
        + " | ".join(title for title, _, _ in COLUMNS[2:])
        + " | train s | best epochs |",
        "|---|---|" + "---|" * (len(COLUMNS) + 4),
    ]
    for label, row in part["rows"].items():
        runs = row["runs"]
        cells = [
            Interval.of([r[view][metric] for r in runs.values()]).mean_sd() for _, view, metric in COLUMNS
        ]
        hr100 = Interval.of([r["all"]["hr@100"] for r in runs.values()])
        difference = "-" if label == part["reference"] else _difference(runs, reference)
        cells[2:2] = [hr100.ci(), difference]
        cells.append(Interval.of([r["train_seconds"] for r in runs.values()]).mean_sd(0))
        cells.append(", ".join(f"{r['best_epoch']:g}" for r in runs.values()))
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    lines.append("")
    if part["skipped"]:
        skipped = "; ".join(f"{label} ({_overrides(rows[label])})" for label in part["skipped"])
        lines += [f"Skipped, they train exactly as {part['reference']} here: {skipped}.", ""]
    return lines


def _overrides(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "no change"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = results["datasets"]
    parts = list(results["settings"]["parts"])
    fig, axes = plt.subplots(
        len(datasets), len(parts), figsize=(6.5 * len(parts), 0.5 + 3.2 * len(datasets)), squeeze=False
    )
    for axes_row, (name, entry) in zip(axes, datasets.items(), strict=True):
        for ax, part_name in zip(axes_row, parts, strict=True):
            if part_name not in entry["parts"]:  # --report-only before any run of the part
                ax.set_axis_off()
                continue
            part = entry["parts"][part_name]
            labels, means, errors, colours = [], [], [], []
            for label, row in part["rows"].items():
                interval = Interval.of([r["all"]["hr@100"] for r in row["runs"].values()])
                labels.append(label)
                means.append(interval.mean)
                errors.append(0.0 if math.isnan(interval.half_width) else interval.half_width)
                colours.append("tab:orange" if label == part["reference"] else "tab:blue")
            ax.barh(labels, means, xerr=errors if any(errors) else None, color=colours, capsize=3)
            ax.axvline(means[0], color="tab:orange", linestyle="--", linewidth=1)
            ax.invert_yaxis()
            low = min(m - e for m, e in zip(means, errors, strict=True))
            high = max(m + e for m, e in zip(means, errors, strict=True))
            ax.set_xlim(max(0.0, low - 0.05), min(1.0, high + 0.05))
            ax.set_xlabel("test HR@100, seen kept (error bars: 95 % CI over seeds)")
            ax.set_title(f"{name}: {part_name}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="option rows")
    parser.add_argument(
        "--datasets", nargs="+", default=["session", "instacart"], choices=["session", "instacart"]
    )
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument(
        "--epochs", type=int, default=10, help="option rows, every dataset (early stopping cuts it short)"
    )
    parser.add_argument(
        "--paper-epochs", type=int, default=None, help="paper rows: override the dataset's epochs"
    )
    parser.add_argument(
        "--paper-seeds", nargs="*", type=int, default=[0, 1, 2], help="paper rows (empty: --seeds)"
    )
    parser.add_argument(
        "--patience", type=int, default=2, help="early stopping for every row that does not set its own"
    )
    parser.add_argument("--users", type=int, default=2000, help="session world size")
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--report-only", action="store_true", help="write the page from the finished runs, train nothing"
    )
    parser.add_argument("--rows", nargs="*", default=None, help="only these row labels (and the reference)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run end to end, into var/bench/")
    args = parser.parse_args()
    args.model, args.max_rows = {}, None
    command = " ".join(["bench/ablations.py", *sys.argv[1:]])
    work = ROOT / "var" / "bench" / NAME
    out = DOCS
    if args.smoke:
        args.seeds, args.epochs, args.paper_epochs, args.paper_seeds, args.max_rows = [0], 1, 1, None, 2
        args.users, args.items, args.days = 300, 1000, 14
        args.model = {"dim": 16}
        work = out = ROOT / "var" / "bench" / f"{NAME}-smoke"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()
    run = provenance()
    datasets = run_all(args, work)
    run_seconds = sum(
        r.get("wall_seconds", 0.0)
        for entry in datasets.values()
        for part in entry["parts"].values()
        for row in part["rows"].values()
        for r in row["runs"].values()
    )
    results = {
        "provenance": run,
        "command": command,
        "settings": {
            "seeds": args.seeds,
            "parts": args.parts,
            "epochs": args.epochs,
            "paper_epochs": args.paper_epochs,
            "paper_seeds": args.paper_seeds,
            "patience": args.patience,
            "users": args.users,
            "items": args.items,
            "days": args.days,
            "model": args.model,
        },
        "wall_seconds": time.perf_counter() - started,
        "run_seconds": run_seconds,
        "datasets": datasets,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(results, indent=2))
    report = write_report(results)
    (out / f"{NAME}.md").write_text(report + "\n")
    plot(results, out / f"{NAME}.png")
    log.info("wrote %s (%.0f s)", out / f"{NAME}.md", results["wall_seconds"])


if __name__ == "__main__":
    main()
