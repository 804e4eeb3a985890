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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from index.bundle import GramSpec
from index.gram_index import CodeIndex
from index.gram_score import ScoreWeights
from index.gram_trie import CodeTable, CodeTrie
from index.gram_vocab import CodeVocab
from index.tokenizer import TextTokenizer
from model_export.data import Dataset
from model_export.gram.align import DpoConfig, preference_pairs, train_dpo
from model_export.gram.coder import Coder
from model_export.gram.config import GramConfig
from model_export.gram.cotrain import cotrain
from model_export.gram.export import export_generator
from model_export.gram.generator import (
    PRODUCT_TASK,
    GramGenerator,
    SftConfig,
    train_sft,
)
from model_export.gram.lexicon import CODE_TYPES
from model_export.gram.scorer import fit_scorer
from model_export.gram.targets import (
    GramTraining,
    ProductAttributes,
    extract_codes,
    generator_config,
    target_examples,
    value_pieces,
)
from model_export.text.dense import TwoTower

log = logging.getLogger(__name__)


@dataclass
class GramModels:
    """What ``train_gram`` made, for publishing and for the benchmark's comparisons."""

    vocab: CodeVocab
    generator: GramGenerator
    index: CodeIndex
    weights: ScoreWeights
    stats: dict[str, float] = field(default_factory=dict)


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
        ids, PRODUCT_TASK, config.codes_per_item, config.codes_per_item, config.progress, "gram index"
    )
    item, slot = np.nonzero(rows >= 0)
    return CodeIndex.build(universe.codes[rows[item, slot]], labels[item], logps[item, slot])


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
    model = GramGenerator(
        generator_config(config, run.tokenizer, run.vocab), value_pieces(run.tokenizer, run.vocab)
    )
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
) -> GramModels | None:
    """Every step: SFT, co-training (``config.cotrain``), co-alignment (``config.dpo_steps``);
    None when the catalog and the queries give no attribute codes to learn (a catalog without
    attribute columns, titles or lexicon)."""
    run = prepare_gram(dataset, texts, tokenizer, dense, products, config)
    if not run.universe.n_codes or not len(run.base[1]):
        return None
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
) -> GramSpec | None:
    """Train and write the gram channel for a run (``model_export.text.build`` calls it after
    the dense two-tower its co-training filter reads); None, with a warning, when there are no
    attribute codes to learn."""
    models = train_gram(dataset, texts, tokenizer, dense, products, config)
    if models is None:
        log.warning("no attribute values in the catalog or the queries: no gram channel")
        return None
    log.info("gram: %s", {k: round(v, 3) for k, v in models.stats.items()})
    return write_gram(out_dir, models, config)
