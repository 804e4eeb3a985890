"""The dense text channel end to end on a hand-built catalog: training (model_export.text.dense),
the query encoder's ONNX export, the bundle files (index.dense), their checks at load
(service.text_indexes) and the channel in the real pipeline (service.channels.dense)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import history, ids, recall, serving
from text_bundles import tokenizer_for, write_text_bundle

from index.bundle import BundleError, ChannelsSpec, DenseSpec, commit, read_manifest, staging
from index.dense import QUERY_ENCODER_FILE, TEXT_INDEX_FILE, TEXT_PROBE_FILE, DenseText
from index.tokenizer import TextTokenizer
from model_export.export import onnx_session
from model_export.text.dense import (
    DenseConfig,
    TwoTower,
    in_batch_loss,
    recall_at,
    train_dense,
    write_dense,
)
from service.registry import BundleRegistry
from service.runtime import LoadedBundle
from service.store import InMemorySessionStore

TITLES = [
    "running shoe lightweight mesh",
    "leather hiking boot waterproof",
    "cotton crew neck shirt",
    "denim jeans slim fit",
    "wool winter coat",
    "stainless steel water bottle",
    "ceramic coffee mug",
    "wireless bluetooth headphones",
    "mechanical keyboard backlit",
    "optical computer mouse",
    "yoga mat non slip",
    "cast iron frying pan",
    "chef knife forged blade",
    "paperback mystery novel",
    "children picture book",
    "smartphone protective case",
    "usb charging cable",
    "polarized sunglasses",
    "laptop backpack padded",
    "scented soy candle",
]
# Queries a shopper types, mostly in words no title has (sneakers, parka, skillet, …).
QUERIES = {
    0: ["sneakers", "jogging sneakers", "trainers for running"],
    1: ["trekking boots", "mountain trekking", "hiking"],
    2: ["tee", "cotton tee", "basic tee"],
    3: ["blue jeans", "denim pants", "pants"],
    4: ["parka", "warm parka", "jacket for snow"],
    5: ["flask", "thermos", "drinking flask"],
    6: ["coffee cup", "tea cup", "cup"],
    7: ["earphones", "headset", "noise cancelling earphones"],
    8: ["gaming keys", "typing keys", "keyboard"],
    9: ["pc mouse", "clicker", "mouse"],
    10: ["pilates", "exercise pilates mat", "stretching"],
    11: ["skillet", "iron skillet", "pan"],
    12: ["cleaver", "kitchen cleaver", "santoku"],
    13: ["thriller", "whodunit thriller", "crime fiction"],
    14: ["kids stories", "storybook", "bedtime stories"],
    15: ["phone cover", "iphone cover", "cover"],
    16: ["charger cord", "charger", "cord"],
    17: ["shades", "dark shades", "eyewear"],
    18: ["rucksack", "school rucksack", "bag"],
    19: ["aromatherapy", "relaxing aromatherapy", "wax"],
}
PAIRS = [(query, label) for label, queries in QUERIES.items() for query in queries]
CONFIG = DenseConfig(
    dim=32, max_query_tokens=16, max_item_tokens=16, epochs=15, batch_size=16, lr=0.01, progress=False
)
AS_OF = 1_700_100_000


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return tokenizer_for([*TITLES, *(q for q, _ in PAIRS)])  # deterministic, unlike train_tokenizer


@pytest.fixture(scope="module")
def model(tokenizer: TextTokenizer) -> TwoTower:
    return train_dense(PAIRS, TITLES, tokenizer, CONFIG)


@pytest.fixture(scope="module")
def dense(
    model: TwoTower, tokenizer: TextTokenizer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, DenseSpec]:
    """The directory ``write_dense`` wrote ``DENSE_FILES`` into and the spec it returned."""
    directory = tmp_path_factory.mktemp("dense")
    return directory, write_dense(directory, model, TITLES, tokenizer, CONFIG)


def publish(
    root: Path,
    dense: tuple[Path, DenseSpec],
    tokenizer: TextTokenizer,
    *,
    tamper: Callable[[Path], None] | None = None,
    drop: str | None = None,
) -> Path:
    """A complete bundle over ``TITLES`` serving every channel, with the dense files; ``tamper``
    edits a copy of them first (so the checksums match the wrong content), ``drop`` leaves one out."""
    directory, spec = dense
    if tamper is not None or drop is not None:
        copy = root / "dense-copy"
        shutil.copytree(directory, copy)
        if tamper is not None:
            tamper(copy)
        if drop is not None:
            (copy / drop).write_bytes(b"")
        directory = copy
    bundle = write_text_bundle(
        root / "bundles", TITLES, 1, tokenizer=tokenizer, dense=(directory, spec), channels=ChannelsSpec()
    )
    if drop is not None:  # publish again without the file in the manifest
        manifest = read_manifest(bundle)
        fields = manifest.model_dump(by_alias=True, exclude={"version", "files", "created_at"})
        with staging(root / "dropped") as stage:
            for name in manifest.files:
                if name != drop:
                    shutil.copy2(bundle / name, stage / name)
            return commit(root / "dropped", stage, fields, version=1)
    return bundle


# --- training ----------------------------------------------------------------------------------


def test_training_ranks_each_querys_clicked_item_in_its_top_3(
    model: TwoTower, tokenizer: TextTokenizer
) -> None:
    untrained = train_dense(PAIRS, TITLES, tokenizer, replace(CONFIG, epochs=0))
    before = recall_at(untrained, PAIRS, TITLES, tokenizer, 3)
    after = recall_at(model, PAIRS, TITLES, tokenizer, 3)
    assert after >= 0.9, f"recall@3 {after:.2f} (chance is 3/{len(TITLES)} = {3 / len(TITLES):.2f})"
    assert before < 0.5


def test_training_is_deterministic_for_a_seed(model: TwoTower, tokenizer: TextTokenizer) -> None:
    again = train_dense(PAIRS, TITLES, tokenizer, replace(CONFIG, epochs=2))
    once_more = train_dense(PAIRS, TITLES, tokenizer, replace(CONFIG, epochs=2))
    for a, b in zip(again.parameters(), once_more.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_copy_of_the_clicked_item_elsewhere_in_the_batch_is_not_a_negative(
    tokenizer: TextTokenizer,
) -> None:
    model = TwoTower(tokenizer.vocab_size, CONFIG)
    queries = torch.from_numpy(tokenizer.ids(["parka", "warm parka"], CONFIG.max_query_tokens))
    items = torch.from_numpy(tokenizer.ids([TITLES[4], TITLES[4]], CONFIG.max_item_tokens))
    # Both rows clicked item 4: with the copy masked each row has only its positive left.
    assert in_batch_loss(model, queries, items, torch.tensor([4, 4])).item() == pytest.approx(0.0, abs=1e-6)
    assert in_batch_loss(model, queries, items, torch.tensor([4, 5])).item() > 0.1


# --- export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 4, 16, 23])
def test_the_exported_query_encoder_agrees_with_torch_at_any_length(
    model: TwoTower, tokenizer: TextTokenizer, dense: tuple[Path, DenseSpec], length: int
) -> None:
    rng = np.random.default_rng(length)
    tokens = rng.integers(1, tokenizer.vocab_size, size=(3, length), dtype=np.int64)
    tokens[1, length // 2 + 1 :] = 0  # a right-padded row in the batch
    (actual,) = onnx_session(dense[0] / QUERY_ENCODER_FILE).run(["query_vec"], {"query_tokens": tokens})
    with torch.no_grad():
        expected = model.query(torch.from_numpy(tokens)).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), 1.0, atol=1e-5)


# --- the bundle files ----------------------------------------------------------------------------


def load_dense(dense: tuple[Path, DenseSpec]) -> DenseText:
    return DenseText.load(dense[0], dense[1], len(TITLES), CONFIG.max_query_tokens)


def test_search_finds_the_trained_items_for_queries_the_titles_lack(
    dense: tuple[Path, DenseSpec], tokenizer: TextTokenizer
) -> None:
    loaded = load_dense(dense)
    for query, label in [("parka", 4), ("skillet", 11), ("rucksack", 18), ("earphones", 7)]:
        labels, scores = loaded.search(query, tokenizer, 3, frozenset())
        assert label in labels.tolist(), query
        assert labels.dtype == np.int64 and scores.dtype == np.float32
        assert np.all(np.diff(scores) <= 0)


def test_search_never_returns_an_excluded_item_and_returns_exactly_k(
    dense: tuple[Path, DenseSpec], tokenizer: TextTokenizer
) -> None:
    loaded = load_dense(dense)
    excluded = frozenset({4, 2, 3, 17})
    for k in (1, 5, 16):
        labels, _ = loaded.search("warm parka", tokenizer, k, excluded)
        assert len(labels) == len(set(labels.tolist())) == k
        assert not excluded & set(labels.tolist())
    labels, _ = loaded.search("warm parka", tokenizer, 100, excluded)
    assert sorted(labels.tolist()) == sorted(set(range(len(TITLES))) - excluded)
    assert loaded.search("   ", tokenizer, 5, frozenset())[0].size == 0  # no pieces: no neighbours


def test_a_bundle_with_the_dense_files_loads_them(
    dense: tuple[Path, DenseSpec], tokenizer: TextTokenizer, tmp_path: Path
) -> None:
    bundle = LoadedBundle.load(publish(tmp_path, dense, tokenizer))
    assert bundle.text is not None and bundle.text.dense is not None


def _garbage_encoder(stage: Path) -> None:
    (stage / QUERY_ENCODER_FILE).write_bytes(b"not an onnx model")


def _shifted_probe(stage: Path) -> None:
    with np.load(stage / TEXT_PROBE_FILE) as probe:
        tokens, vec = probe["query_tokens"], probe["query_vec"]
    with (stage / TEXT_PROBE_FILE).open("wb") as f:
        np.savez(f, query_tokens=tokens, query_vec=vec + np.float32(0.01))


def _truncated_index(stage: Path) -> None:
    data = (stage / TEXT_INDEX_FILE).read_bytes()
    (stage / TEXT_INDEX_FILE).write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (_garbage_encoder, QUERY_ENCODER_FILE),
        (_shifted_probe, TEXT_PROBE_FILE),
        (_truncated_index, TEXT_INDEX_FILE),
    ],
)
def test_a_bundle_whose_dense_files_are_wrong_is_refused_naming_the_file(
    dense: tuple[Path, DenseSpec],
    tokenizer: TextTokenizer,
    tmp_path: Path,
    tamper: Callable[[Path], None],
    named: str,
) -> None:
    directory = publish(tmp_path, dense, tokenizer, tamper=tamper)
    with pytest.raises(BundleError, match=named.replace(".", r"\.")):
        LoadedBundle.load(directory)


def test_a_manifest_promising_the_dense_channel_without_its_files_is_refused(
    dense: tuple[Path, DenseSpec], tokenizer: TextTokenizer, tmp_path: Path
) -> None:
    directory = publish(tmp_path, dense, tokenizer, drop=TEXT_INDEX_FILE)
    with pytest.raises(BundleError, match=r"does not list text_items\.hnsw"):
        LoadedBundle.load(directory)


# --- the channel ---------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_search_request_gets_dense_candidates_and_a_plain_one_none(
    dense: tuple[Path, DenseSpec], tokenizer: TextTokenizer, tmp_path: Path
) -> None:
    root = publish(tmp_path, dense, tokenizer).parent
    store = InMemorySessionStore()
    await store.append(history("alice", ["item-0000", "item-0001"]))
    async with serving(root, store=store, registry=BundleRegistry(root, LoadedBundle.load)) as client:
        search = await recall(client, k=5, query="warm parka", exclude_seen=True, as_of=AS_OF)
        plain = await recall(client, k=5, exclude_seen=True, as_of=AS_OF)
        alone = await recall(client, k=3, query="skillet", channels=["dense"], exclude_seen=True, as_of=AS_OF)
    dense_ranked = sorted(
        (entry["channels"]["dense"]["rank"], entry["item_id"])
        for entry in search["items"]
        if "dense" in entry["channels"]
    )
    assert dense_ranked and dense_ranked[0][1] == "item-0004"
    assert search["degraded"] is False
    assert not any("dense" in entry["channels"] for entry in plain["items"])
    assert ids(alone)[0] == "item-0011" and len(ids(alone)) == 3
    assert not {"item-0000", "item-0001"} & set(ids(alone))
