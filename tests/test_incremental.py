"""PIT rounds: buckets, the shuffle bag, vocabulary growth, and rounds through the real CLI."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import run_cli

from index import bundle
from index.features import stack_left_padded
from index.item_meta import ITEM_META_FILE, ItemMeta
from index.vocab import ITEM_OFFSET, Vocabulary
from model_export.incremental import RoundState, grow_model, user_bucket
from model_export.model import Encoder, NSPConfig, NSPModel
from model_export.publish import probe_sequences


def test_buckets_are_stable_and_spread() -> None:
    users = [f"u{i}" for i in range(5000)]
    buckets = [user_bucket(u, 10) for u in users]
    assert buckets == [user_bucket(u, 10) for u in users]
    counts = Counter(buckets)
    assert set(counts) == set(range(10))
    assert max(counts.values()) < 1.2 * min(counts.values())


def test_shuffle_bag_is_random_but_starves_no_bucket(tmp_path: Path) -> None:
    state = RoundState(n_buckets=5, seed=3, run="runs/0")
    drawn = [state.next_bucket() for _ in range(7)]
    state.save(tmp_path)
    resumed = RoundState.load(tmp_path)  # a restart continues the same sequence
    drawn += [resumed.next_bucket() for _ in range(13)]
    assert [sorted(drawn[i : i + 5]) for i in range(0, 20, 5)] == [list(range(5))] * 4
    assert len({tuple(drawn[i : i + 5]) for i in range(0, 20, 5)}) > 1  # cycles differ
    last_seen: dict[int, int] = {}
    for position, bucket in enumerate(drawn):
        if bucket in last_seen:
            assert position - last_seen[bucket] <= 2 * 5 - 1
        last_seen[bucket] = position


def _vocab() -> Vocabulary:
    return Vocabulary.build(["a", "b", "c", "d"], ["x", "x", "y", "y"], [1.0, 2.0, 3.0, 4.0], ["home"])


def test_extended_vocabulary_keeps_known_rows_and_appends_new_ones() -> None:
    old = _vocab()
    new = old.extended(["d", "e", "a", "f"], ["y", "x", "x", "z"], [4.0, 1.5, 1.0, 99.0], ["search", "home"])
    assert new.item_ids.tolist() == ["a", "b", "c", "d", "e", "f"]
    assert np.array_equal(new.item_category[:4], old.item_category)
    assert np.array_equal(new.item_price[:4], old.item_price)
    assert new.categories == ["x", "y", "z"]
    assert new.item_features("e")[1] == new.item_features("a")[1]  # same category token
    assert new.scenes == ["home", "search"] and new.scene_token("home") == old.scene_token("home")
    assert new.price_edges == old.price_edges
    assert old.extended(["a"], ["x"], [1.0], ["home"]).n_items == 4


def test_grown_model_answers_as_before_and_new_items_start_at_their_category() -> None:
    old = _vocab()
    new = old.extended(["e", "f"], ["x", "z"], [1.5, 2.0], ["home", "search"])
    torch.manual_seed(0)
    config = NSPConfig(n_items=old.n_items, n_category_tokens=old.n_category_tokens, n_scene_tokens=2, dim=16)
    model = NSPModel(config).eval()
    grown = grow_model(model, old, new).eval()
    assert grown.item.weight.shape[0] == new.n_items + ITEM_OFFSET
    item = grown.item.weight.detach()
    assert torch.allclose(item[4 + ITEM_OFFSET], item[ITEM_OFFSET : 2 + ITEM_OFFSET].mean(0))  # "e": x's mean
    assert torch.allclose(item[5 + ITEM_OFFSET], item[ITEM_OFFSET : 4 + ITEM_OFFSET].mean(0))  # "f": new z
    tokens = torch.from_numpy(stack_left_padded(probe_sequences(old, 4, 3)))
    with torch.no_grad():
        assert torch.allclose(Encoder(model)(tokens), Encoder(grown)(tokens), atol=1e-6)


@pytest.fixture(scope="module")
def shrunk_world(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The tiny world with its 40 newest items missing from the catalog and the log (they
    arrive later: the rounds read the whole world)."""
    out = tmp_path_factory.mktemp("shrunk")
    catalog = pd.read_csv(world / "catalog.csv", dtype={"item_id": str})
    newest = catalog.sort_values("first_day", kind="stable").tail(40)
    catalog.drop(newest.index).to_csv(out / "catalog.csv", index=False)
    events = pd.read_csv(world / "events.csv", dtype={"item_id": str})
    events[~events["item_id"].isin(newest["item_id"])].to_csv(out / "events.csv", index=False)
    return out, newest["item_id"].tolist()


def test_rounds_grow_the_vocabulary_publish_with_lineage_and_prune(
    world: Path, shrunk_world: tuple[Path, list[str]], tmp_path: Path
) -> None:
    shrunk, arriving = shrunk_world
    run, state, root = tmp_path / "pretrain", tmp_path / "pit", tmp_path / "bundles"
    run_cli(
        "train", "--data", str(shrunk), "--out", str(run), "--epochs", "1", "--window-days", "5", "--quiet"
    )
    run_cli("publish", "--run", str(run), "--bundles", str(root))
    first = bundle.read_manifest(root / "1")
    assert first.training.kind == "pretrain" and first.item_count == len(pd.read_csv(shrunk / "catalog.csv"))
    window = 5 * 86400
    assert first.training.data_end_ts is not None and first.training.data_start_ts is not None
    assert first.training.data_end_ts - first.training.data_start_ts == window

    common = ["--state", str(state), "--bundles", str(root), "--buckets", "3", "--window-days", "4"]
    out = run_cli(
        "round", "--data", str(world), "--init-run", str(run), *common, "--keep", "2", "--force", "--quiet"
    )
    line = json.loads(out.strip().splitlines()[-1])
    assert (line["round"], line["version"], line["new_items"]) == (1, 2, len(arriving))
    second = bundle.read_manifest(root / "2")
    assert second.parent_version == 1
    assert (second.training.kind, second.training.round, second.training.n_buckets) == ("incremental", 1, 3)
    assert second.training.bucket == line["bucket"]
    assert second.training.data_end_ts == first.training.data_end_ts + 86400  # the full log: one day later
    assert second.training.data_end_ts - second.training.data_start_ts == 4 * 86400
    assert second.item_count == first.item_count + len(arriving)
    grown = Vocabulary.load(root / "2")
    assert set(arriving) <= set(grown.item_ids.tolist())
    # The round's item metadata covers the grown vocabulary: the arrivals have their catalog rows.
    assert second.item_meta is not None
    meta = ItemMeta.load(root / "2" / ITEM_META_FILE, grown.item_ids.tolist(), second.item_meta.attributes)
    titles = pd.read_csv(world / "catalog.csv", dtype={"item_id": str}).set_index("item_id")["title"]
    for item in arriving:
        label = grown.item_index(item)
        info = meta.of(label) if label is not None else None
        assert info is not None and info.title == titles[item]

    out = run_cli(
        "rounds", "--data", str(world), *common, "--keep", "2", "--force", "--every", "0", "--count", "2"
    )
    lines = [json.loads(x) for x in out.strip().splitlines()]
    assert [x["round"] for x in lines] == [2, 3]
    assert [x["version"] for x in lines] == [3, 4]
    assert bundle.list_versions(root) == [3, 4]  # pruned to --keep
    assert len({line["bucket"], *(x["bucket"] for x in lines)}) == 3  # one shuffle-bag cycle
    assert bundle.read_manifest(root / "4").parent_version == 3
    runs = sorted(p.name for p in (state / "runs").iterdir())
    assert runs == ["2", "3"]


def test_a_round_from_a_search_run_keeps_the_text_channels(
    search_world: Path, search_trained: Path, tmp_path: Path
) -> None:
    """A PIT round continues the query-reading encoder with its run's tokenizer and rebuilds the
    text channels over the round's catalog, so its bundle still answers searches."""
    root, state = tmp_path / "bundles", tmp_path / "state"
    common = ["--state", str(state), "--bundles", str(root), "--buckets", "2", "--window-days", "4"]
    out = run_cli(
        "round", "--data", str(search_world), "--init-run", str(search_trained), *common, "--force", "--quiet"
    )
    line = json.loads(out.strip().splitlines()[-1])
    manifest = bundle.read_manifest(root / str(line["version"]))
    assert manifest.encoder.query_pieces > 0
    assert manifest.text is not None and manifest.text.bm25 is not None and manifest.text.dense is not None
    assert manifest.channels is not None and "search:exclude_seen" in manifest.channels.fusion
    assert {"tokenizer.json", "query_encoder.onnx"} <= set(manifest.files)
