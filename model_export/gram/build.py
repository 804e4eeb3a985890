"""Build a run's ``gram`` channel (GRAM, arXiv 2504.01403): attribute extraction, shared text
codes across the click link, the two-sided code generator (SFT, co-training, DPO co-alignment),
the query-product scorer and the bundle files the service reads (``index.gram_search.GRAM_FILES``).

1. *Attributes*: a learned tagger (``tagger``) trained on titles labelled with their own catalog
   values and on the training queries' dictionary matches; a product's attributes are its catalog
   columns, the tagger's where the catalog has none (series); a query's are the tagger's.
2. *Codes* (``codes``): a query's code and each product's ladder of codes, shared across the
   click link; their values make the code vocabulary.
3. *Generator* (``generator``): one small encoder-decoder, a task token per side, SFT on
   ``L_q + λ·L_t``; *co-training* (``cotrain``) adds generated pairs the dense two-tower finds
   relevant and trains both sides again; *co-alignment* (``align``) runs DPO on the codes both
   sides agree on against the codes only one side generates.
4. *Index*: the product side codes every catalog item (new ones included) by beam search over
   the codes seen in training; code → items postings keep the product side's token
   probabilities, which the scorer compares with the query side's (``index.gram_score``); the
   scorer's granularity weights are fitted on training clicks by a pairwise margin loss.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from index.bundle import GramSpec
from index.gram_index import CodeIndex
from index.gram_score import ScoreFeatures, ScoreWeights, score_features
from index.gram_trie import CodeTable, CodeTrie, Step, beam_search
from index.gram_vocab import Code, CodeVocab
from index.tokenizer import TextTokenizer
from index.vocab import Vocabulary
from model_export.data import Dataset
from model_export.gram.align import DpoConfig, PreferencePairs, train_dpo
from model_export.gram.codes import click_link_targets, product_codes
from model_export.gram.export import export_generator
from model_export.gram.generator import (
    PRODUCT_TASK,
    QUERY_TASK,
    CodeExamples,
    GramGenerator,
    GramGeneratorConfig,
    SftConfig,
    train_sft,
)
from model_export.gram.lexicon import CODE_TYPES, Lexicon, companion_values, item_attributes, read_lexicon
from model_export.gram.scorer import ScorerConfig, fit_weights
from model_export.gram.tagger import (
    AttributeTagger,
    TaggerConfig,
    extract,
    query_spans,
    tagger_accuracy,
    title_spans,
    train_tagger,
)
from model_export.progress import progress_bar
from model_export.sid.data import trained_items
from model_export.text.corpus import query_pairs
from model_export.text.dense import TwoTower, item_vectors, query_vectors

log = logging.getLogger(__name__)


@dataclass
class GramConfig:
    """Plain values only: it is saved in the checkpoint inside the text config."""

    enabled: bool = True
    tagger_epochs: int = 4
    dim: int = 128
    layers: int = 2  # encoder and decoder layers each
    max_item_tokens: int = 48  # pieces of a product's text (title + attributes) the generator reads
    max_query_tokens: int = 16  # the paper's max query length
    sft_epochs: int = 6
    batch_size: int = 128
    lr: float = 1e-3  # Adam from scratch; the paper's 5e-5 fine-tunes a pretrained LLM
    dpo_lr: float = 1e-4  # DPO moves a trained model: a tenth of the SFT rate
    lam: float = 1.0  # λ of L_q + λ·L_t (not stated in the paper)
    cotrain: bool = True  # False: the w/o co-training ablation
    cotrain_epochs: int = 3
    cotrain_codes: int = 10  # codes the query side proposes per clicked query (the paper's 10)
    relevance_quantile: float = 0.25  # τ: this quantile of the clicked pairs' dense scores
    relevance_items: int = 32  # items carrying a code that its relevance to a query averages over
    dpo_steps: int = 150  # 0: no co-alignment (the w/o co-alignment ablation)
    dpo_pairs_per_click: int = 4  # (chosen, rejected) pairs drawn per clicked query-product pair
    beta_chosen: float = 0.2
    beta_rejected: float = 0.1
    length_penalty: float = 1.0  # the log-ratio of a code is divided by (its tokens) ** this
    codes_per_item: int = 10  # codes the product side gives each item in the index
    beam: int = 10  # the paper's serving beam
    max_codes: int = 10  # the paper's "max number of codes"
    margin: float = 1.0  # μ of the scorer's pairwise margin loss
    score_queries: int = 2000  # training queries the scorer's weights are fitted on
    seed: int = 0
    progress: bool = True


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
class GramModels:
    """What ``train_gram`` made, for publishing and for the benchmark's comparisons."""

    vocab: CodeVocab
    generator: GramGenerator
    index: CodeIndex
    weights: ScoreWeights
    stats: dict[str, float] = field(default_factory=dict)


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
    for label in trained:  # the active catalog: every training item has its own codes
        item_targets.setdefault(int(label), set()).update(product_codes(attrs[int(label)]))
    return CodeData(query_attrs, attrs, query_targets, item_targets, clicks, accuracy, tagger)


def generator_config(config: GramConfig, tokenizer: TextTokenizer, vocab: CodeVocab) -> GramGeneratorConfig:
    return GramGeneratorConfig(
        text_vocab=tokenizer.vocab_size,
        code_vocab=vocab.size,
        dim=config.dim,
        layers=config.layers,
        max_text_tokens=max(config.max_item_tokens, config.max_query_tokens),
    )


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


class Coder:
    """Batched, trie-constrained beam search of a torch generator over many prompts: what the
    ONNX runtime does for one query at serving time, for whole catalogs offline."""

    def __init__(self, model: GramGenerator, trie: CodeTrie, chunk: int = 256) -> None:
        self.model = model
        self.trie = trie
        self.chunk = chunk

    @torch.no_grad()
    def codes(
        self,
        text_ids: np.ndarray,
        task: int,
        beam: int,
        max_codes: int,
        progress: bool = False,
        desc: str = "",
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows (P, M) -1 padded, token log-probs (P, M, 7), scores (P, M)) per prompt."""
        self.model.eval()
        rows, logps, scores = [], [], []
        starts = range(0, len(text_ids), self.chunk)
        for start in progress_bar(starts, progress, desc=desc, leave=False):
            ids = torch.from_numpy(np.ascontiguousarray(text_ids[start : start + self.chunk], dtype=np.int64))
            tasks = torch.full((len(ids),), task, dtype=torch.int64)
            memory, pad = self.model.encode(ids, tasks)

            step = _torch_step(self.model, memory, pad)
            r, lp, s = beam_search(self.trie, step, beam, max_codes, prompts=len(ids))
            rows.append(r)
            logps.append(lp)
            scores.append(s)
        if not rows:
            return (
                np.zeros((0, max_codes), np.int64),
                np.zeros((0, max_codes, 7), np.float32),
                np.zeros((0, max_codes), np.float32),
            )
        return np.concatenate(rows), np.concatenate(logps), np.concatenate(scores)


def _torch_step(model: GramGenerator, memory: torch.Tensor, pad: torch.Tensor) -> Step:
    """The decoder over a chunk of encoded prompts as ``index.gram_trie``'s step."""

    def step(prompt: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        which = torch.from_numpy(np.asarray(prompt, dtype=np.int64))
        logits = model.decode(memory[which], pad[which], torch.from_numpy(prefix))[:, -1]
        return logits.float().numpy()

    return step


def _code_sets(rows: np.ndarray, table: CodeTable, vocab: CodeVocab) -> list[set[Code]]:
    return [{vocab.decode(table.codes[r]) for r in row if r >= 0} for row in rows]


def cotrain(model: GramGenerator, run: GramTraining) -> dict[str, float]:
    """GRAM's joint training: the product side codes the active catalog, the query side proposes
    up to ``cotrain_codes`` codes per clicked query; a (query, code) pair is kept when the dense
    two-tower finds the query relevant to the items carrying the code (mean cosine over up to
    ``relevance_items`` of them ≥ τ, the ``relevance_quantile`` of the clicked pairs' scores).
    Kept product codes of a clicked item become query targets, kept query proposals become
    targets of the items the query clicked; both sides train again on the base rows plus these."""
    data, texts, tokenizer, vocab, universe, config = (
        run.data,
        run.texts,
        run.tokenizer,
        run.vocab,
        run.universe,
        run.config,
    )
    coder = Coder(model, CodeTrie.build(universe))
    active = sorted(data.item_targets)
    item_ids = tokenizer.ids([texts[t] for t in active], config.max_item_tokens)
    item_rows, _, _ = coder.codes(
        item_ids, PRODUCT_TASK, config.beam, config.codes_per_item, config.progress, "gram coding"
    )
    item_codes = dict(zip(active, _code_sets(item_rows, universe, vocab), strict=True))
    queries = sorted({q for q, _ in data.clicks})
    q_rows, _, _ = coder.codes(
        tokenizer.ids(queries, config.max_query_tokens),
        QUERY_TASK,
        config.beam,
        config.cotrain_codes,
        config.progress,
        "gram proposals",
    )
    proposals = dict(zip(queries, _code_sets(q_rows, universe, vocab), strict=True))

    carriers: dict[Code, list[int]] = {}
    for label, codes in item_codes.items():
        for code in codes:
            carriers.setdefault(code, []).append(label)
    item_vecs = item_vectors(run.dense, texts, tokenizer)  # (N, D)
    query_vecs = dict(zip(queries, query_vectors(run.dense, queries, tokenizer), strict=True))
    clicked_scores = np.array([float(query_vecs[q] @ item_vecs[t]) for q, t in data.clicks])
    tau = float(np.quantile(clicked_scores, config.relevance_quantile)) if len(clicked_scores) else 0.0

    def relevant(query: str, code: Code) -> bool:
        items = carriers.get(code)
        if not items:
            return False
        return float((item_vecs[items[: config.relevance_items]] @ query_vecs[query]).mean()) >= tau

    extra_q: dict[str, set[Code]] = {}
    extra_t: dict[int, set[Code]] = {}
    for query, label in data.clicks:
        for code in item_codes.get(label, set()) - data.query_targets.get(query, set()):
            if relevant(query, code):
                extra_q.setdefault(query, set()).add(code)
        for code in proposals[query] - data.item_targets.get(label, set()):
            if relevant(query, code):
                extra_t.setdefault(label, set()).add(code)
    aug_q, aug_t = target_examples(extra_q, extra_t, texts, tokenizer, vocab, config)
    query_rows = CodeExamples.concat(run.base[0], aug_q)
    product_rows = CodeExamples.concat(run.base[1], aug_t)
    sft = SftConfig(
        epochs=config.cotrain_epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        lam=config.lam,
        seed=config.seed + 1,
        progress=config.progress,
    )
    metrics = train_sft(model, query_rows, product_rows, sft)
    stats = {
        "cotrain_tau": tau,
        "cotrain_query_rows": float(len(aug_q)),
        "cotrain_product_rows": float(len(aug_t)),
    }
    log.info("gram co-training: %s, %s", stats, metrics)
    return stats


def preference_pairs(
    model: GramGenerator,
    data: CodeData,
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    universe: CodeTable,
    config: GramConfig,
) -> PreferencePairs:
    """For each clicked (query, product): chosen = codes both sides generate (top ``beam``),
    rejected = codes only one side does; up to ``dpo_pairs_per_click`` (chosen, rejected) pairs."""
    coder = Coder(model, CodeTrie.build(universe))
    queries = sorted({q for q, _ in data.clicks})
    labels = sorted({t for _, t in data.clicks})
    q_ids = tokenizer.ids(queries, config.max_query_tokens)
    t_ids = tokenizer.ids([texts[t] for t in labels], config.max_item_tokens)
    q_rows, _, _ = coder.codes(
        q_ids, QUERY_TASK, config.beam, config.max_codes, config.progress, "gram dpo queries"
    )
    t_rows, _, _ = coder.codes(
        t_ids, PRODUCT_TASK, config.beam, config.max_codes, config.progress, "gram dpo products"
    )
    q_at = {q: n for n, q in enumerate(queries)}
    t_at = {t: n for n, t in enumerate(labels)}
    rng = np.random.default_rng(config.seed)
    rows_q, rows_t, chosen, rejected = [], [], [], []
    for query, label in data.clicks:
        side_q = {int(r) for r in q_rows[q_at[query]] if r >= 0}
        side_t = {int(r) for r in t_rows[t_at[label]] if r >= 0}
        agreed = sorted(side_q & side_t)
        other = sorted(side_q ^ side_t)
        if not agreed or not other:
            continue
        for _ in range(config.dpo_pairs_per_click):
            rows_q.append(q_at[query])
            rows_t.append(t_at[label])
            chosen.append(agreed[int(rng.integers(len(agreed)))])
            rejected.append(other[int(rng.integers(len(other)))])
    return PreferencePairs(
        query_ids=q_ids[np.asarray(rows_q, np.int64)].reshape(-1, q_ids.shape[1]),
        product_ids=t_ids[np.asarray(rows_t, np.int64)].reshape(-1, t_ids.shape[1]),
        chosen=universe.codes[np.asarray(chosen, np.int64)].reshape(-1, 7),
        rejected=universe.codes[np.asarray(rejected, np.int64)].reshape(-1, 7),
    )


def code_catalog(
    model: GramGenerator,
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    universe: CodeTable,
    config: GramConfig,
) -> CodeIndex:
    """The product side's ``codes_per_item`` codes for every catalog item with text, as the
    published code → items index (codes no item got are left out)."""
    labels = np.asarray([n for n, t in enumerate(texts) if t.strip()], dtype=np.int64)
    ids = tokenizer.ids([texts[int(n)] for n in labels], config.max_item_tokens)
    rows, logps, _ = Coder(model, CodeTrie.build(universe)).codes(
        ids, PRODUCT_TASK, config.beam, config.codes_per_item, config.progress, "gram index"
    )
    item, slot = np.nonzero(rows >= 0)
    return CodeIndex.build(universe.codes[rows[item, slot]], labels[item], logps[item, slot])


def _candidate_features(
    index: CodeIndex, rows: np.ndarray, query_logp: np.ndarray
) -> tuple[ScoreFeatures, np.ndarray]:
    """Features of every (code, item) posting the query's codes reach, and the items."""
    rows = rows[rows >= 0]
    position, labels, product_logp = index.postings(rows)
    codes = index.table.codes[rows[position]]
    return score_features(codes, query_logp[position], product_logp), labels


def fit_scorer(
    model: GramGenerator, data: CodeData, index: CodeIndex, tokenizer: TextTokenizer, config: GramConfig
) -> ScoreWeights:
    """Granularity weights by the pairwise margin loss on training clicks: for a clicked query,
    a clicked item its codes retrieve is a positive, another retrieved item a negative; each
    side of a triple scores its best code, as serving does."""
    clicked: dict[str, set[int]] = {}
    for query, label in data.clicks:
        clicked.setdefault(query, set()).add(label)
    rng = np.random.default_rng(config.seed)
    queries = sorted(clicked)
    if len(queries) > config.score_queries:
        queries = sorted(rng.choice(queries, config.score_queries, replace=False).tolist())
    if not queries or not index.n_codes:
        return ScoreWeights()
    rows, logps, _ = Coder(model, CodeTrie.build(index.table)).codes(
        tokenizer.ids(queries, config.max_query_tokens), QUERY_TASK, config.beam, config.max_codes
    )
    sides: tuple[list[ScoreFeatures], list[ScoreFeatures]] = ([], [])
    triples: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    n = 0
    for at, query in enumerate(queries):
        valid = rows[at] >= 0
        features, labels = _candidate_features(index, rows[at][valid], logps[at][valid])
        is_pos = np.isin(labels, np.fromiter(clicked[query], np.int64))
        positives = np.unique(labels[is_pos])
        negatives = np.unique(labels[~is_pos])
        if not len(positives) or not len(negatives):
            continue
        for label in positives.tolist():
            other = int(negatives[int(rng.integers(len(negatives)))])
            for side, chosen in ((0, label), (1, other)):
                take = np.flatnonzero(labels == chosen)
                sides[side].append(_take(features, take))
                triples[side].append(np.full(len(take), n, np.int64))
            n += 1
    if not n:
        log.warning("gram scorer: no clicked item among the retrieved ones; the unfitted weights")
        return ScoreWeights()
    return fit_weights(
        _concat(sides[0]), _concat(sides[1]), ScorerConfig(margin=config.margin),
        positive_triple=np.concatenate(triples[0]), negative_triple=np.concatenate(triples[1]),
    )  # fmt: skip


def _take(features: ScoreFeatures, rows: np.ndarray) -> ScoreFeatures:
    return ScoreFeatures(features.granularity[rows], features.query_logprob[rows], features.divergence[rows])


def _concat(parts: Sequence[ScoreFeatures]) -> ScoreFeatures:
    return ScoreFeatures(
        np.concatenate([p.granularity for p in parts]),
        np.concatenate([p.query_logprob for p in parts]),
        np.concatenate([p.divergence for p in parts]),
    )


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


def prepare_gram(
    dataset: Dataset,
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    dense: TwoTower,
    products: ProductAttributes,
    config: GramConfig,
) -> GramTraining:
    """Steps 1-2: attributes, codes across the click link, the vocabulary and the SFT rows."""
    data = extract_codes(dataset, products, config)
    all_codes = sorted({c for cs in (*data.query_targets.values(), *data.item_targets.values()) for c in cs})
    vocab = CodeVocab.build(CODE_TYPES, all_codes)
    universe = CodeTable.build(vocab.encode(all_codes))
    base = target_examples(data.query_targets, data.item_targets, texts, tokenizer, vocab, config)
    return GramTraining(dataset, texts, tokenizer, dense, config, data, vocab, universe, base)


def sft_generator(run: GramTraining) -> tuple[GramGenerator, dict[str, float]]:
    """A generator from scratch, trained on ``L_q + λ·L_t`` over the click-link targets."""
    config = run.config
    torch.manual_seed(config.seed)
    model = GramGenerator(generator_config(config, run.tokenizer, run.vocab))
    sft = SftConfig(
        epochs=config.sft_epochs, batch_size=config.batch_size, lr=config.lr, lam=config.lam,
        seed=config.seed, progress=config.progress,
    )  # fmt: skip
    metrics = train_sft(model, run.base[0], run.base[1], sft)
    return model, {f"sft_{k}": v for k, v in metrics.items()}


def align(model: GramGenerator, run: GramTraining) -> dict[str, float]:
    """DPO co-alignment of ``model`` in place, anchored to a frozen copy of it."""
    config = run.config
    pairs = preference_pairs(model, run.data, run.texts, run.tokenizer, run.universe, config)
    stats = {"dpo_pairs": float(len(pairs.chosen))}
    if not len(pairs.chosen):
        log.warning("gram co-alignment: no clicked pair with both agreed and one-sided codes")
        return stats
    reference = GramGenerator(model.config)
    reference.load_state_dict(model.state_dict())
    dpo = DpoConfig(
        beta_chosen=config.beta_chosen, beta_rejected=config.beta_rejected,
        length_penalty=config.length_penalty, steps=config.dpo_steps, batch_size=config.batch_size,
        lr=config.dpo_lr, seed=config.seed, progress=config.progress,
    )  # fmt: skip
    history = train_dpo(model, reference.eval(), pairs, dpo)
    if history:
        stats.update({f"dpo_first_{k}": v for k, v in history[0].items()})
        stats.update({f"dpo_last_{k}": v for k, v in history[-1].items()})
    return stats


def finish(model: GramGenerator, run: GramTraining, stats: dict[str, float]) -> GramModels:
    """Step 4: code the catalog into the index and fit the scorer."""
    model.eval()
    index = code_catalog(model, run.texts, run.tokenizer, run.universe, run.config)
    weights = fit_scorer(model, run.data, index, run.tokenizer, run.config)
    stats = {
        **stats,
        "codes": float(index.n_codes),
        "items_per_code": index.items_per_code()["mean"] if index.n_codes else 0.0,
        "vocab": float(run.vocab.size),
        **{f"tagger_f1_{k}": v["f1"] for k, v in run.data.tagger_accuracy.items()},
    }
    return GramModels(run.vocab, model, index, weights, stats)


def train_gram(
    dataset: Dataset,
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    dense: TwoTower,
    products: ProductAttributes,
    config: GramConfig,
) -> GramModels:
    """Every step: SFT, co-training (``config.cotrain``), co-alignment (``config.dpo_steps``)."""
    run = prepare_gram(dataset, texts, tokenizer, dense, products, config)
    model, stats = sft_generator(run)
    if config.cotrain:
        stats.update(cotrain(model, run))
    if config.dpo_steps > 0:
        stats.update(align(model, run))
    return finish(model, run, stats)


def write_gram(directory: Path, models: GramModels, config: GramConfig) -> GramSpec:
    """Write ``index.gram_search.GRAM_FILES`` into ``directory`` and return the manifest section."""
    models.vocab.save(directory)
    models.index.save(directory)
    export_generator(models.generator, directory)
    return GramSpec(
        max_text_tokens=config.max_query_tokens,
        dim=config.dim,
        vocab_size=models.vocab.size,
        beam=config.beam,
        max_codes=config.max_codes,
        weights=models.weights.to_dict(),
        codes=models.index.n_codes,
        items_per_code=models.index.items_per_code()["mean"] if models.index.n_codes else 0.0,
    )


def build_gram_channel(
    dataset: Dataset,
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    dense: TwoTower,
    products: ProductAttributes,
    out_dir: Path,
    config: GramConfig,
) -> GramSpec:
    """Train and write the gram channel for a run (``model_export.text.build`` calls it after
    the dense two-tower its co-training filter reads)."""
    models = train_gram(dataset, texts, tokenizer, dense, products, config)
    log.info("gram: %s", {k: round(v, 3) for k, v in models.stats.items()})
    return write_gram(out_dir, models, config)
