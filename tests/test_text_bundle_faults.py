"""Corrupt search sides of real bundles: the tokenizer and the bm25 index, damaged after
publishing (the checksum catches it) or already damaged when the checksums were taken (a bad
export: the reader must catch it). Each is refused at load with a ``BundleError`` naming the
file, and the registry keeps serving the bundle it had (``test_bundle_faults`` for the rest of
a bundle)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_bundle_faults import Fault, _truncate, publish_faulty, refused_while_the_served_one_stays, unlist
from text_bundles import TITLES, tokenizer_for, write_text_bundle

from index.bm25 import BM25_DATA, BM25_FILES, BM25_INDPTR, BM25_VOCAB, build_bm25
from index.bundle import Bm25Params, BundleError
from index.tokenizer import TOKENIZER_FILE
from service.channels.bm25 import Bm25Channel
from service.runtime import LoadedBundle

PARAMS = Bm25Params()
N = len(TITLES)
NONE = np.zeros(0, dtype=np.int64)


def _flip_middle_byte(name: str) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        data = bytearray((directory / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (directory / name).write_bytes(bytes(data))

    return damage


def _index_of(texts: list[str]) -> Callable[[Path], None]:
    def stage(directory: Path) -> None:
        for name in BM25_FILES:
            (directory / name).unlink()
        build_bm25(texts, tokenizer_for(TITLES), PARAMS).save(directory)

    return stage


def _non_finite_scores(directory: Path) -> None:
    scores = np.load(directory / BM25_DATA)
    scores[len(scores) // 2] = np.nan
    np.save(directory / BM25_DATA, scores)


FAULTS = [
    Fault("truncated tokenizer", r"checksum mismatch for tokenizer\.json", damage=_truncate(TOKENIZER_FILE)),
    Fault(
        "truncated tokenizer, checksum of the truncated file",
        r"unreadable tokenizer\.json: .*not a tokenizer file",
        staged=_truncate(TOKENIZER_FILE),
    ),
    Fault(
        "tokenizer not listed",
        r"manifest configures text channels but does not list tokenizer\.json",
        staged=unlist(TOKENIZER_FILE),
    ),
    Fault(
        "flipped byte in the bm25 scores",
        r"checksum mismatch for bm25\.data\.npy",
        damage=_flip_middle_byte(BM25_DATA),
    ),
    Fault(
        "truncated bm25 offsets, checksum of the truncated file",
        r"unreadable bm25 index: bm25\.indptr\.npy: ",
        staged=_truncate(BM25_INDPTR),
    ),
    Fault(
        "truncated bm25 vocabulary, checksum of the truncated file",
        r"unreadable bm25 index: bm25\.vocab\.json: not JSON",
        staged=_truncate(BM25_VOCAB),
    ),
    Fault(
        "bm25 scores not finite, checksum of the corrupt file",
        r"unreadable bm25 index: bm25\.data\.npy: scores are not all finite",
        staged=_non_finite_scores,
    ),
    Fault(
        "bm25 index of another catalog",
        rf"unreadable bm25 index: bm25\.params\.json: index of {N - 1} items, the catalog has {N}",
        staged=_index_of(TITLES[:-1]),
    ),
    Fault(
        "bm25 configured without its files",
        r"manifest configures the bm25 channel but does not list bm25\.data\.npy, bm25\.indices\.npy",
        staged=unlist(*BM25_FILES),
    ),
]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_bundle(tmp_path_factory.mktemp("good-text"), TITLES, 1, bm25=PARAMS)


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_a_valid_text_bundle_loads_with_its_tokenizer_and_bm25_index(good: Path) -> None:
    loaded = LoadedBundle.load(good)
    assert loaded.text is not None and loaded.text.bm25 is not None
    assert Bm25Channel(executor=None).available(loaded)  # type: ignore[arg-type]
    found = loaded.text.bm25.search("hiking boots", loaded.text.tokenizer, 5, NONE)[0]
    assert loaded.vocab.item_ids[found].tolist() == ["item-0002", "item-0007"]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_a_bundle_with_a_corrupt_search_side_is_refused_and_the_served_one_stays(
    fault: Fault, good: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await refused_while_the_served_one_stays(good, tmp_path, fault, caplog)


def test_a_damaged_bm25_file_is_refused_before_the_bm25_reader_opens_it(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr("service.text_indexes.Bm25Index.load", lambda *a, **k: opened.append("bm25"))
    fault = Fault("t", "", damage=_truncate(BM25_INDPTR))
    with pytest.raises(BundleError, match=r"checksum mismatch for bm25\.indptr\.npy"):
        LoadedBundle.load(publish_faulty(good, tmp_path / "bundles", 2, fault))
    assert opened == []
