"""What GRAM's generator learns from: the catalog's attributes, the tagger run over titles and
queries, the code targets across the click link, and the supervised rows built from them."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from index.gram_trie import CodeTable
from index.gram_vocab import RESERVED, Code, CodeVocab
from index.tokenizer import TextTokenizer
from index.vocab import Vocabulary
from model_export.data import Dataset
from model_export.gram.codes import click_link_targets, product_codes
from model_export.gram.config import GramConfig
from model_export.gram.extract import extract
from model_export.gram.generator import (
    PRODUCT_TASK,
    QUERY_TASK,
    CodeExamples,
    GramGeneratorConfig,
)
from model_export.gram.lexicon import Lexicon, companion_values, item_attributes, read_lexicon
from model_export.gram.tagger import (
    AttributeTagger,
    TaggerConfig,
    query_spans,
    tagger_accuracy,
    title_spans,
    train_tagger,
)
from model_export.sid.data import trained_items
from model_export.text.corpus import query_pairs
from model_export.text.dense import TwoTower

log = logging.getLogger(__name__)

VALUE_PIECES = 4  # pieces of a value the code embedding reads ("stainless steel", "t-shirt")


@dataclass(frozen=True)
class ProductAttributes:
    """What the gram channel reads from the catalog beside the item texts, by vocabulary label."""

    lexicon: Lexicon
    titles: list[str]
    attributes: list[dict[str, str]]  # catalog columns named like attribute types, normalised


def product_attributes(catalog: pd.DataFrame, data_dir: Path, vocab: Vocabulary) -> ProductAttributes:
    """The lexicon (``lexicon.csv`` beside the catalog, merged with the catalog's own values) and
    every label's title and catalog attributes."""
    lexicon = read_lexicon(data_dir, catalog)
    by_id = item_attributes(catalog, lexicon)
    titles = dict(
        zip(catalog["item_id"].astype(str), catalog.get("title", catalog["item_id"]).astype(str), strict=True)
    )
    ids = [str(i) for i in vocab.item_ids.tolist()]
    return ProductAttributes(lexicon, [titles.get(i, "") for i in ids], [dict(by_id.get(i, {})) for i in ids])


@dataclass
class CodeData:
    """Step 1-2's output: every training query's and product's attributes and code targets."""

    query_attributes: dict[str, dict[str, str]]
    item_attributes: list[dict[str, str]]  # by label
    query_targets: dict[str, set[Code]]
    item_targets: dict[int, set[Code]]
    clicks: list[tuple[str, int]]  # distinct (query, label) engaged pairs of the training period
    tagger_accuracy: dict[str, dict[str, float]]
    tagger: AttributeTagger  # the trained tagger: the benchmark tags held-out queries with it


def extract_codes(dataset: Dataset, products: ProductAttributes, config: GramConfig) -> CodeData:
    """Train the tagger, extract query and product attributes, build the click-link targets."""
    vocab = dataset.vocab
    clicks = sorted(set(query_pairs(dataset.train, vocab)))
    queries = sorted({q for q, _ in clicks})
    trained = np.flatnonzero(trained_items(dataset.train, vocab))
    held_out = trained[::10]  # every tenth training item's title: the tagger's accuracy check
    fit_on = np.setdiff1d(trained, held_out)
    t_words, t_spans = title_spans(
        [products.titles[i] for i in fit_on], [products.attributes[i] for i in fit_on], products.lexicon
    )
    q_words, q_spans = query_spans(queries, products.lexicon)
    tagger_config = TaggerConfig(epochs=config.tagger_epochs, seed=config.seed, progress=config.progress)
    tagger = train_tagger([*t_words, *q_words], [*t_spans, *q_spans], tagger_config)
    h_words, h_spans = title_spans(
        [products.titles[i] for i in held_out], [products.attributes[i] for i in held_out], products.lexicon
    )
    accuracy = tagger_accuracy(tagger, h_words, h_spans)
    # A query's value is read among the values its product type takes ("medium" is a hoodie's m).
    companions = companion_values(products.attributes)
    query_attrs = dict(zip(queries, extract(tagger, products.lexicon, queries, companions), strict=True))
    tagged_titles = extract(tagger, products.lexicon, products.titles)
    # The catalog's own columns are the truth where present; the tagger fills the rest (series).
    attrs = [{**tagged, **own} for tagged, own in zip(tagged_titles, products.attributes, strict=True)]
    query_targets, item_targets = click_link_targets(query_attrs, attrs, clicks)
    rng = np.random.default_rng(config.seed)
    for label, targets in item_targets.items():
        own = product_codes(attrs[label])
        if len(own) > config.own_codes:
            # Its type alone and all of it, and a sample of the shapes between: the generator
            # learns which shapes a product answers from many products, not all from each.
            middle = own[1:-1]
            keep = rng.choice(len(middle), config.own_codes - 2, replace=False)
            item_targets[label] = (targets - set(own)) | {own[0], own[-1], *(middle[k] for k in keep)}
    return CodeData(query_attrs, attrs, query_targets, item_targets, clicks, accuracy, tagger)


def generator_config(config: GramConfig, tokenizer: TextTokenizer, vocab: CodeVocab) -> GramGeneratorConfig:
    return GramGeneratorConfig(
        text_vocab=tokenizer.vocab_size,
        code_vocab=vocab.size,
        dim=config.dim,
        ffn=2 * config.dim,
        layers=config.layers,
        max_text_tokens=max(config.max_item_tokens, config.max_query_tokens),
        value_pieces=VALUE_PIECES,
    )


def value_pieces(tokenizer: TextTokenizer, vocab: CodeVocab) -> np.ndarray:
    """(V, VALUE_PIECES) the shared tokenizer's pieces of each value token's value (0 for the
    reserved tokens): the text part of the generator's code embeddings."""
    values = [vocab.pair_of(token)[1] for token in range(RESERVED, vocab.size)]
    out = np.zeros((vocab.size, VALUE_PIECES), dtype=np.int64)
    if values:
        out[RESERVED:] = tokenizer.ids(values, VALUE_PIECES)
    return out


def examples(
    side: int,
    texts: Sequence[str],
    codes: Sequence[Code],
    tokenizer: TextTokenizer,
    vocab: CodeVocab,
    max_len: int,
) -> CodeExamples:
    ids = tokenizer.ids(list(texts), max_len) if texts else np.zeros((0, max_len), np.int64)
    return CodeExamples(ids, np.full(len(texts), side, np.int64), vocab.encode(list(codes)).reshape(-1, 7))


def target_examples(
    targets_q: Mapping[str, Iterable[Code]],
    targets_t: Mapping[int, Iterable[Code]],
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    vocab: CodeVocab,
    config: GramConfig,
) -> tuple[CodeExamples, CodeExamples]:
    """One row per (query, code) and per (product, code) target, in a stable order."""
    q_rows = [(q, c) for q in sorted(targets_q) for c in sorted(targets_q[q])]
    t_rows = [(t, c) for t in sorted(targets_t) for c in sorted(targets_t[t])]
    query = examples(
        QUERY_TASK, [q for q, _ in q_rows], [c for _, c in q_rows], tokenizer, vocab, config.max_query_tokens
    )
    product = examples(
        PRODUCT_TASK,
        [texts[t] for t, _ in t_rows],
        [c for _, c in t_rows],
        tokenizer,
        vocab,
        config.max_item_tokens,
    )
    return query, product


@dataclass
class GramTraining:
    """What every training stage reads: the run's inputs, the extracted codes, the code
    vocabulary, the universe of codes seen in training and the SFT rows."""

    dataset: Dataset
    texts: Sequence[str]
    tokenizer: TextTokenizer
    dense: TwoTower
    config: GramConfig
    data: CodeData
    vocab: CodeVocab
    universe: CodeTable
    base: tuple[CodeExamples, CodeExamples]
