"""Build a run's text channels beside its NSP model: BM25 over the catalog texts and the dense
two-tower trained on the training period's query → click pairs, both on the shared tokenizer.

Every catalog item is indexed (items that arrived after training included: text needs no
interactions), so the text channels retrieve new items at once. The files land in the run
directory with ``text.json`` (the manifest's ``TextSpec``); ``publish`` copies them into the
bundle. ``offline_text_searches`` loads them back through the same ``index`` code the service
runs, for fitting the search merge and for evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from index.bm25 import BM25_FILES, Bm25Index, build_bm25
from index.bundle import Bm25Params, TextSpec
from index.dense import DenseText
from index.features import Session
from index.fusion import Candidates
from index.gram_search import GRAM_FILES, GramSearch
from index.sid_search import SID_FILES, SidSearch, recent_engaged
from index.tokenizer import TOKENIZER_FILE, TextTokenizer
from index.vocab import Vocabulary
from model_export.channels import TextSearch
from model_export.data import Dataset
from model_export.gram.build import build_gram_channel
from model_export.gram.config import GramConfig
from model_export.gram.targets import ProductAttributes
from model_export.sid.build import SidConfig, build_sid_channel
from model_export.text.corpus import query_pairs
from model_export.text.dense import DENSE_FILES, DenseConfig, train_dense, write_dense

log = logging.getLogger(__name__)

TEXT_SPEC_FILE = "text.json"


@dataclass
class TextConfig:
    """Plain values only: it is saved in the checkpoint, which loads with ``weights_only``."""

    bm25: bool = True
    dense: bool = True
    bm25_k1: float = Bm25Params().k1  # the library's (and Lucene's) defaults
    bm25_b: float = Bm25Params().b
    dense_config: DenseConfig = field(default_factory=DenseConfig)
    sid_config: SidConfig = field(default_factory=SidConfig)  # the sid channel, built on dense
    gram_config: GramConfig = field(default_factory=GramConfig)  # the gram channel, filtered by dense

    @property
    def bm25_params(self) -> Bm25Params:
        return Bm25Params(k1=self.bm25_k1, b=self.bm25_b)


def build_text_channels(
    dataset: Dataset,
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    out_dir: Path,
    config: TextConfig,
    products: ProductAttributes | None = None,
) -> TextSpec:
    """Write the text indexes and ``text.json`` into ``out_dir`` (``train`` writes the tokenizer
    beside them); returns the spec.

    ``texts`` holds one text per vocabulary label. The dense channel is left out when the
    training period has no query → click pairs to learn from; the gram channel also without
    ``products`` (the catalog's titles and attributes).
    """
    spec = TextSpec(max_query_tokens=config.dense_config.max_query_tokens)
    if config.bm25:
        params = config.bm25_params
        build_bm25(texts, tokenizer, params).save(out_dir)
        spec.bm25 = params
    pairs = query_pairs(dataset.train, dataset.vocab)
    if config.dense and pairs:
        val_pairs = [
            (case.target.query, label)
            for case in dataset.search_val
            for item in case.target_items()
            if (label := dataset.vocab.item_index(item)) is not None
        ]
        model = train_dense(pairs, texts, tokenizer, config.dense_config, val_pairs or None)
        spec.dense = write_dense(out_dir, model, texts, tokenizer, config.dense_config)
        if config.sid_config.enabled:
            spec.sid = build_sid_channel(dataset, texts, tokenizer, model, out_dir, config.sid_config)
        if config.gram_config.enabled and products is not None:
            spec.gram = build_gram_channel(
                dataset, texts, tokenizer, model, products, out_dir, config.gram_config
            )
    elif config.dense:
        log.warning("no query → click pairs in the training period: no dense text channel")
    (out_dir / TEXT_SPEC_FILE).write_text(spec.model_dump_json(indent=2))
    return spec


def text_files(spec: TextSpec) -> list[str]:
    """The run files a bundle with this text section carries."""
    files = [TOKENIZER_FILE]
    if spec.bm25 is not None:
        files += BM25_FILES
    if spec.dense is not None:
        files += DENSE_FILES
    if spec.sid is not None:
        files += SID_FILES
    if spec.gram is not None:
        files += GRAM_FILES
    return files


def read_text_spec(run_dir: Path) -> TextSpec | None:
    path = run_dir / TEXT_SPEC_FILE
    return TextSpec.model_validate_json(path.read_text()) if path.is_file() else None


def offline_text_searches(
    run_dir: Path, spec: TextSpec, tokenizer: TextTokenizer, vocab: Vocabulary
) -> dict[str, TextSearch]:
    """Each text channel of the run as ``(query, depth, excluded labels) → list``, computed by
    the index code the service runs."""
    searches: dict[str, TextSearch] = {}
    if spec.bm25 is not None:
        bm25 = Bm25Index.load(run_dir, vocab.n_items, spec.bm25)

        def bm25_search(query: str, _: Sequence[Session], depth: int, excluded: np.ndarray) -> Candidates:
            return bm25.search(query, tokenizer, depth, excluded)

        searches["bm25"] = bm25_search
    if spec.dense is not None:
        dense = DenseText.load(run_dir, spec.dense, vocab.n_items, spec.max_query_tokens)

        def dense_search(query: str, _: Sequence[Session], depth: int, excluded: np.ndarray) -> Candidates:
            return dense.search(query, tokenizer, depth, frozenset(excluded.tolist()))

        searches["dense"] = dense_search
    if spec.sid is not None:
        sid = SidSearch.load(run_dir, spec.sid, vocab.n_items)

        def sid_search(
            query: str, history: Sequence[Session], depth: int, excluded: np.ndarray
        ) -> Candidates:
            recent = recent_engaged(history, vocab, sid.spec.user_sids)
            return sid.search(
                query, tokenizer, recent, depth, excluded, sid.beam_for(depth, max(sid.spec.beams))
            )

        searches["sid"] = sid_search
    if spec.gram is not None:
        gram = GramSearch.load(run_dir, spec.gram, vocab.n_items)

        def gram_search(query: str, _: Sequence[Session], depth: int, excluded: np.ndarray) -> Candidates:
            return gram.search(query, tokenizer, depth, excluded, gram.spec.beam, gram.spec.max_codes)

        searches["gram"] = gram_search
    return searches
