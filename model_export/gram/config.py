"""The gram channel's training settings (``model_export.gram.build``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GramConfig:
    """Plain values only: it is saved in the checkpoint inside the text config."""

    enabled: bool = True
    tagger_epochs: int = 4
    dim: int = 64  # 128 trained 2-3x slower on 2 cores (the product side has ~25 rows an item)
    layers: int = 2  # encoder and decoder layers each
    max_item_tokens: int = 48  # pieces of a product's text (title + attributes) the generator reads
    max_query_tokens: int = 16  # the paper's max query length
    sft_epochs: int = 8
    own_codes: int = 8  # of a product's own codes, the SFT targets per product (a seeded sample)
    batch_size: int = 64  # small batches, many steps: the data is small, the model from scratch
    lr: float = 2e-3  # Adam from scratch; the paper's 5e-5 fine-tunes a pretrained LLM
    dpo_lr: float = 5e-4  # DPO moves a trained model: a quarter of the SFT rate
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
    # Codes the product side gives each item in the index (beam as wide): a product answers
    # several query shapes (its type with one or two attributes), so more than a query's 10.
    codes_per_item: int = 30
    beam: int = 10  # the paper's serving beam
    max_codes: int = 10  # the paper's "max number of codes"
    margin: float = 1.0  # μ of the scorer's pairwise margin loss
    score_queries: int = 2000  # training queries the scorer's weights are fitted on
    seed: int = 0
    progress: bool = True
