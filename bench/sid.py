"""CQ-SID + EG-GRPO: the paper's tables in shape, on the synthetic search world, side by side.

    .venv/bin/python bench/sid.py [--users 8000] [--items 5000] [--days 30] [--epochs 5]
                                  [--seeds 0 1 2] [--grpo-steps 100] [--serving-items 100000]
                                  [--smoke]

The world and the ``nsprecall train`` run are ``bench/search.py``'s (cached under
``var/bench/search/``). The item content vectors are a dense two-tower trained here on the same
pairs with seed 0 (the run's own is exported as ONNX only; its item tower is needed to code new
items). For each training seed, with those vectors fixed:

1. *Semantic hitrate* (the paper's Table 1): plain RQ-VAE (no category, no query-item term),
   CQ-SID without the category, without the query-item term, and CQ-SID, each followed by the
   same generator trained item → SID then query → SID; hitrate of the test search sessions'
   engaged items at beam 1, 10, 100, query only. Item-level (full SID with its group suffix)
   and, apart, cluster-level (3-level prefix).
2. *Personalised* (Table 3): the same two tokenizers' generators after the user + query stage,
   asked with the user's recent SIDs, beside the query-only model, at beam 1 and 100.
3. *Top-K truncation*: hitrate after expanding the beam's SIDs and keeping the first 300 items
   (the paper's 1K of 21M, scaled to the channel's depth) against the beam, for RQ-VAE and
   CQ-SID, and the beams each needs to reach the same hitrate.
4. *EG-GRPO* (Table 4): the CQ-SID user + query model, then GRPO (K = 0) and EG-GRPO (K = 2, 4)
   from it: click and exposure hitrate at beam 1 and 10.
5. CQ-SID's cluster sizes, codebook usage per level, hitrate on items new since training.
6. The ``sid`` channel as served (the run's bundle files, through ``index.sid_search``) beside
   ``bm25`` and ``dense``, and the merged search list with and without it (the search fusion
   refitted without ``sid`` on the same validation cases).
7. Serving at ``--serving-items`` items: the catalog grown with synthetic titled items coded by
   the trained CQ-SID, the exported generator in ONNX Runtime on one thread, the beam ladder's
   latency (p50/p99 over the test queries) and hitrate.

Noise: each number is the mean over the seeds with the seeds' min-max beside it; a relative
change is computed per seed (same seed, same vectors) and then averaged. Writes
``docs/benchmarks/sid.{md,json,png}`` (``--smoke``: a tiny world, ``var/bench/search-smoke/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import cached, latency_summary, provenance  # noqa: E402
from search import add_world_args, channel_comparison, search_run  # noqa: E402
from serving import item_titles  # noqa: E402

from index.sid_layout import SidLayout  # noqa: E402
from index.sid_search import SidSearch, recent_engaged  # noqa: E402
from index.sid_table import SidTable  # noqa: E402
from index.sid_trie import SidTrie  # noqa: E402
from index.tokenizer import TOKENIZER_FILE, TextTokenizer  # noqa: E402
from model_export.data import Dataset, load_dataset  # noqa: E402
from model_export.search_world import read_table  # noqa: E402
from model_export.sid.build import (  # noqa: E402
    Coding,
    ItemContent,
    SidConfig,
    align_generator,
    code_items,
    dense_content,
    generator_config,
    stage_examples,
)
from model_export.sid.clusters import place_new_items  # noqa: E402
from model_export.sid.data import engagement_counts, trained_items  # noqa: E402
from model_export.sid.evaluate import (  # noqa: E402
    Beams,
    SidCase,
    generate,
    hitrate,
    prefix_hitrate,
    sid_cases,
    truncated_hitrate,
)
from model_export.sid.generator import SidGenerator, StageConfig, train_stage  # noqa: E402
from model_export.sid.rqvae import assign_codes  # noqa: E402
from model_export.text.corpus import item_texts, query_pairs  # noqa: E402
from model_export.text.dense import item_vectors, train_dense  # noqa: E402
from model_export.train import TrainConfig  # noqa: E402

log = logging.getLogger("bench.sid")

NAME = "sid"
DOCS = ROOT / "docs" / "benchmarks"
TABLE_BEAMS = (1, 10, 100)
TRUNC_BEAMS = (5, 10, 20, 30, 40, 50, 70, 100, 150, 200)
TRUNC_DEPTH = 300
CHANNEL_KS = (10, 100, 300)
VARIANTS: dict[str, dict[str, bool]] = {
    "RQ-VAE": {"use_category": False, "use_query": False},
    "CQ-SID w/o category": {"use_category": False},
    "CQ-SID w/o query-item": {"use_query": False},
    "CQ-SID": {},
}
PERSONAL = ("RQ-VAE", "CQ-SID")
INJECT = (0, 2, 4)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_world_args(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="CQ-SID training seeds")
    parser.add_argument("--grpo-steps", type=int, default=100)
    parser.add_argument("--serving-items", type=int, default=100_000)
    return parser.parse_args()


@dataclasses.dataclass
class World:
    """What every seed shares: the dataset, texts, tokenizer, content vectors and test cases."""

    dataset: Dataset
    texts: list[str]
    tokenizer: TextTokenizer
    content: ItemContent
    dense: Any  # the TwoTower the content vectors come from (its item tower codes new items)
    new_items: np.ndarray  # (N,) bool: not in the training log


def prepare_world(data: Path, run_dir: Path, config: TrainConfig) -> World:
    dataset = load_dataset(data / "events.csv", data / "catalog.csv", 1, 1)
    tokenizer = TextTokenizer.load(run_dir / TOKENIZER_FILE)
    texts = item_texts(read_table(data / "catalog.csv"), dataset.vocab)
    pairs = query_pairs(dataset.train, dataset.vocab)
    dense_config = dataclasses.replace(config.text.dense_config, progress=False)
    dense = train_dense(pairs, texts, tokenizer, dense_config)
    content = dense_content(dataset, texts, tokenizer, dense)
    return World(dataset, texts, tokenizer, content, dense, ~trained_items(dataset.train, dataset.vocab))


def sft(
    model: SidGenerator, world: World, stage: str, coding: Coding, layout: SidLayout, config: SidConfig
) -> None:
    epochs = dict(zip(("item", "query", "user"), config.stage_epochs, strict=True))[stage]
    examples = stage_examples(
        stage, world.dataset, world.texts, world.tokenizer, coding.item_sids, layout, config
    )
    stage_config = StageConfig(
        epochs=epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
        progress=False,
        name=stage,
    )
    train_stage(model, examples, stage_config)


def copy_of(model: SidGenerator) -> SidGenerator:
    other = SidGenerator(model.config)
    other.load_state_dict(model.state_dict())
    return other


def cases_for(
    world: World, coding: Coding, layout: SidLayout, config: SidConfig, personal: bool
) -> list[SidCase]:
    return sid_cases(
        world.dataset.search_test, world.dataset.vocab, world.tokenizer, coding.item_sids, layout,
        config.max_query_tokens, config.user_sids, personal,
    )  # fmt: skip


def beam_table(beams: Beams, cases: Sequence[SidCase], table: SidTable) -> dict[str, float]:
    out = {}
    for beam in TABLE_BEAMS:
        out[f"hit@{beam}"] = hitrate(beams, cases, table, beam)
        out[f"cluster_hit@{beam}"] = prefix_hitrate(beams, cases, table, beam)
    return out


def engagement_table(beams: Beams, cases: Sequence[SidCase], table: SidTable) -> dict[str, float]:
    return {
        **{f"clk@{b}": hitrate(beams, cases, table, b) for b in (1, 10)},
        **{f"exp@{b}": hitrate(beams, cases, table, b, exposure=True) for b in (1, 10)},
    }


def new_item_hitrate(
    beams: Beams, cases: Sequence[SidCase], table: SidTable, new: np.ndarray, beam: int
) -> tuple[float, int]:
    """Hitrate over the engaged items that are new since training, and their number."""
    hits = []
    for (rows, _), case in zip(beams, cases, strict=True):
        fresh = case.clicked[new[case.clicked]]
        hits += np.isin(table.item_sid[fresh], rows[:beam]).tolist()
    return (float(np.mean(hits)) if hits else float("nan")), len(hits)


def cluster_histogram(table: SidTable) -> dict[str, int]:
    sizes = np.diff(table.offsets)
    edges = [1, 2, 3, 5, 8, 11, 16, 26, 51, 10**9]
    labels = ["1", "2", "3-4", "5-7", "8-10", "11-15", "16-25", "26-50", ">50"]
    counts = np.histogram(sizes, bins=edges)[0]
    return dict(zip(labels, (int(c) for c in counts), strict=True))


def level_usage(coding: Coding, layout: SidLayout) -> list[float]:
    codes = coding.item_sids
    return [float(len(np.unique(codes[:, level])) / layout.sizes[level]) for level in range(3)]


def run_seed(world: World, seed: int, grpo_steps: int, keep: dict[str, Any]) -> dict[str, Any]:
    """Every table's numbers for one training seed; ``keep`` receives the CQ-SID models."""
    result: dict[str, Any] = {"variants": {}, "personal": {}, "truncation": {}, "grpo": {}}
    for name, knobs in VARIANTS.items():
        started = time.perf_counter()
        config = SidConfig(seed=seed, grpo_steps=grpo_steps, progress=False, **knobs)
        coding = code_items(world.dataset, world.content, config)
        layout = SidLayout((coding.n_categories + config.free_codes, *config.codes, config.g_max))
        table = SidTable.build(
            layout, coding.item_sids, engagement_counts(world.dataset.train, world.dataset.vocab)
        )
        trie = SidTrie.build(table)
        torch.manual_seed(seed)
        model = SidGenerator(generator_config(config, world.tokenizer, layout))
        sft(model, world, "item", coding, layout, config)
        query_cases = cases_for(world, coding, layout, config, personal=False)
        after_item = generate(model, trie, query_cases, max(TABLE_BEAMS))
        sft(model, world, "query", coding, layout, config)
        beams = generate(model, trie, query_cases, max(max(TABLE_BEAMS), max(TRUNC_BEAMS)))
        entry: dict[str, Any] = {
            **beam_table(beams, query_cases, table),
            "cases": len(query_cases),
            "sids": len(table.codes),
            "items_per_sid": float(np.diff(table.offsets).mean()),
            "largest_sid": int(np.diff(table.offsets).max()),
            "codebook": coding.stats,
            "level_usage": level_usage(coding, layout),
        }
        result["truncation"][name] = {
            str(b): truncated_hitrate(beams, query_cases, table, b, TRUNC_DEPTH) for b in TRUNC_BEAMS
        }
        if name in PERSONAL:
            sft(model, world, "user", coding, layout, config)
            personal_cases = cases_for(world, coding, layout, config, personal=True)
            personal_beams = generate(model, trie, personal_cases, max(TABLE_BEAMS))
            result["personal"][name] = {
                "query_only": beam_table(beams, query_cases, table),
                "user+query": beam_table(personal_beams, personal_cases, table),
            }
        if name == "CQ-SID":
            entry["stages"] = {
                "item": beam_table(after_item, query_cases, table),
                "item+query": beam_table(beams, query_cases, table),
                "item+query+user": beam_table(personal_beams, personal_cases, table),
            }
            entry["histogram"] = cluster_histogram(table)
            entry["new_items"] = {
                f"hit@{b}": new_item_hitrate(personal_beams, personal_cases, table, world.new_items, b)[0]
                for b in TABLE_BEAMS
            }
            entry["new_items"]["targets"] = new_item_hitrate(
                personal_beams, personal_cases, table, world.new_items, 1
            )[1]
            result["grpo"]["SFT"] = engagement_table(personal_beams, personal_cases, table)
            reference = copy_of(model).eval()
            for inject in INJECT:
                aligned = copy_of(model)
                history = align_generator(
                    aligned,
                    reference,
                    world.dataset,
                    world.tokenizer,
                    coding.item_sids,
                    table,
                    config,
                    inject,
                )
                label = "GRPO (K=0)" if inject == 0 else f"EG-GRPO (K={inject})"
                aligned_beams = generate(aligned, trie, personal_cases, 10)
                result["grpo"][label] = {
                    **engagement_table(aligned_beams, personal_cases, table),
                    "reward_start": history[0]["reward_sampled"] if history else float("nan"),
                    "reward_end": float(np.mean([h["reward_sampled"] for h in history[-10:]]))
                    if history
                    else float("nan"),
                    "kl_end": history[-1]["kl"] if history else float("nan"),
                    "zero_spread_end": history[-1]["zero_spread"] if history else float("nan"),
                    "unique_sampled_end": history[-1]["unique_sampled"] if history else float("nan"),
                }
                if inject == 2:
                    keep.update(model=aligned, coding=coding, layout=layout, table=table, config=config)
        entry["seconds"] = time.perf_counter() - started
        result["variants"][name] = entry
        log.info(
            "seed %d %s: %s (%.0f s)",
            seed,
            name,
            {k: round(v, 4) for k, v in entry.items() if k.startswith("hit@")},
            entry["seconds"],
        )
    return result


def serving_ladder(world: World, keep: dict[str, Any], n_items: int, seed: int = 5) -> dict[str, Any]:
    """The CQ-SID (EG-GRPO K=2) generator served over a catalog grown to ``n_items``: synthetic
    titled items (``bench/serving.py``'s title writer) coded by the trained RQ-VAE and placed
    into the clusters. Latency of one request (generate + expand to 300) per beam, one thread."""
    vocab, config = world.dataset.vocab, keep["config"]
    coding: Coding = keep["coding"]
    extra = max(0, n_items - vocab.n_items)
    rng = np.random.default_rng(seed)
    category = rng.integers(0, 50, extra)
    from index.text import normalize_text

    titles = [normalize_text(t) for t in item_titles(category, seed)]
    vectors = item_vectors(world.dense, titles, world.tokenizer)
    names = list(vocab.categories)
    level1 = np.asarray([names.index(f"c{c}") if f"c{c}" in names else -1 for c in category], dtype=np.int64)
    codes = assign_codes(coding.rqvae, vectors, level1)
    keys = (np.arange(extra, dtype=np.int64) * 2654435761) % (2**61 - 1)  # distinct from item-id hashes
    groups = place_new_items(coding.item_sids, codes, keys, config.t_max, config.g_max)
    sids = np.vstack([coding.item_sids, np.column_stack([codes, groups])])
    scores = np.concatenate([engagement_counts(world.dataset.train, vocab), np.zeros(extra)])
    layout: SidLayout = keep["layout"]
    table = SidTable.build(layout, sids, scores)
    with tempfile.TemporaryDirectory() as tmp:
        from model_export.sid.build import SidModels, write_sid

        spec = write_sid(
            Path(tmp), SidModels(layout, coding.n_categories, sids, table, keep["model"]), config
        )
        search = SidSearch.load(Path(tmp), spec, len(sids), threads=1)
        queries = [
            (case.target.query, recent_engaged(case.history, vocab, spec.user_sids), case)
            for case in world.dataset.search_test
            if case.target.query
        ]
        ladder: dict[str, Any] = {}
        for beam in spec.beams:
            seconds, hits = [], []
            for query, recent, case in queries:
                started = time.perf_counter()
                rows, beam_scores = search.generate_for(query, world.tokenizer, recent, beam)
                labels, _ = search.items_of(rows, beam_scores, TRUNC_DEPTH, np.zeros(0, np.int64))
                seconds.append(time.perf_counter() - started)
                clicked = [lb for item in case.target_items() if (lb := vocab.item_index(item)) is not None]
                if clicked:
                    hits.append(float(np.isin(clicked, labels).mean()))
            ladder[str(beam)] = {
                **latency_summary(seconds),
                "hitrate@300": float(np.mean(hits)),
                "requests": len(seconds),
            }
        return {
            "items": len(sids),
            "sids": len(table.codes),
            "items_per_sid": float(np.diff(table.offsets).mean()),
            "largest_sid": int(np.diff(table.offsets).max()),
            "ladder": ladder,
        }


def summarise(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray([v for v in values if v == v], dtype=np.float64)
    if not len(array):
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": float(array.mean()), "min": float(array.min()), "max": float(array.max())}


def over_seeds(
    per_seed: Sequence[dict[str, Any]], path: Callable[[dict[str, Any]], float]
) -> dict[str, float]:
    return summarise([path(result) for result in per_seed])


def relative(
    per_seed: Sequence[dict[str, Any]],
    ours: Callable[[dict[str, Any]], float],
    base: Callable[[dict[str, Any]], float],
) -> dict[str, float]:
    """Per-seed relative change ours / base - 1, summarised over the seeds."""
    return summarise([ours(r) / base(r) - 1.0 if base(r) > 0 else float("nan") for r in per_seed])


def beams_for(curve: dict[str, float], level: float) -> float | None:
    """The smallest beam whose truncated hitrate reaches ``level`` (linear between the measured
    beams), None when no measured beam does."""
    beams = [int(b) for b in curve]
    values = [curve[str(b)] for b in beams]
    for n, (beam, value) in enumerate(zip(beams, values, strict=True)):
        if value >= level:
            if n == 0:
                return float(beam)
            low_beam, low = beams[n - 1], values[n - 1]
            return (
                low_beam + (beam - low_beam) * (level - low) / (value - low) if value > low else float(beam)
            )
    return None


def beam_savings(per_seed: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per seed: the level both reach (the lower of the two curves' maxima, and 0.9 of it), the
    beams RQ-VAE and CQ-SID need for it, and CQ-SID's saving."""
    rows = []
    for seed_result in per_seed:
        base, ours = seed_result["truncation"]["RQ-VAE"], seed_result["truncation"]["CQ-SID"]
        top = min(max(base.values()), max(ours.values()))
        for level in (0.9 * top, top):
            b, o = beams_for(base, level), beams_for(ours, level)
            rows.append(
                {"seed": seed_result["seed"], "level": level, "rq_vae_beams": b, "cq_sid_beams": o,
                 "saving": (1 - o / b) if b and o else None}
            )  # fmt: skip
    return rows


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args()
    if args.smoke:
        args.seeds, args.grpo_steps, args.serving_items = [0], 10, 2000
    world_config, config, root, data, run_dir = search_run(args)
    world = prepare_world(data, run_dir, config)
    torch.set_num_threads(2)
    per_seed = []
    keep: dict[str, Any] = {}  # the CQ-SID models of a seed computed in this run (for serving)
    for seed in args.seeds:
        path = run_dir / f"sid-seed{seed}-grpo{args.grpo_steps}.json"
        if path.is_file() and (keep or seed != args.seeds[-1]):
            result = json.loads(path.read_text())  # computed by an earlier run with these settings
        else:
            seed_keep: dict[str, Any] = {}
            result = run_seed(world, seed, args.grpo_steps, seed_keep)
            path.write_text(json.dumps(result))
            keep = keep or seed_keep
        result["seed"] = seed
        per_seed.append(result)
    channels = cached(
        run_dir / "sid_channels.json",
        lambda: channel_comparison(run_dir, world.dataset, config, world.tokenizer, "sid", CHANNEL_KS),
    )
    serving = serving_ladder(world, keep, args.serving_items)
    result = {
        "per_seed": per_seed,
        "channels": channels,
        "serving": serving,
        "savings": beam_savings(per_seed),
        "seeds": args.seeds,
        "grpo_steps": args.grpo_steps,
        "world": dataclasses.asdict(world_config),
        "train": dataclasses.asdict(config),
        "provenance": provenance(),
    }
    write_report(result, root if args.smoke else DOCS)


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}"


def _cell(stats: dict[str, float]) -> str:
    """mean (min-max over seeds), in percent."""
    if stats["min"] == stats["max"]:
        return _pct(stats["mean"])
    return f"{_pct(stats['mean'])} ({_pct(stats['min'])}-{_pct(stats['max'])})"


def _rel(stats: dict[str, float]) -> str:
    mean = stats["mean"]
    return "-" if mean != mean else f"{100 * mean:+.1f} %"


def write_report(result: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{NAME}.json").write_text(json.dumps(result, indent=2, default=float))
    (out_dir / f"{NAME}.md").write_text(report(result))
    plot(result, out_dir / f"{NAME}.png")
    log.info("wrote %s", out_dir / f"{NAME}.md")


def report(result: dict[str, Any]) -> str:
    per_seed = result["per_seed"]
    first = per_seed[0]["variants"]["CQ-SID"]
    world = result["world"]
    lines = [
        "# CQ-SID + EG-GRPO: semantic cluster IDs for search",
        "",
        "Regenerate with `.venv/bin/python bench/sid.py` (about an hour on 2 cores; the search run is",
        "shared with `bench/search.py` and cached). "
        f"World: {world['n_users']} users, {world['n_items']} items, {world['n_days']} days, world seed "
        f"{world['seed']}; CQ-SID seeds {result['seeds']}; {per_seed[0]['variants']['CQ-SID']['cases']} test "
        "search sessions with an engaged item. Each cell is the mean over the seeds with the seeds' "
        "range; a relative change is taken per seed and averaged.",
        "",
        "Hitrate: the share of a session's engaged items whose full SID (group suffix included) is among "
        "the beam's SIDs (item level); the cluster-level rate counts the 3-level cluster alone.",
        "",
        "## Semantic hitrate (query → SID), the paper's Table 1",
        "",
        "| tokenizer | beam 1 | beam 10 | beam 100 | vs RQ-VAE @1 | @10 | @100 | SIDs | items/SID |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in VARIANTS:
        cells = [
            _cell(over_seeds(per_seed, lambda r, n=name, b=b: r["variants"][n][f"hit@{b}"]))
            for b in TABLE_BEAMS
        ]
        rel = [
            _rel(
                relative(
                    per_seed,
                    lambda r, n=name, b=b: r["variants"][n][f"hit@{b}"],
                    lambda r, b=b: r["variants"]["RQ-VAE"][f"hit@{b}"],
                )
            )
            for b in TABLE_BEAMS
        ]
        sids = np.mean([r["variants"][name]["sids"] for r in per_seed])
        size = np.mean([r["variants"][name]["items_per_sid"] for r in per_seed])
        lines.append(f"| {name} | {' | '.join(cells)} | {' | '.join(rel)} | {sids:.0f} | {size:.1f} |")
    lines += [
        "",
        "Cluster level (3-level prefix; looser, since a cluster holds several groups):",
        "",
        "| tokenizer | beam 1 | beam 10 | beam 100 |",
        "| --- | --- | --- | --- |",
    ]
    for name in VARIANTS:
        cells = [
            _cell(over_seeds(per_seed, lambda r, n=name, b=b: r["variants"][n][f"cluster_hit@{b}"]))
            for b in TABLE_BEAMS
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += [
        "",
        "## Personalised click hitrate (user + query → SID), the paper's Table 3",
        "",
        "| tokenizer | context | beam 1 | beam 100 |",
        "| --- | --- | --- | --- |",
    ]
    for name in PERSONAL:
        for context in ("query_only", "user+query"):
            cells = [
                _cell(over_seeds(per_seed, lambda r, n=name, c=context, b=b: r["personal"][n][c][f"hit@{b}"]))
                for b in (1, 100)
            ]
            lines.append(f"| {name} | {context.replace('_', ' ')} | {' | '.join(cells)} |")
    for b in (1, 100):
        rel = relative(
            per_seed,
            lambda r, b=b: r["personal"]["CQ-SID"]["user+query"][f"hit@{b}"],
            lambda r, b=b: r["personal"]["RQ-VAE"]["user+query"][f"hit@{b}"],
        )
        lines.append(f"\nCQ-SID vs RQ-VAE, user + query, beam {b}: {_rel(rel)}.")
    lines += [
        "",
        "## Each training stage (CQ-SID, query-only rows until the user stage)",
        "",
        "| generator after | beam 1 | beam 10 | beam 100 |",
        "| --- | --- | --- | --- |",
    ]
    for stage in ("item", "item+query", "item+query+user"):
        cells = [
            _cell(
                over_seeds(per_seed, lambda r, s=stage, b=b: r["variants"]["CQ-SID"]["stages"][s][f"hit@{b}"])
            )
            for b in TABLE_BEAMS
        ]
        lines.append(f"| {stage} | {' | '.join(cells)} |")
    lines += [
        "",
        f"## Top-{TRUNC_DEPTH} truncation: hitrate against the beam",
        "",
        f"The beam's SIDs expand to items in beam order and the first {TRUNC_DEPTH} are kept (the paper "
        "truncates to 1K of 21M items; 300 is this channel's depth).",
        "",
        "| beam | " + " | ".join(TRUNC_BEAMS_STR := [str(b) for b in TRUNC_BEAMS]) + " |",
        "| --- |" + " --- |" * len(TRUNC_BEAMS),
    ]
    for name in ("RQ-VAE", "CQ-SID"):
        cells = [
            _cell(over_seeds(per_seed, lambda r, n=name, b=b: r["truncation"][n][b])) for b in TRUNC_BEAMS_STR
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += [
        "",
        "Beams each needs for the same truncated hitrate (per seed; linear between measured beams):",
        "",
    ]
    lines += [
        "| seed | hitrate | RQ-VAE beams | CQ-SID beams | fewer beams |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in result["savings"]:
        fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
        saving = "-" if row["saving"] is None else f"{100 * row['saving']:.1f} %"
        lines.append(
            f"| {row['seed']} | {_pct(row['level'])} | {fmt(row['rq_vae_beams'])} | "
            f"{fmt(row['cq_sid_beams'])} | {saving} |"
        )
    lines += [
        "",
        f"## EG-GRPO, the paper's Table 4 ({result['grpo_steps']} steps from the CQ-SID user + query model)",
        "",
        "Click hitrate: engaged items; exposure hitrate: every item the session showed. "
        "Beam 1 and 10, user + query.",
        "",
        "| model | clk@1 | clk@10 | exp@1 | exp@10 | sampled reward start → end | KL end "
        "| zero-spread groups |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label in ("SFT", "GRPO (K=0)", "EG-GRPO (K=2)", "EG-GRPO (K=4)"):
        cells = [
            _cell(over_seeds(per_seed, lambda r, m=label, c=c: r["grpo"][m][c]))
            for c in ("clk@1", "clk@10", "exp@1", "exp@10")
        ]
        if label == "SFT":
            extra = ["-", "-", "-"]
        else:
            start = over_seeds(per_seed, lambda r, m=label: r["grpo"][m]["reward_start"])["mean"]
            end = over_seeds(per_seed, lambda r, m=label: r["grpo"][m]["reward_end"])["mean"]
            kl = over_seeds(per_seed, lambda r, m=label: r["grpo"][m]["kl_end"])["mean"]
            zero = over_seeds(per_seed, lambda r, m=label: r["grpo"][m]["zero_spread_end"])["mean"]
            extra = [f"{start:.3f} → {end:.3f}", f"{kl:.4f}", f"{zero:.2f}"]
        lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(extra)} |")
    for label in ("GRPO (K=0)", "EG-GRPO (K=2)", "EG-GRPO (K=4)"):
        diffs = [r["grpo"][label]["clk@10"] - r["grpo"]["SFT"]["clk@10"] for r in per_seed]
        exp = [r["grpo"][label]["exp@10"] - r["grpo"]["SFT"]["exp@10"] for r in per_seed]
        lines.append(
            f"\n{label} - SFT per seed: clk@10 {', '.join(f'{100 * d:+.2f}' for d in diffs)} points; "
            f"exp@10 {', '.join(f'{100 * d:+.2f}' for d in exp)} points."
        )
    lines += [
        "",
        "## CQ-SID's clusters and codebooks (first seed)",
        "",
        "| items per SID | " + " | ".join(first["histogram"]) + " |",
        "| --- |" + " --- |" * len(first["histogram"]),
        "| SIDs | " + " | ".join(str(v) for v in first["histogram"].values()) + " |",
        "",
        "Codebook usage per level (share of codes used by the catalog): "
        + ", ".join(f"level {n + 1} {100 * u:.0f} %" for n, u in enumerate(first["level_usage"]))
        + f"; largest SID {first['largest_sid']} items. Training-item statistics: "
        + ", ".join(f"{k} {v:.3g}" for k, v in first["codebook"].items())
        + ".",
        "",
        f"Items new since training ({first['new_items']['targets']:.0f} engaged targets in the test "
        "sessions, "
        "coded by the trained RQ-VAE and placed without moving any trained item): hitrate "
        + ", ".join(f"beam {b} {_pct(first['new_items'][f'hit@{b}'])} %" for b in TABLE_BEAMS)
        + " (user + query).",
    ]
    channels = result["channels"]
    lines += [
        "",
        "## The `sid` channel beside the text channels, and the merge",
        "",
        "The search run's bundle files through the serving code (`index.sid_search`), "
        f"{channels['cases']} test search sessions, k = 10/100/300 requests, seen items kept. "
        "Both merges are fitted in this run on the same "
        "validation search sessions.",
        "",
        "| list | Recall@10 | Recall@100 | Recall@300 |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in channels["rows"].items():
        lines.append(f"| {name} | {' | '.join(_pct(row[f'recall@{k}']) for k in CHANNEL_KS)} |")
    with_sid, without = (
        channels["rows"]["merged"]["recall@300"],
        channels["rows"]["merged without sid"]["recall@300"],
    )
    lines.append(f"\nMerged Recall@300 with `sid` / without: {with_sid / without:.3f}x (target 1.05x).")
    serving = result["serving"]
    lines += [
        "",
        f"## Serving at {serving['items']:,} items (one request at a time, one thread)",
        "",
        f"{serving['sids']:,} SIDs, {serving['items_per_sid']:.1f} items per SID, "
        f"largest {serving['largest_sid']}. Latency of query → generator → beam search → 300 items, "
        "over the test queries (EG-GRPO K = 2 generator).",
        "",
        "| beam | p50 ms | p99 ms | hitrate@300 |",
        "| --- | --- | --- | --- |",
    ]
    for beam, row in serving["ladder"].items():
        lines.append(f"| {beam} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {_pct(row['hitrate@300'])} |")
    lines += ["", f"Provenance: {json.dumps(result['provenance'])}", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_seed = result["per_seed"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    names = list(VARIANTS)
    width = 0.8 / len(TABLE_BEAMS)
    for offset, beam in enumerate(TABLE_BEAMS):
        values = [
            over_seeds(per_seed, lambda r, n=n, b=beam: r["variants"][n][f"hit@{b}"])["mean"] for n in names
        ]
        axes[0].bar(np.arange(len(names)) + offset * width, values, width, label=f"beam {beam}")
    axes[0].set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20, ha="right")
    axes[0].set_title("semantic hitrate (query → SID)")
    axes[0].legend(fontsize=8)
    for name in ("RQ-VAE", "CQ-SID"):
        values = [
            over_seeds(per_seed, lambda r, n=name, b=str(b): r["truncation"][n][b])["mean"]
            for b in TRUNC_BEAMS
        ]
        axes[1].plot(TRUNC_BEAMS, values, marker="o", label=name)
    axes[1].set_xlabel("beam")
    axes[1].set_title(f"hitrate after top-{TRUNC_DEPTH} truncation")
    axes[1].legend(fontsize=8)
    ladder = result["serving"]["ladder"]
    beams = list(ladder)
    axes[2].plot(beams, [ladder[b]["p50_ms"] for b in beams], marker="o", label="p50")
    axes[2].plot(beams, [ladder[b]["p99_ms"] for b in beams], marker="o", label="p99")
    axes[2].set_xlabel("beam")
    axes[2].set_ylabel("ms")
    axes[2].set_title(f"sid channel latency at {result['serving']['items']:,} items")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
