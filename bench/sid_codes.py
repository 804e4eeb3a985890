"""CQ-SID codebook sizes: how many SIDs, how big, and what the query → SID generator reaches.

    .venv/bin/python bench/sid_codes.py [--sizes 16x16 8x8 4x8 4x4] [--sid-seed 0] [--smoke]

On ``bench/search.py``'s world and run (the same content vectors as ``bench/sid.py``), for each
K2 x K3 (K1 = categories + 4 free codes): CQ-SID codes, the generator after its item → SID and
query → SID stages, and the hitrate of the **validation** day's search sessions (the default
size is chosen here, so the test day stays unread) at beam 1, 10, 100 and after expanding the
100 best SIDs and keeping 300 items. One seed. Writes ``docs/benchmarks/sid_codes.{md,json}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import provenance  # noqa: E402
from search import add_world_args, search_run  # noqa: E402
from sid import World, copy_of, prepare_world, sft  # noqa: E402

from index.sid_layout import SidLayout  # noqa: E402
from index.sid_table import SidTable  # noqa: E402
from index.sid_trie import SidTrie  # noqa: E402
from model_export.sid.build import SidConfig, code_items, generator_config  # noqa: E402
from model_export.sid.data import engagement_counts  # noqa: E402
from model_export.sid.evaluate import generate, hitrate, sid_cases, truncated_hitrate  # noqa: E402
from model_export.sid.generator import SidGenerator  # noqa: E402

log = logging.getLogger("bench.sid_codes")

NAME = "sid_codes"
DOCS = ROOT / "docs" / "benchmarks"
BEAMS = (1, 10, 100)
DEPTH = 300


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_world_args(parser)
    parser.add_argument("--sid-seed", type=int, default=0, help="CQ-SID training seed")
    parser.add_argument("--sizes", nargs="+", default=["16x16", "8x8", "4x8", "4x4"])
    return parser.parse_args()


def measure(world: World, codes: tuple[int, int], seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    config = SidConfig(codes=codes, seed=seed, progress=False)
    coding = code_items(world.dataset, world.content, config)
    layout = SidLayout((coding.n_categories + config.free_codes, *config.codes, config.g_max))
    table = SidTable.build(
        layout, coding.item_sids, engagement_counts(world.dataset.train, world.dataset.vocab)
    )
    torch.manual_seed(seed)
    model = SidGenerator(generator_config(config, world.tokenizer, layout))
    sft(model, world, "item", coding, layout, config)
    sft(model, world, "query", coding, layout, config)
    cases = sid_cases(
        world.dataset.search_val, world.dataset.vocab, world.tokenizer, coding.item_sids, layout,
        config.max_query_tokens, config.user_sids, personal=False,
    )  # fmt: skip
    beams = generate(copy_of(model), SidTrie.build(table), cases, max(BEAMS))
    sizes = np.diff(table.offsets)
    return {
        "codes": list(codes),
        "cases": len(cases),
        "sids": len(table.codes),
        "items_per_sid": float(sizes.mean()),
        "largest_sid": int(sizes.max()),
        **{f"hit@{b}": hitrate(beams, cases, table, b) for b in BEAMS},
        f"top{DEPTH}@100": truncated_hitrate(beams, cases, table, 100, DEPTH),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args()
    world_config, config, root, data, run_dir = search_run(args)
    world = prepare_world(data, run_dir, config)
    torch.set_num_threads(2)
    rows = []
    for size in args.sizes:
        k2, k3 = (int(v) for v in size.lower().split("x"))
        rows.append(measure(world, (k2, k3), args.sid_seed))
        log.info("%s: %s", size, rows[-1])
    result = {
        "rows": rows,
        "seed": args.sid_seed,
        "world": dataclasses.asdict(world_config),
        "provenance": provenance(),
    }
    out = root if args.smoke else DOCS
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(result, indent=2))
    (out / f"{NAME}.md").write_text(report(result))


def report(result: dict[str, Any]) -> str:
    world = result["world"]
    lines = [
        "# CQ-SID codebook sizes",
        "",
        "Regenerate with `.venv/bin/python bench/sid_codes.py` (about 15 minutes on 2 cores after "
        "`bench/search.py`'s run). "
        f"World: {world['n_users']} users, {world['n_items']} items, {world['n_days']} days; seed "
        f"{result['seed']}; {result['rows'][0]['cases']} validation search sessions with an engaged item. "
        "CQ-SID codes, the generator after its item and query stages, hitrate (%) of the engaged "
        "items' full SIDs in the beam, and of the first 300 items the 100 best SIDs expand to. One "
        "seed: differences of a point or two are within the noise the three-seed `sid.md` shows.",
        "",
        "| K2 x K3 | SIDs | items / SID | largest SID | hit@1 | hit@10 | hit@100 | top-300 of beam 100 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        k2, k3 = row["codes"]
        lines.append(
            f"| {k2} x {k3} | {row['sids']} | {row['items_per_sid']:.2f} | {row['largest_sid']} | "
            f"{100 * row['hit@1']:.1f} | {100 * row['hit@10']:.1f} | {100 * row['hit@100']:.1f} | "
            f"{100 * row[f'top{DEPTH}@100']:.1f} |"
        )
    lines += ["", f"Provenance: {json.dumps(result['provenance'])}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
