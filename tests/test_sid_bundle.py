"""The sid channel end to end on a really trained and published search bundle (``conftest``'s
``search_bundle_root``): every catalog item has its SID, level 1 is the category, requests are
answered from the table through trie-constrained beam search, and a bundle whose SID files are
corrupt or inconsistent is refused while the served one stays."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from fakes import channel_and_merged
from test_bundle_faults import Fault, _truncate, refused_while_the_served_one_stays, rewrite_npz, unlist

from index.bundle import read_manifest
from index.features import Session
from index.sid_generator import SID_DECODER_FILE, SID_PROBE_FILE
from index.sid_search import SID_FILES, recent_engaged
from index.sid_table import SID_TABLE_FILE
from index.sid_trie import SID_TRIE_FILE
from index.vocab import Vocabulary
from service.runtime import LoadedBundle

QUERIES = ("red dress", "running shoes", "cotton shirt xl", "garden hose", "stainless steel pan")


@pytest.fixture(scope="module")
def good(search_bundle_root: Path) -> Path:
    return search_bundle_root / "1"


@pytest.fixture(scope="module")
def loaded(good: Path) -> LoadedBundle:
    return LoadedBundle.load(good)


def test_the_bundle_lists_the_sid_files_and_codes_every_catalog_item(
    good: Path, loaded: LoadedBundle
) -> None:
    manifest = read_manifest(good)
    assert manifest.text is not None and manifest.text.sid is not None
    assert set(SID_FILES) <= set(manifest.files)
    assert loaded.text is not None and loaded.text.sid is not None
    table = loaded.text.sid.table
    assert (table.item_sid >= 0).all(), "an item without a SID cannot be retrieved by the channel"
    assert sorted(table.items.tolist()) == list(range(loaded.vocab.n_items))


def test_level_one_is_the_category_of_every_categorised_item(loaded: LoadedBundle) -> None:
    assert loaded.text is not None and loaded.text.sid is not None
    sid = loaded.text.sid
    categorised = loaded.vocab.item_category > 0
    assert categorised.any()
    assert (sid.item_codes[categorised, 0] == loaded.vocab.item_category[categorised] - 1).all()
    assert sid.spec.categories == int(loaded.vocab.n_category_tokens) - 1


def test_the_search_emits_only_published_sids_and_honours_exclusions(loaded: LoadedBundle) -> None:
    assert loaded.text is not None and loaded.text.sid is not None
    sid, tokenizer = loaded.text.sid, loaded.text.tokenizer
    for query in QUERIES:
        rows, scores = sid.generate_for(query, tokenizer, [], 50)
        assert 0 < len(rows) <= 50 and len(set(rows.tolist())) == len(rows)
        assert (sid.table.rows_of(sid.table.codes[rows]) == rows).all()
        assert (np.diff(scores) <= 1e-6).all(), "beams come best first"
        labels, _ = sid.items_of(rows, scores, 100, np.zeros(0, np.int64))
        excluded = frozenset(labels[: len(labels) // 2].tolist())
        kept, _ = sid.items_of(rows, scores, 100, excluded)
        assert not excluded & set(kept.tolist())
        assert kept.tolist() == [label for label in labels.tolist() if label not in excluded][: len(kept)]


def test_the_beam_follows_the_depth_within_the_setting(loaded: LoadedBundle) -> None:
    assert loaded.text is not None and loaded.text.sid is not None
    sid = loaded.text.sid
    ladder = sorted(sid.spec.beams)
    assert sid.beam_for(1, 1000) == ladder[0]
    assert sid.beam_for(10**6, 1000) == ladder[-1]
    assert sid.beam_for(10**6, 7) == 7


def test_the_user_context_is_the_recent_engaged_items_newest_first() -> None:
    vocab = Vocabulary.build(["a", "b", "c", "d"], ["x"] * 4, [1.0] * 4, ["default"])
    older = Session("r1", 1, "default", [("a", 2), ("b", 1)])
    newer = Session("r2", 2, "default", [("c", 2), ("a", 3), ("d", 1)])
    assert recent_engaged([older, newer], vocab, 5) == [2, 0]
    assert recent_engaged([older, newer], vocab, 1) == [2]
    assert recent_engaged([older, newer], vocab, 0) == []


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_search_request_gets_sid_candidates_and_a_plain_one_none(
    search_bundle_root: Path, loaded: LoadedBundle
) -> None:
    items = loaded.vocab.item_ids[:4].tolist()
    alone, search, plain = await channel_and_merged(search_bundle_root, items, "sid", "red dress", 30)
    assert alone["answered_channels"] == ["sid"] and len(alone["items"]) == 30
    from_sid = [entry for entry in alone["items"] if "sid" in entry["channels"]]
    assert from_sid and not set(items) & {entry["item_id"] for entry in alone["items"]}
    assert "sid" in search["answered_channels"]
    assert "sid" not in plain["answered_channels"]
    assert not any("sid" in entry["channels"] for entry in plain["items"])


# --- refusals -------------------------------------------------------------------------------------


def _swap_two_codes(arrays: dict[str, np.ndarray]) -> None:
    arrays["codes"][[0, 1]] = arrays["codes"][[1, 0]]


def _offsets_past_the_end(arrays: dict[str, np.ndarray]) -> None:
    arrays["offsets"][-1] += 5


def _trie_of_another_table(arrays: dict[str, np.ndarray]) -> None:
    arrays["values_3"][0] += 1


def _other_probe_logits(arrays: dict[str, np.ndarray]) -> None:
    arrays["logits"] = arrays["logits"] + 0.5


FAULTS = [
    Fault("truncated SID table", r"checksum mismatch for sid_table\.npz", damage=_truncate(SID_TABLE_FILE)),
    Fault(
        "SID table out of order, checksum of the bad file",
        r"sid channel refused: sid_table\.npz: ",
        staged=rewrite_npz(SID_TABLE_FILE, _swap_two_codes),
    ),
    Fault(
        "SID table offsets past its items, checksum of the bad file",
        r"sid channel refused: sid_table\.npz: ",
        staged=rewrite_npz(SID_TABLE_FILE, _offsets_past_the_end),
    ),
    Fault(
        "trie of another table",
        r"sid channel refused: sid_trie\.npz: ",
        staged=rewrite_npz(SID_TRIE_FILE, _trie_of_another_table),
    ),
    Fault(
        "generator that does not reproduce its probe",
        rf"sid channel refused: .*{re.escape(SID_DECODER_FILE)}",
        staged=rewrite_npz(SID_PROBE_FILE, _other_probe_logits),
    ),
    Fault(
        "sid configured without its files",
        r"manifest configures the sid channel but does not list sid_table\.npz, sid_trie\.npz",
        staged=unlist(SID_TABLE_FILE, SID_TRIE_FILE),
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_a_bundle_with_corrupt_sid_files_is_refused_and_the_served_one_stays(
    fault: Fault, good: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await refused_while_the_served_one_stays(good, tmp_path, fault, caplog)
