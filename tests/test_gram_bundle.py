"""The gram channel end to end on a really trained and published search bundle (``conftest``'s
``search_bundle_root``): the product side coded the catalog into the code index, requests are
answered through trie-constrained beam search over published codes within the beam and code
limits, and a bundle whose gram files are corrupt or inconsistent is refused while the served
one stays."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from fakes import channel_and_merged
from test_bundle_faults import Fault, _truncate, refused_while_the_served_one_stays, rewrite_npz, unlist

from index.bundle import read_manifest
from index.gram_generator import GRAM_DECODER_FILE, GRAM_PROBE_FILE
from index.gram_index import GRAM_INDEX_FILE
from index.gram_search import GRAM_FILES
from index.gram_vocab import EOS, GRAM_VOCAB_FILE, MAX_CODE_TOKENS
from service.runtime import LoadedBundle

QUERIES = ("red dress", "running shoes", "cotton shirt xl", "navy mens hoodie", "stainless steel pan")


@pytest.fixture(scope="module")
def good(search_bundle_root: Path) -> Path:
    return search_bundle_root / "1"


@pytest.fixture(scope="module")
def loaded(good: Path) -> LoadedBundle:
    return LoadedBundle.load(good)


def test_the_bundle_lists_the_gram_files_and_indexes_the_catalog(good: Path, loaded: LoadedBundle) -> None:
    manifest = read_manifest(good)
    assert manifest.text is not None and manifest.text.gram is not None
    assert set(GRAM_FILES) <= set(manifest.files)
    assert loaded.text is not None and loaded.text.gram is not None
    index = loaded.text.gram.index
    assert index.n_codes == manifest.text.gram.codes > 0
    coded = np.unique(index.items)
    # Every item with text (all of the search world's) is reachable through some code.
    assert len(coded) == loaded.vocab.n_items
    assert (index.table.codes == EOS).any(axis=1).all(), "every published code ends in EOS"


def test_the_search_emits_at_most_the_configured_codes_and_honours_exclusions(
    loaded: LoadedBundle,
) -> None:
    assert loaded.text is not None and loaded.text.gram is not None
    gram, tokenizer = loaded.text.gram, loaded.text.tokenizer
    for query in QUERIES:
        for beam, max_codes in ((10, 10), (4, 3), (1, 1)):
            rows, query_logp, scores = gram.generate_for(query, tokenizer, beam, max_codes)
            assert 0 < len(rows) <= max_codes and len(set(rows.tolist())) == len(rows)
            assert query_logp.shape == (len(rows), MAX_CODE_TOKENS)
            assert (np.diff(scores) <= 1e-6).all(), "codes come best first"
            assert (gram.index.table.row_of(gram.index.table.codes[rows]) == rows).all()
        rows, query_logp, _ = gram.generate_for(query, tokenizer, 10, 10)
        labels, item_scores = gram.items_of(rows, query_logp, 100, np.zeros(0, np.int64))
        assert 0 < len(labels) <= 100 and len(set(labels.tolist())) == len(labels)
        assert (np.diff(item_scores) <= 1e-6).all()
        excluded = frozenset(labels[: len(labels) // 2].tolist())
        kept, _ = gram.items_of(rows, query_logp, 100, excluded)
        assert not excluded & set(kept.tolist())
        # The unexcluded items keep their order, and the freed places go to the next items.
        rest = [label for label in labels.tolist() if label not in excluded]
        assert kept.tolist()[: len(rest)] == rest


def test_a_query_without_pieces_gets_nothing(loaded: LoadedBundle) -> None:
    assert loaded.text is not None and loaded.text.gram is not None
    labels, _ = loaded.text.gram.search("   ", loaded.text.tokenizer, 50, np.zeros(0, np.int64), 10, 10)
    assert len(labels) == 0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_search_request_gets_gram_candidates_and_a_plain_one_none(
    search_bundle_root: Path, loaded: LoadedBundle
) -> None:
    items = loaded.vocab.item_ids[:4].tolist()
    alone, search, plain = await channel_and_merged(search_bundle_root, items, "gram", "running shoes", 20)
    assert alone["answered_channels"] == ["gram"] and len(alone["items"]) == 20
    assert any("gram" in entry["channels"] for entry in alone["items"])
    assert not set(items) & {entry["item_id"] for entry in alone["items"]}
    assert "gram" in search["answered_channels"]
    assert "gram" not in plain["answered_channels"]
    assert not any("gram" in entry["channels"] for entry in plain["items"])


# --- refusals -------------------------------------------------------------------------------------


def _swap_two_codes(arrays: dict[str, np.ndarray]) -> None:
    arrays["codes"][[0, 1]] = arrays["codes"][[1, 0]]


def _item_outside_the_catalog(arrays: dict[str, np.ndarray]) -> None:
    arrays["items"][-1] = 10**6


def _other_probe_logits(arrays: dict[str, np.ndarray]) -> None:
    arrays["logits"] = arrays["logits"] + 0.5


def _drop_a_token(directory: Path) -> None:
    path = directory / GRAM_VOCAB_FILE
    text = path.read_text()
    start = text.index('"tokens": [') + len('"tokens": [')
    end = text.index(",", start)
    path.write_text(text[:start] + text[end + 1 :])


FAULTS = [
    Fault(
        "truncated code index", r"checksum mismatch for gram_index\.npz", damage=_truncate(GRAM_INDEX_FILE)
    ),
    Fault(
        "code index out of order, checksum of the bad file",
        r"gram channel refused: gram_index\.npz: ",
        staged=rewrite_npz(GRAM_INDEX_FILE, _swap_two_codes),
    ),
    Fault(
        "code index naming an item outside the catalog",
        r"gram channel refused: gram_index\.npz: ",
        staged=rewrite_npz(GRAM_INDEX_FILE, _item_outside_the_catalog),
    ),
    Fault(
        "code vocabulary of another size",
        r"gram channel refused: gram_vocab\.json: ",
        staged=_drop_a_token,
    ),
    Fault(
        "generator that does not reproduce its probe",
        rf"gram channel refused: .*{re.escape(GRAM_DECODER_FILE)}",
        staged=rewrite_npz(GRAM_PROBE_FILE, _other_probe_logits),
    ),
    Fault(
        "gram configured without its files",
        r"manifest configures the gram channel but does not list gram_index\.npz",
        staged=unlist(GRAM_INDEX_FILE),
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_a_bundle_with_corrupt_gram_files_is_refused_and_the_served_one_stays(
    fault: Fault, good: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await refused_while_the_served_one_stays(good, tmp_path, fault, caplog)
