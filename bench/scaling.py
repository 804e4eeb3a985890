"""Scaling on the session world: NSP's HR@100 against model size (dim x layers) and against
training data (training users), each with a least-squares line of HR@100 on log10(x).

    .venv/bin/python bench/scaling.py [--seeds 0] [--sizes 32x1 64x1 64x2 128x2]
                                      [--fractions 0.125 0.25 0.5 1] [--users 2000] [--epochs 8]
                                      [--smoke]

One session world (every session-context knob at 1, world seed 0) of ``--users`` users. The size
sweep trains on all its training users; the data sweep trains the default model size
(``--data-size``, the ``NSPConfig`` default) on a random subset of the training users
(``Dataset.train`` only; nested: each fraction's users include the smaller fractions', drawn
with the training seed). Validation and test cases stay the same for every point, so every
point is judged on the same cases; they include users whose history was not trained on, which
the encoder reads at inference like any new user's. The size sweep's default size and the data
sweep's full fraction are the same run (cached once).

Each finished run is cached as JSON under ``var/bench/scaling/`` so an interrupted run resumes.
Writes ``docs/benchmarks/scaling.{md,json,png}``; ``--smoke`` runs a tiny version end to end into
``var/bench/scaling-smoke/`` instead, leaving ``docs/benchmarks`` alone.
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

import numpy as np
from torch import nn

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
    t975,
    timed,
)
from quality import train_and_judge  # noqa: E402

from model_export.data import Dataset, load_dataset, popularity_by_scene  # noqa: E402
from model_export.model import NSPConfig  # noqa: E402
from model_export.synth import SESSION_WORLD  # noqa: E402
from model_export.train import TrainConfig, build_model  # noqa: E402

log = logging.getLogger("bench.scaling")

NAME = "scaling"
DOCS = ROOT / "docs" / "benchmarks"
VAL_DAYS, TEST_DAYS = 1, 1
POPULARITY_TOP = 2000  # as load_dataset keeps
VIEWS = {"all": "seen kept", "unseen": "seen excluded"}
SWEEPS = {"size": "parameters", "data": "training users"}


def parse_size(text: str) -> tuple[int, int]:
    dim, _, layers = text.partition("x")
    return int(dim), int(layers)


def world_key(args: argparse.Namespace) -> str:
    return f"session-{synthetic_world(args, SESSION_WORLD)[0]}"


def load_world(args: argparse.Namespace, work: Path) -> Dataset:
    _, world = synthetic_world(args, SESSION_WORLD)
    data = prepared(work / "data" / world_key(args), generate_world(world))
    return load_dataset(data / "events.csv", data / "catalog.csv", VAL_DAYS, TEST_DAYS)


def subset(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """``dataset`` with a random ``fraction`` of its training users (nested across fractions
    for one seed); validation and test cases unchanged."""
    if fraction >= 1.0:
        return dataset
    users = sorted(dataset.train)
    order = np.random.default_rng(seed).permutation(len(users))
    keep = [users[i] for i in order[: max(1, round(fraction * len(users)))]]
    train = {user: dataset.train[user] for user in keep}
    return dataclasses.replace(dataset, train=train, popularity=popularity_by_scene(train, POPULARITY_TOP))


def parameters(dataset: Dataset, config: TrainConfig) -> dict[str, int]:
    """The encoder's parameters, all and outside the embedding tables (the item table is most
    of a small model)."""
    model = build_model(dataset.vocab, config)
    tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    total = sum(p.numel() for p in model.parameters())
    return {"parameters": total, "non_embedding": total - sum(t.numel() for t in tables)}


def plan(args: argparse.Namespace) -> list[tuple[str, tuple[int, int], float, int]]:
    """(sweep, size, fraction, seed) of every point, the shared point listed once (size sweep)."""
    points = [("size", size, 1.0, seed) for size in args.sizes for seed in args.seeds]
    points += [
        ("data", args.data_size, fraction, seed)
        for fraction in args.fractions
        for seed in args.seeds
        if not (fraction >= 1.0 and args.data_size in args.sizes)
    ]
    return points


def run_all(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    dataset = load_world(args, work)
    points = plan(args)
    results: dict[str, Any] = {
        "users": len(dataset.train),
        "items": dataset.vocab.n_items,
        "cases": {"val": len(dataset.val), "test": len(dataset.test)},
        "size": {},
        "data": {},
    }
    test_users = {case.user_id for case in dataset.test}
    for i, (sweep, (dim, layers), fraction, seed) in enumerate(points, start=1):
        config = TrainConfig(
            seed=seed,
            epochs=args.epochs,
            patience=args.patience,
            channels=False,
            baselines=False,
            model={"dim": dim, "n_layers": layers},
        )
        data = subset(dataset, fraction, seed)
        key = f"{dim}x{layers}-f{fraction:g}-seed{seed}-{config_digest(config)}"
        log.info(
            "[%d/%d] %s sweep: %dx%d, %.3g of the users, seed %d",
            i,
            len(points),
            sweep,
            dim,
            layers,
            fraction,
            seed,
        )
        result = cached(
            work / world_key(args) / f"{key}.json",
            timed(partial(train_and_judge, data, config, work / world_key(args) / "runs" / key, False)),
        )
        point = {
            "dim": dim,
            "layers": layers,
            "fraction": fraction,
            "training_users": len(data.train),
            "test_users_trained_on": len(test_users & set(data.train)) / len(test_users)
            if test_users
            else 0.0,
            **parameters(dataset, config),
        }
        label = f"{dim}x{layers}" if sweep == "size" else f"{fraction:g}"
        entry = results[sweep].setdefault(label, {**point, "runs": {}})
        entry["runs"][str(seed)] = result
        if sweep == "size" and (dim, layers) == args.data_size:
            results["data"].setdefault(f"{fraction:g}", {**point, "runs": {}})["runs"][str(seed)] = result
    results["data"] = dict(sorted(results["data"].items(), key=lambda kv: kv[1]["fraction"]))
    for sweep, axis in (("size", "parameters"), ("data", "training_users")):
        results[f"{sweep}_fit"] = {view: fit(results[sweep], axis, view) for view in VIEWS}
    return results


def fit(points: dict[str, Any], axis: str, view: str) -> dict[str, Any] | None:
    """Least squares of HR@100 on log10(``axis``) over every (point, seed): slope per decade,
    its 95 % interval from the residuals (t with n-2 degrees of freedom), and each seed's own
    slope. A "clear trend" needs the interval to exclude 0 and every seed's slope to share
    its sign."""
    rows = [
        (math.log10(p[axis]), r[view]["hr@100"], seed)
        for p in points.values()
        for seed, r in p["runs"].items()
    ]
    x = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    if len(set(x.tolist())) < 2:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    n = len(rows)
    half_width = math.nan
    if n > 2:
        residuals = y - (slope * x + intercept)
        se = math.sqrt(float(residuals @ residuals) / (n - 2) / float(((x - x.mean()) ** 2).sum()))
        half_width = t975(n - 2) * se
    per_seed = {}
    for seed in sorted({r[2] for r in rows}):
        xs = np.array([r[0] for r in rows if r[2] == seed])
        ys = np.array([r[1] for r in rows if r[2] == seed])
        if len(set(xs.tolist())) >= 2:
            per_seed[seed] = float(np.polyfit(xs, ys, 1)[0])
    signs = {math.copysign(1.0, s) for s in per_seed.values()}
    clear = bool(not math.isnan(half_width) and abs(slope) > half_width and len(signs) == 1)
    return {
        "slope_per_decade": float(slope),
        "intercept": float(intercept),
        "slope_ci95": None
        if math.isnan(half_width)
        else [float(slope - half_width), float(slope + half_width)],
        "per_seed_slopes": per_seed,
        "points": n,
        "clear_trend": clear,
    }


def write_report(results: dict[str, Any]) -> str:
    settings, run, world = results["settings"], results["provenance"], results["world"]
    cases = world["cases"]["test"]
    n_runs = results["runs"]
    default = world["size"].get(_size_label(settings["data_size"]))
    noise = ""
    if default and len(default["runs"]) > 1:
        interval = Interval.of([r["all"]["hr@100"] for r in default["runs"].values()])
        noise = f"the seed sd of HR@100 at the default size is {interval.sd:.4f}; "
    lines = [
        "# Scaling: model size and training data",
        "",
        f"Generated by `bench/scaling.py` on {run['generated_at']} from commit {run['commit']}"
        + (" (with uncommitted changes)" if run["dirty"] else "")
        + "; do not edit by hand. Regenerate with `.venv/bin/python bench/scaling.py` "
        f"(`{results['command']}` made this page).",
        "",
        f"NSP (`TrainConfig` defaults but for dim and layers) on the session world: {settings['users']} "
        f"users x {settings['items']} items x {settings['days']} days, every session-context knob at 1 "
        f"(world seed 0); {world['users']} training users, {world['cases']['val']} validation and {cases} "
        f"test cases. Epochs: {settings['epochs']} for every point, the best selected on validation "
        f"HR@100; seeds {settings['seeds']}. The data sweep trains the {_size_label(settings['data_size'])} "
        "model on a random subset of the training users (nested across fractions, drawn with the training "
        "seed; each epoch passes once over the subset, so smaller subsets also train fewer steps). "
        "Validation and test cases are the same for every point; they include users whose history was "
        "not trained on (the share that was is in the table), which the encoder reads at inference as it "
        "would any new user's.",
        "",
        f"**Runtime**: this invocation {results['wall_seconds'] / 60:.1f} min; the {n_runs} training runs "
        f"on the page took {results['run_seconds'] / 60:.1f} min of measured wall time in all (cached runs "
        "included), on a 2-core machine shared with other jobs: train s are indicative.",
        "",
        f"**Noise**: {noise}the case-sampling noise of an HR@100 near 0.5 over {cases} test cases is "
        f"±{binomial_half_width(0.5, cases):.3f} (95 %; the same cases judge every point, so it shifts "
        "all points together more than it tilts the line). The slope's 95 % interval comes from the "
        "scatter of the points about the line (t with points - 2 degrees of freedom); a **clear trend** "
        "needs that interval to exclude 0 and every seed's own slope to have the same sign.",
        "",
        "![HR@100 against parameters and training users](scaling.png)",
        "",
    ]
    for sweep, axis in SWEEPS.items():
        lines += _fit_lines(sweep, axis, world[f"{sweep}_fit"])
        lines += _table(sweep, world[sweep])
    return "\n".join(lines)


def _size_label(size: list[int] | tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _fit_lines(sweep: str, axis: str, fits: dict[str, Any]) -> list[str]:
    title = "Model size" if sweep == "size" else "Training data"
    lines = [f"## {title}", ""]
    for view, name in VIEWS.items():
        f = fits[view]
        if f is None:
            lines.append(f"- HR@100 {name}: fewer than two distinct {axis}, no line.")
            continue
        interval = (
            f" (95 % CI [{f['slope_ci95'][0]:+.4f}, {f['slope_ci95'][1]:+.4f}])" if f["slope_ci95"] else ""
        )
        seeds = ", ".join(f"{s:+.4f}" for s in f["per_seed_slopes"].values())
        verdict = "**clear trend**" if f["clear_trend"] else "no clear trend"
        lines.append(
            f"- HR@100 {name}: slope {f['slope_per_decade']:+.4f} per decade of {axis}{interval}, "
            f"per seed {seeds}: {verdict}."
        )
    return [*lines, ""]


def _table(sweep: str, points: dict[str, Any]) -> list[str]:
    head = (
        "| dim x layers | parameters | non-embedding |"
        if sweep == "size"
        else "| fraction | training users |"
    )
    lines = [
        head + " test users trained on | seeds | HR@100 seen kept | 95 % CI | HR@100 seen excluded | 95 % CI "
        "| Recall@100 seen kept | train s | best epochs |",
        "|---" * (head.count("|") - 1 + 9) + "|",
    ]
    for label, p in points.items():
        runs = p["runs"].values()
        cells = (
            [label, f"{p['parameters']:,}", f"{p['non_embedding']:,}"]
            if sweep == "size"
            else [label, str(p["training_users"])]
        )
        cells += [f"{p['test_users_trained_on']:.0%}", str(len(runs))]
        for view in VIEWS:
            interval = Interval.of([r[view]["hr@100"] for r in runs])
            cells += [interval.mean_sd(), interval.ci()]
        cells.append(Interval.of([r["all"]["recall@100"] for r in runs]).mean_sd())
        cells.append(Interval.of([r["train_seconds"] for r in runs]).mean_sd(0))
        cells.append(", ".join(f"{r['best_epoch']:g}" for r in runs))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    world = results["world"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (sweep, axis) in zip(axes, (("size", "parameters"), ("data", "training_users")), strict=True):
        points = list(world[sweep].values())
        xs = np.array([p[axis] for p in points], dtype=float)
        for (view, name), colour in zip(VIEWS.items(), ("tab:blue", "tab:orange"), strict=True):
            for p in points:
                ys = [r[view]["hr@100"] for r in p["runs"].values()]
                ax.scatter([p[axis]] * len(ys), ys, color=colour, s=14, alpha=0.6)
            means = [Interval.of([r[view]["hr@100"] for r in p["runs"].values()]).mean for p in points]
            ax.plot(xs, means, "o", color=colour, label=f"HR@100 {name} (mean)")
            f = world[f"{sweep}_fit"][view]
            if f is not None:
                line_x = np.geomspace(xs.min(), xs.max(), 20)
                ax.plot(
                    line_x,
                    f["slope_per_decade"] * np.log10(line_x) + f["intercept"],
                    "--",
                    color=colour,
                    label=f"fit: {f['slope_per_decade']:+.3f} per decade",
                )
        ax.set_xscale("log")
        ax.set_xlabel("parameters (log)" if sweep == "size" else "training users (log)")
        ax.set_ylabel("test HR@100 (full catalog)")
        ax.set_title("model size" if sweep == "size" else "training data")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_size = (NSPConfig.dim, NSPConfig.n_layers)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(32, 1), (64, 1), (64, 2), (128, 2)])
    parser.add_argument(
        "--data-size",
        type=parse_size,
        default=default_size,
        help="model of the data sweep (default: NSPConfig's)",
    )
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.125, 0.25, 0.5, 1.0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--patience",
        type=int,
        default=2,
        help="stop after this many epochs without a better validation HR@100",
    )
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--smoke", action="store_true", help="a tiny run end to end, into var/bench/")
    args = parser.parse_args()
    command = " ".join(["bench/scaling.py", *sys.argv[1:]])
    work = ROOT / "var" / "bench" / NAME
    out = DOCS
    if args.smoke:
        args.seeds, args.epochs = [0], 1
        args.sizes, args.data_size, args.fractions = [(16, 1), (16, 2)], (16, 1), [0.5, 1.0]
        args.users, args.items, args.days = 300, 1000, 14
        work = out = ROOT / "var" / "bench" / f"{NAME}-smoke"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()
    run = provenance()
    world = run_all(args, work)
    unique = {id(r): r for sweep in SWEEPS for p in world[sweep].values() for r in p["runs"].values()}
    results = {
        "provenance": run,
        "command": command,
        "settings": {
            "users": args.users,
            "items": args.items,
            "days": args.days,
            "epochs": args.epochs,
            "seeds": args.seeds,
            "sizes": args.sizes,
            "data_size": args.data_size,
            "fractions": args.fractions,
            "val_days": VAL_DAYS,
            "test_days": TEST_DAYS,
        },
        "wall_seconds": time.perf_counter() - started,
        "runs": len(unique),
        "run_seconds": sum(r.get("wall_seconds", 0.0) for r in unique.values()),
        "world": world,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(results, indent=2))
    report = write_report(results)
    (out / f"{NAME}.md").write_text(report + "\n")
    plot(results, out / f"{NAME}.png")
    log.info("wrote %s (%.0f s)", out / f"{NAME}.md", results["wall_seconds"])


if __name__ == "__main__":
    main()
