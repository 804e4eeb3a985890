"""The NSP context token reads the search query: token columns, the model, ONNX export, and a
log with queries through train → publish → load → the nsp channel's tokens."""

from __future__ import annotations

import asyncio
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import run_cli
from fakes import manifest_fields, write_real_bundle

from index import bundle
from index.bundle import MANIFEST, BundleError
from index.features import COL, CONTEXT, ITEM, N_FEATURES, QUERY_START, QueryText, Session, build_tokens
from index.features import stack_left_padded as stack
from index.tokenizer import TOKENIZER_FILE, TextTokenizer, train_tokenizer
from index.vocab import Vocabulary
from model_export.batches import make_nsp_batch
from model_export.data import EvalCase
from model_export.evaluate import case_sequence
from model_export.export import check_agreement, export_encoder
from model_export.model import Encoder, NSPConfig, NSPModel
from model_export.publish import QualityGate, publish
from service.batching import EncodeBatcher
from service.channels.base import RequestContext
from service.channels.nsp import NspChannel, tokens
from service.metrics import Metrics
from service.runtime import LoadedBundle

T0 = 1767225600
PIECES = 6
VOCAB = Vocabulary.build(
    [f"i{i}" for i in range(40)], [f"c{i % 4}" for i in range(40)], list(range(40)), ["home", "search"]
)
TOKENIZER = train_tokenizer(
    ["red running shoes", "blue phone case", "green tea organic", "desk lamp warm white"] * 3,
    vocab_size=200,
    min_frequency=1,
)
QUERY_TEXT = QueryText(TOKENIZER, PIECES)


def history(n: int, queries: bool = False) -> list[Session]:
    return [
        Session(
            f"r{j}",
            T0 + 900 * j,
            "search" if queries and j % 2 else "home",
            tuple((f"i{(3 * j + x) % 40}", 1 + x % 4) for x in range(4)),
            ("red shoes", "phone case", "green tea")[j % 3] if queries and j % 2 else "",
        )
        for j in range(n)
    ]


def model(pieces: int = PIECES) -> NSPModel:
    torch.manual_seed(0)
    config = NSPConfig(
        n_items=40,
        n_category_tokens=VOCAB.n_category_tokens,
        n_scene_tokens=VOCAB.n_scene_tokens,
        query_pieces=pieces,
        query_vocab=TOKENIZER.vocab_size if pieces else 0,
    )
    return NSPModel(config).eval()


def vector(m: NSPModel, sequence: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = Encoder(m)(torch.from_numpy(sequence[None]))[0]
    return out


# --- token columns ------------------------------------------------------------------------


def test_without_query_text_the_rows_are_as_before_search() -> None:
    sessions = history(3, queries=True)
    tokens = build_tokens(sessions, "search", T0 + 86400, VOCAB, query="red shoes")
    assert tokens.shape == (3 * 5 + 1, N_FEATURES)
    unsearched = [session._replace(query="") for session in sessions]
    assert np.array_equal(tokens, build_tokens(unsearched, "search", T0 + 86400, VOCAB))
    assert stack([tokens]).shape == (1, 16, N_FEATURES)


def test_query_pieces_sit_on_context_rows_after_the_features() -> None:
    sessions = history(4, queries=True)
    plain = build_tokens(sessions, "search", T0 + 86400, VOCAB, query="blue phone case")
    rows = build_tokens(sessions, "search", T0 + 86400, VOCAB, query="blue phone case", query_text=QUERY_TEXT)
    assert rows.shape == (len(plain), N_FEATURES + PIECES)
    assert np.array_equal(rows[:, :N_FEATURES], plain)
    pieces = rows[:, QUERY_START:]
    context = np.flatnonzero(rows[:, COL["token_type"]] == CONTEXT)
    expected = TOKENIZER.ids([s.query for s in sessions] + ["blue phone case"], PIECES)
    assert np.array_equal(pieces[context], expected)
    assert (pieces[context[-1]] > 0).any()  # the request's query, on the last row
    assert not pieces[context[0]].any()  # a session without a query: zeros
    assert not pieces[rows[:, COL["token_type"]] == ITEM].any()
    # a recommendation request: no query on the last row, the history's queries kept
    rec = build_tokens(sessions, "home", T0 + 86400, VOCAB, query_text=QUERY_TEXT)
    assert not rec[-1, QUERY_START:].any() and np.array_equal(rec[:-1], rows[:-1])
    batch = stack([rec, build_tokens([], "home", T0, VOCAB, query_text=QUERY_TEXT)])
    assert batch.shape == (2, len(rec), N_FEATURES + PIECES) and not batch[1, :-1].any()


def test_training_and_evaluation_sequences_carry_the_request_query() -> None:
    sessions = history(6, queries=True)
    batch = make_nsp_batch([sessions], [5], VOCAB, 20, 12, horizons=1, query_text=QUERY_TEXT)
    assert batch.tokens.shape[-1] == N_FEATURES + PIECES
    request = batch.tokens[0, -1, QUERY_START:].numpy()
    assert np.array_equal(request, TOKENIZER.ids([sessions[5].query], PIECES)[0]) and request.any()
    case = EvalCase("u", sessions[:5], sessions[5])
    sequence = case_sequence(case, VOCAB, "nsp", 20, 12, 100, QUERY_TEXT)
    assert np.array_equal(sequence, batch.tokens[0].numpy()[-len(sequence) :])


# --- the model ------------------------------------------------------------------------------


def test_user_vector_follows_the_query_alone() -> None:
    m = model()
    sessions = history(5, queries=True)

    def user(query: str, past: list[Session] = sessions) -> torch.Tensor:
        return vector(m, build_tokens(past, "search", T0 + 86400, VOCAB, query=query, query_text=QUERY_TEXT))

    shoes, tea = user("red running shoes"), user("green tea")
    assert (shoes - tea).abs().max() > 1e-3
    torch.testing.assert_close(user("red running shoes"), shoes)  # deterministic
    # a history session's query is read too
    changed = [*sessions[:-2], sessions[-2]._replace(query="desk lamp"), sessions[-1]]
    assert (user("red running shoes", changed) - shoes).abs().max() > 1e-4


def test_a_request_without_any_query_gets_the_vector_of_the_model_without_the_query_table() -> None:
    with_queries, without = model(), model(pieces=0)
    state = {k: v for k, v in with_queries.state_dict().items() if not k.startswith("query.")}
    without.load_state_dict(state)
    sessions = history(5)
    wide = build_tokens(sessions, "home", T0 + 86400, VOCAB, query_text=QUERY_TEXT)
    narrow = build_tokens(sessions, "home", T0 + 86400, VOCAB)
    assert wide.shape[1] == N_FEATURES + PIECES
    torch.testing.assert_close(vector(with_queries, wide), vector(without, narrow))


def test_export_with_query_columns_agrees_with_torch_at_several_lengths(tmp_path: Path) -> None:
    m = model()
    sequences = [
        build_tokens(history(n, queries), "search", T0 + 86400, VOCAB, query=query, query_text=QUERY_TEXT)
        for n, queries, query in ((0, False, ""), (0, False, "red shoes"), (3, True, ""), (11, True, "tea"))
    ]
    path = tmp_path / "encoder.onnx"
    export_encoder(m, path, sequences[2][None])
    assert check_agreement(m, path, sequences) < 1e-4


# --- a log with queries: train → publish → load → the nsp channel --------------------------

COLORS = ("red", "blue", "green", "black", "white")
NOUNS = ("shoes", "phone case", "tea", "lamp")
N_USERS, N_ITEMS, DAYS = 24, 40, 6


def write_log(directory: Path) -> None:
    """A tiny log: every user two sessions a day, every other one a search for the clicked
    item's title; the catalog has titles."""
    rng = np.random.default_rng(0)
    titles = [f"{COLORS[i % 5]} {NOUNS[i % 4]}" for i in range(N_ITEMS)]
    catalog = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(N_ITEMS)],
            "category": [f"c{i % 4}" for i in range(N_ITEMS)],
            "price": [float(1 + i) for i in range(N_ITEMS)],
            "title": titles,
        }
    )
    rows = []
    for u in range(N_USERS):
        favourite = u % 4
        for s in range(2 * DAYS):
            ts = T0 + s * 43200 + 60 * u
            shown = rng.choice(np.arange(favourite, N_ITEMS, 4), size=4, replace=False)
            search = s % 2 == 1
            query = titles[int(shown[0])] if search else ""
            request = f"u{u}-{s}"
            for n, item in enumerate(shown.tolist()):
                action = "click" if n == 0 else "exposure"
                rows.append(
                    (f"u{u}", f"i{item}", ts + n, action, "search" if search else "home", request, query)
                )
    columns = ["user_id", "item_id", "ts", "action", "scene", "request_id", "query"]
    pd.DataFrame(rows, columns=columns).to_csv(directory / "events.csv", index=False)
    catalog.to_csv(directory / "catalog.csv", index=False)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data, run, root = (tmp_path_factory.mktemp(name) for name in ("data", "run", "bundles"))
    write_log(data)
    # fmt: off
    run_cli(
        "train", "--data", str(data), "--out", str(run), "--epochs", "1", "--dim", "16",
        "--query-pieces", "4", "--quiet",
    )
    # fmt: on
    assert (run / TOKENIZER_FILE).is_file()
    return publish(run, root, gate=QualityGate(force=True))


def test_a_log_with_queries_publishes_an_encoder_that_reads_them(published: Path) -> None:
    manifest = bundle.read_manifest(published)
    assert manifest.encoder.query_pieces == 4
    assert manifest.text is not None and TOKENIZER_FILE in manifest.files
    assert manifest.model_config_["query_vocab"] == TextTokenizer.load(published / TOKENIZER_FILE).vocab_size
    with np.load(published / bundle.PROBE_FILE) as probe:
        pieces = probe["tokens"][:, :, QUERY_START:]
    assert pieces.shape[-1] == 4
    assert pieces[:, -1].any(axis=-1).tolist() == [False] * 3 + [True] * 3  # probes with and without


def test_the_nsp_channel_puts_the_search_query_in_the_request_token(published: Path) -> None:
    loaded = LoadedBundle.load(published)
    assert loaded.text is not None
    sessions = history(3)
    search = tokens(loaded, sessions, "search", T0 + 86400, "red shoes")
    recommend = tokens(loaded, sessions, "home", T0 + 86400, None)
    assert search.shape[1] == recommend.shape[1] == N_FEATURES + 4
    assert np.array_equal(search[-1, QUERY_START:], loaded.text.tokenizer.ids(["red shoes"], 4)[0])
    assert search[-1, QUERY_START:].any() and not recommend[:, QUERY_START:].any()
    a, b = (
        loaded.encode(stack([tokens(loaded, sessions, "search", T0 + 86400, q)]))
        for q in ("red shoes", "tea")
    )
    assert np.abs(a - b).max() > 1e-4  # the query moves the user vector

    # Both request paths (encoder in the CPU pool, and micro-batched) read the request's query.
    empty = np.zeros(0, dtype=np.int64)
    request = RequestContext("u", sessions, "search", T0 + 86400, 10, False, empty, frozenset(), "red shoes")

    async def propose(batched: bool) -> list[int]:
        executor, metrics = ThreadPoolExecutor(1), Metrics()
        batcher = EncodeBatcher(executor, metrics, max_batch=4, workers=1) if batched else None
        if batcher is not None:
            batcher.start()
        try:
            labels, _ = await NspChannel(executor, metrics, batcher).propose(request, loaded)
        finally:
            if batcher is not None:
                await batcher.stop()
        return [int(label) for label in labels]

    expected = loaded.search(a, 10)[0][0].tolist()
    assert asyncio.run(propose(False)) == asyncio.run(propose(True)) == expected


def test_a_bundle_whose_encoder_reads_queries_without_a_tokenizer_is_refused(
    published: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "root" / published.name
    shutil.copytree(published, copy)
    raw = json.loads((copy / MANIFEST).read_text())
    del raw["files"][TOKENIZER_FILE]
    raw["text"] = None
    (copy / TOKENIZER_FILE).unlink()
    (copy / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="reads search queries"):
        LoadedBundle.load(copy)


def test_a_hand_built_bundle_that_claims_query_pieces_without_text_is_refused(tmp_path: Path) -> None:
    encoder = {**manifest_fields(40, 8)["encoder"], "query_pieces": 4}  # type: ignore[dict-item]
    directory = write_real_bundle(tmp_path, manifest_overrides={"encoder": encoder})
    with pytest.raises(BundleError, match="reads search queries"):
        LoadedBundle.load(directory)
