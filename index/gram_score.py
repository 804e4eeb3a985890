"""The ``gram`` channel's query-product score: how well the query side's and the product side's
probabilities of a shared code agree, weighted by the code's granularity.

For a code ``c`` that both sides generate, each real token ``i`` (value tokens and ``EOS``) has
a query-side probability ``p = P^q(c_i)`` and a product-side one ``r = P^t(c_i)``, each the
full-vocabulary softmax of its generator at that position. GRAM compares them per token with
the Jensen-Shannon-style term

    js_i = p ln(2p / (p + r)) + r ln(2r / (p + r)),

which is 0 when ``p == r`` and grows as they part (by the log-sum inequality it is never
negative); ``JS(c) = Σ_i js_i``. A code's granularity ``g`` is coarse (1-2 values), medium (3)
or fine (4+), and the score is

    S(q, t, c) = bias[g] + query_logprob[g] · log P^q(c) - divergence[g] · JS(c).

SIGN CONVENTION: higher = more relevant. The published formula is a divergence (smaller = more
similar), so it enters negated, and ``divergence`` weights are kept >= 0 by the fitter
(``model_export.gram.scorer``). An item found under several codes takes its best code's score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from index.gram_vocab import PAD

GRANULARITIES = ("coarse", "medium", "fine")
_LN2 = math.log(2.0)


def granularity_of(codes: np.ndarray) -> np.ndarray:
    """(…, 7) code token rows → (…) int64 index into ``GRANULARITIES``: 1-2 values coarse, 3
    medium, 4 or more fine."""
    values = (np.asarray(codes) != PAD).sum(axis=-1) - 1  # EOS is not a value
    return np.where(values <= 2, 0, np.where(values == 3, 1, 2)).astype(np.int64)


def js_terms(query_logp: np.ndarray, product_logp: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(…, 7) log-probabilities of a code's tokens on each side and (…, 7) bool mask of the
    code's real tokens (values + EOS) → (…) float64 sum of the per-token terms
    ``p ln(2p/(p+r)) + r ln(2r/(p+r))``; >= 0, 0 when both sides agree at every token.
    Computed in log space (log of the mean by ``logaddexp``), so tiny probabilities are exact."""
    a = np.asarray(query_logp, dtype=np.float64)
    b = np.asarray(product_logp, dtype=np.float64)
    log_mean = np.logaddexp(a, b) - _LN2
    terms = np.exp(a) * (a - log_mean) + np.exp(b) * (b - log_mean)
    total: np.ndarray = np.where(mask, np.maximum(terms, 0.0), 0.0).sum(axis=-1)  # rounding dips below 0
    return total


@dataclass(frozen=True)
class ScoreFeatures:
    """Per (query, product, code) row what the score reads."""

    granularity: np.ndarray  # (E,) int64 index into GRANULARITIES
    query_logprob: np.ndarray  # (E,) float64 log P^q(c), summed over the code's real tokens
    divergence: np.ndarray  # (E,) float64 JS(c) >= 0


def score_features(codes: np.ndarray, query_logp: np.ndarray, product_logp: np.ndarray) -> ScoreFeatures:
    """Features of (E, 7) code rows with each side's (E, 7) token log-probabilities (PAD
    positions are ignored). Raises ``ValueError`` for mismatched shapes."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or np.shape(query_logp) != codes.shape or np.shape(product_logp) != codes.shape:
        raise ValueError(
            f"codes {codes.shape}, query log-probs {np.shape(query_logp)} and product log-probs "
            f"{np.shape(product_logp)} must share one (E, 7) shape"
        )
    mask = codes != PAD
    return ScoreFeatures(
        granularity=granularity_of(codes),
        query_logprob=np.where(mask, np.asarray(query_logp, dtype=np.float64), 0.0).sum(axis=1),
        divergence=js_terms(query_logp, product_logp, mask),
    )


@dataclass(frozen=True)
class ScoreWeights:
    """Per granularity (coarse, medium, fine) weights of the score; JSON-able with ``to_dict``.
    ``divergence`` must be >= 0 (a larger divergence never helps an item)."""

    divergence: tuple[float, float, float] = (1.0, 1.0, 1.0)
    query_logprob: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        for name in ("divergence", "query_logprob", "bias"):
            values = getattr(self, name)
            if len(values) != len(GRANULARITIES) or not all(math.isfinite(v) for v in values):
                raise ValueError(
                    f"score weights {name} need {len(GRANULARITIES)} finite numbers, got {values}"
                )
        if min(self.divergence) < 0:
            raise ValueError(
                f"divergence weights must be >= 0 (higher score = more relevant), got {self.divergence}"
            )

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "divergence": list(self.divergence),
            "query_logprob": list(self.query_logprob),
            "bias": list(self.bias),
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Sequence[float]]) -> ScoreWeights:
        """Raises ``ValueError`` for a missing key or a value ``__post_init__`` refuses."""
        try:
            parts = [tuple(float(v) for v in payload[k]) for k in ("divergence", "query_logprob", "bias")]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"score weights need divergence, query_logprob and bias: {exc}") from exc
        return cls(*parts)  # type: ignore[arg-type]  # lengths checked in __post_init__

    def score(self, features: ScoreFeatures) -> np.ndarray:
        """(E,) float64 scores, higher = more relevant."""
        g = features.granularity
        score: np.ndarray = (
            np.asarray(self.bias)[g]
            + np.asarray(self.query_logprob)[g] * features.query_logprob
            - np.asarray(self.divergence)[g] * features.divergence
        )
        return score


def score_candidates(
    weights: ScoreWeights, codes: np.ndarray, query_logp: np.ndarray, product_logp: np.ndarray
) -> np.ndarray:
    """(E,) float64 scores of (E, 7) code rows given both sides' token log-probabilities."""
    return weights.score(score_features(codes, query_logp, product_logp))
