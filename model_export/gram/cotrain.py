"""GRAM's co-training (joint training) of the two generator sides on relevance-filtered pairs."""

from __future__ import annotations

import logging

import numpy as np

from index.gram_trie import CodeTrie
from index.gram_vocab import Code
from model_export.gram.coder import Coder, code_sets
from model_export.gram.generator import (
    PRODUCT_TASK,
    QUERY_TASK,
    CodeExamples,
    GramGenerator,
    SftConfig,
    train_sft,
)
from model_export.gram.targets import (
    GramTraining,
    target_examples,
)
from model_export.text.dense import item_vectors, query_vectors

log = logging.getLogger(__name__)


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
        item_ids, PRODUCT_TASK, config.codes_per_item, config.codes_per_item, config.progress, "gram coding"
    )
    item_codes = dict(zip(active, code_sets(item_rows, universe, vocab), strict=True))
    queries = sorted({q for q, _ in data.clicks})
    q_rows, _, _ = coder.codes(
        tokenizer.ids(queries, config.max_query_tokens),
        QUERY_TASK,
        config.beam,
        config.cotrain_codes,
        config.progress,
        "gram proposals",
    )
    proposals = dict(zip(queries, code_sets(q_rows, universe, vocab), strict=True))

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
