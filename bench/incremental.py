"""Training strategies over the synthetic world's day-by-day drift (the paper's strategy table).

    .venv/bin/python bench/incremental.py [--first-day 21] [--buckets 10] [--window-days 10]

One model is pretrained on the ``--pretrain-window`` days before ``--first-day``. Then every
day d from ``--first-day`` on, each strategy may update with everything logged before d, and
is judged on d (each user's first engaged session that day, full catalog, exact search):

- **no update**: the pretrained model, never touched again (new items stay unknown to it);
- **full retrain**: a fresh model on all history before d, as many epochs as the pretraining;
- **ideal incremental**: yesterday's model continued on every user's sessions of day d-1;
- **PIT**: yesterday's model continued on one bucket's (shuffle bag) last ``--window-days``.

The catalog grows with the world's new items (``first_day``); every strategy sees day d's
catalog through an extended vocabulary (known items keep their rows), as a real round does.
Rounds call the same pieces ``nsprecall round`` does (``bucket_dataset``, ``grow_model``,
``train`` from a start model) without exporting a bundle each time. Wall time per round is the
training call alone, measured in one process, one strategy at a time.

Writes ``docs/benchmarks/incremental.{json,md,png}``; intermediate results are cached under
``var/bench/incremental/`` (``--fresh`` ignores them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from index.vocab import Vocabulary  # noqa: E402
from model_export.data import DAY, Dataset, build_dataset, read_catalog, read_events  # noqa: E402
from model_export.incremental import RoundState, bucket_dataset, grow_model  # noqa: E402
from model_export.model import NSPModel  # noqa: E402
from model_export.ranking import evaluate  # noqa: E402
from model_export.synth import DAY0_TS, SynthConfig, generate  # noqa: E402
from model_export.train import TrainConfig, model_ranker_for, train, training_examples  # noqa: E402

log = logging.getLogger("bench.incremental")

WORK = ROOT / "var" / "bench" / "incremental"
OUT = ROOT / "docs" / "benchmarks"
KS = (20, 100)
STRATEGIES = ("no update", "full retrain", "ideal incremental", "PIT")


@dataclasses.dataclass
class World:
    events: pd.DataFrame
    catalog: pd.DataFrame

    def view(self, day: int, vocab: Vocabulary | None) -> Dataset:
        """Everything logged before day ``day + 1``, day ``day`` as the test period, no
        validation period; the catalog as of ``day``, extending ``vocab`` when given."""
        end = DAY0_TS + (day + 1) * DAY
        events = self.events[self.events["ts"] < end]
        catalog = self.catalog[self.catalog["first_day"] <= day]
        return build_dataset(events, catalog, val_days=0, test_days=1, base_vocab=vocab, end_ts=end)


def work_dir(args: argparse.Namespace) -> Path:
    return WORK / f"u{args.users}-i{args.items}-d{args.days}"


def load_world(args: argparse.Namespace) -> World:
    data = work_dir(args) / "data"
    if not (data / "events.csv").is_file():
        generate(SynthConfig(n_users=args.users, n_items=args.items, n_days=args.days, seed=0), data, False)
    return World(read_events(data / "events.csv"), read_catalog(data / "catalog.csv"))


def judge(model: NSPModel, config: TrainConfig, model_vocab: Vocabulary, day: Dataset) -> dict[str, float]:
    """Day ``day``'s cases, kept and scored with the day's vocabulary (an extension of
    ``model_vocab``, so the model's item indices mean the same items)."""
    return evaluate(model_ranker_for(model, config, model_vocab), day.test, day.vocab, KS)


def timed_train(
    dataset: Dataset, config: TrainConfig, run: Path, start: NSPModel | None
) -> tuple[NSPModel, float]:
    from model_export.publish import load_run

    started = time.perf_counter()
    train(dataset, config, run, progress=False, start=start)
    seconds = time.perf_counter() - started
    model, _, _ = load_run(run)
    return model, seconds


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    world = load_world(args)
    # The strategies compare encoder training: the channel fit (train's last step since the
    # channel merge) would add the same fixed cost to every timed round.
    base = TrainConfig(epochs=args.epochs, seed=0, baselines=False, channels=False)
    update = dataclasses.replace(base, epochs=1, lr=args.round_lr)
    runs = work_dir(args) / "runs"
    days = list(range(args.first_day, args.days))

    # Pretraining: targets from the last ``pretrain_window`` days before the first judged day
    # (no validation period: the last epoch is kept).
    pretrain_view = world.view(args.first_day, None)
    vocab = pretrain_view.vocab
    pretrain_config = dataclasses.replace(base, window_days=args.pretrain_window)
    pretrained, pretrain_seconds = timed_train(pretrain_view, pretrain_config, runs / "pretrain", None)

    models = {name: pretrained for name in STRATEGIES}
    vocabs = {name: vocab for name in STRATEGIES}
    bag = RoundState(n_buckets=args.buckets, seed=args.seed, run="")
    results: dict[str, Any] = {
        "config": vars(args) | {"pretrain_seconds": pretrain_seconds},
        "days": {},
    }
    for day in days:
        today = world.view(day, vocab)  # day's catalog; today.train = everything before day
        vocab = today.vocab
        entry: dict[str, Any] = {"cases": len(today.test), "items": vocab.n_items, "strategies": {}}
        for name in STRATEGIES:
            seconds, trained_on = 0.0, 0
            if day > args.first_day and name != "no update":
                data, config, start = today, update, None
                if name == "full retrain":
                    config = base
                elif name == "ideal incremental":
                    config = dataclasses.replace(update, window_days=1)
                    start = grow_model(models[name], vocabs[name], vocab)
                else:  # PIT
                    data = bucket_dataset(today, bag.next_bucket(), args.buckets)
                    config = dataclasses.replace(update, window_days=args.window_days)
                    start = grow_model(models[name], vocabs[name], vocab)
                trained_on = len(training_examples(data, config.window_days)[0])
                slug = name.replace(" ", "-")
                models[name], seconds = timed_train(data, config, runs / f"{slug}-{day}", start)
                vocabs[name] = vocab
            metrics = judge(models[name], base, vocabs[name], today)
            entry["strategies"][name] = {**metrics, "train_seconds": seconds, "users_trained": trained_on}
            log.info("day %d %-18s HR@100 %.4f  %.1fs", day, name, metrics["hr@100"], seconds)
        results["days"][str(day)] = entry
    return results


def summary(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    days = list(results["days"].values())
    out = {}
    for name in STRATEGIES:
        rows = [d["strategies"][name] for d in days]
        updates = [r["train_seconds"] for r in rows if r["train_seconds"] > 0]
        out[name] = {
            **{f"hr@{k}": statistics.mean(r[f"hr@{k}"] for r in rows) for k in KS},
            "ndcg@100": statistics.mean(r["ndcg@100"] for r in rows),
            # median: robust to a round slowed by another job on the shared cores
            "seconds_per_round": statistics.median(updates) if updates else 0.0,
            "users_per_round": statistics.mean(r["users_trained"] for r in rows if r["train_seconds"] > 0)
            if updates
            else 0.0,
        }
    return out


def write_report(results: dict[str, Any]) -> str:
    config = results["config"]
    table = summary(results)
    ideal, full = table["ideal incremental"], table["full retrain"]
    first, pretrain_from = config["first_day"], config["first_day"] - config["pretrain_window"]
    lines = [
        "# Incremental training strategies",
        "",
        "Generated by `bench/incremental.py`; do not edit by hand. Synthetic world "
        f"({config['users']} users, {config['items']} items, {config['days']} days, drifting interests, "
        f"new items by day); pretrained on days {pretrain_from} to {first - 1} "
        f"({config['epochs']} epochs, {config['pretrain_seconds']:.0f} s), "
        f"then judged on each day {first} to {config['days'] - 1} after the day's update "
        f"(PIT: {config['buckets']} buckets, {config['window_days']}-day window, one round per day; "
        "incremental rounds: 1 epoch). Next-day HR@K over the full catalog, mean over days; one seed.",
        "",
        "| strategy | HR@20 | HR@100 | NDCG@100 | HR@100 vs ideal | median wall s / round | vs full retrain "
        "| users / round |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        rel = row["hr@100"] / ideal["hr@100"] - 1 if ideal["hr@100"] else 0.0
        cost = row["seconds_per_round"] / full["seconds_per_round"] if full["seconds_per_round"] else 0.0
        lines.append(
            f"| {name} | {row['hr@20']:.4f} | {row['hr@100']:.4f} | {row['ndcg@100']:.4f} | {rel:+.1%} | "
            f"{row['seconds_per_round']:.1f} | {cost:.1%} | {row['users_per_round']:.0f} |"
        )
    pit = table["PIT"]
    gap = pit["hr@100"] / ideal["hr@100"] - 1 if ideal["hr@100"] else 0.0
    cost = pit["seconds_per_round"] / full["seconds_per_round"] if full["seconds_per_round"] else 0.0
    verdict = "within" if gap >= -0.02 else "NOT within"
    lines += [
        "",
        f"PIT's next-day HR@100 is {gap:+.1%} relative to ideal incremental ({verdict} the 2 % bar) "
        f"at {cost:.1%} of a full retrain's wall time per round.",
        "",
        "## Per day (HR@100)",
        "",
        "| day | cases | items | " + " | ".join(STRATEGIES) + " |",
        "|---|---|---|" + "---|" * len(STRATEGIES),
    ]
    for day, entry in results["days"].items():
        cells = " | ".join(f"{entry['strategies'][n]['hr@100']:.4f}" for n in STRATEGIES)
        lines.append(f"| {day} | {entry['cases']} | {entry['items']} | {cells} |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [int(d) for d in results["days"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in STRATEGIES:
        rows = [results["days"][str(d)]["strategies"][name] for d in days]
        left.plot(days, [r["hr@100"] for r in rows], marker="o", label=name)
        right.plot(days[1:], [max(r["train_seconds"], 1e-3) for r in rows[1:]], marker="o", label=name)
    left.set_xlabel("day")
    left.set_ylabel("next-day HR@100")
    left.legend()
    right.set_xlabel("day")
    right.set_ylabel("wall s per round (log)")
    right.set_yscale("log")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--first-day", type=int, default=21)
    parser.add_argument("--pretrain-window", type=int, default=14)
    parser.add_argument("--epochs", type=int, default=3, help="pretraining and full retrains")
    parser.add_argument("--round-lr", type=float, default=1e-3)
    parser.add_argument("--buckets", type=int, default=10)
    parser.add_argument("--window-days", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="ignore cached results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cache = work_dir(args) / f"results-f{args.first_day}-b{args.buckets}-w{args.window_days}.json"
    if cache.is_file() and not args.fresh:
        results = json.loads(cache.read_text())
    else:
        results = run_all(args)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(results, indent=2))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "incremental.json").write_text(json.dumps(results, indent=2))
    report = write_report(results)
    (OUT / "incremental.md").write_text(report + "\n")
    plot(results, OUT / "incremental.png")
    print(report)


if __name__ == "__main__":
    main()
