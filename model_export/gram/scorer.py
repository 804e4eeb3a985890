"""Fit the ``gram`` score's per-granularity weights (``index.gram_score.ScoreWeights``) by the
pairwise margin loss over (query, relevant product t+, irrelevant product t-) triples:

    L = mean over triples of max(0, S(q, t-) - S(q, t+) + μ),

where S(q, t) is the pair's best code score (as served: an item takes its best code's score) and
S is higher for more relevant pairs, so the divergence weights are projected to >= 0 after every
step (a larger divergence never makes a product more relevant). Full-batch Adam: the model has
nine numbers, so a batch of every triple is cheap and the fit is deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from index.gram_index import CodeIndex
from index.gram_score import GRANULARITIES, ScoreFeatures, ScoreWeights, score_features
from index.gram_trie import CodeTrie
from index.tokenizer import TextTokenizer
from model_export.gram.coder import Coder
from model_export.gram.config import GramConfig
from model_export.gram.generator import QUERY_TASK, GramGenerator
from model_export.gram.targets import CodeData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScorerConfig:
    margin: float = 1.0  # μ of the hinge
    steps: int = 300
    lr: float = 0.05
    # Start: divergence alone decides (weight 1), as the unfitted paper formula would.
    init: ScoreWeights = field(default_factory=ScoreWeights)


def fit_weights(
    positive: ScoreFeatures,
    negative: ScoreFeatures,
    config: ScorerConfig | None = None,
    *,
    positive_triple: np.ndarray | None = None,
    negative_triple: np.ndarray | None = None,
) -> ScoreWeights:
    """The weights minimising the margin loss, the best seen over ``config.steps`` steps.

    ``positive`` / ``negative`` hold code rows of each triple's (q, t+) and (q, t-) pair;
    ``positive_triple`` / ``negative_triple`` say which triple each row belongs to (default:
    row ``i`` is triple ``i``, one code per pair); a pair with several codes scores its best.
    Raises ``ValueError`` when a triple lacks a positive or a negative row or the two sides
    number their triples differently.
    """
    config = config or ScorerConfig()
    pos_triple = _triples(positive, positive_triple)
    neg_triple = _triples(negative, negative_triple)
    n = int(pos_triple.max()) + 1 if len(pos_triple) else 0
    if n == 0 or int(neg_triple.max(initial=-1)) + 1 != n:
        raise ValueError("positive and negative rows must number the same triples, at least one")
    for name, triple in (("positive", pos_triple), ("negative", neg_triple)):
        if len(np.unique(triple)) != n:
            raise ValueError(f"a triple has no {name} row")
    params = {
        name: torch.tensor(getattr(config.init, name), dtype=torch.float64, requires_grad=True)
        for name in ("divergence", "query_logprob", "bias")
    }
    optimiser = torch.optim.Adam(params.values(), lr=config.lr)
    pos, neg = _tensors(positive, pos_triple), _tensors(negative, neg_triple)
    best_loss, best = float("inf"), config.init
    for step in range(config.steps + 1):  # the last pass only measures the final step's weights
        loss = torch.relu(
            _pair_scores(params, *neg, n) - _pair_scores(params, *pos, n) + config.margin
        ).mean()
        if loss.item() < best_loss:
            best_loss = loss.item()
            best = ScoreWeights(*(tuple(p.detach().tolist()) for p in params.values()))
        if step == config.steps:
            break
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            params["divergence"].clamp_(min=0.0)
    log.info("gram scorer: margin loss %.4f over %d triples, weights %s", best_loss, n, best.to_dict())
    return best


def margin_loss(
    weights: ScoreWeights, positive: ScoreFeatures, negative: ScoreFeatures, margin: float
) -> float:
    """The mean hinge over one-code-per-pair triples (row i of each side is triple i)."""
    gap = weights.score(negative) - weights.score(positive) + margin
    return float(np.maximum(gap, 0.0).mean())


def _triples(features: ScoreFeatures, triple: np.ndarray | None) -> np.ndarray:
    rows = len(features.granularity)
    triple = np.arange(rows) if triple is None else np.asarray(triple, dtype=np.int64)
    if triple.shape != (rows,) or (rows and triple.min() < 0):
        raise ValueError(f"triple ids of shape {triple.shape} (>= 0) for {rows} rows")
    g = features.granularity
    if rows and (g.min() < 0 or g.max() >= len(GRANULARITIES)):
        raise ValueError(f"granularity outside 0..{len(GRANULARITIES) - 1}")
    return triple


def _tensors(
    features: ScoreFeatures, triple: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.as_tensor(features.granularity, dtype=torch.int64),
        torch.as_tensor(features.query_logprob, dtype=torch.float64),
        torch.as_tensor(features.divergence, dtype=torch.float64),
        torch.as_tensor(triple, dtype=torch.int64),
    )


def _pair_scores(
    params: dict[str, torch.Tensor],
    granularity: torch.Tensor,
    query_logprob: torch.Tensor,
    divergence: torch.Tensor,
    triple: torch.Tensor,
    n: int,
) -> torch.Tensor:
    """(n,) each triple's best code score on one side, the served formula in torch."""
    score = (
        params["bias"][granularity]
        + params["query_logprob"][granularity] * query_logprob
        - params["divergence"][granularity] * divergence
    )  # (E,)
    best = torch.full((n,), -torch.inf, dtype=score.dtype)
    return best.scatter_reduce(0, triple, score, reduce="amax", include_self=True)


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
