"""Which catalog items a training batch's positives compete with, and how likely each was.

Every step draws N catalog items shared by the batch: ``uniform``ly, or by ``popularity``
∝ (training engagement count + 1)^0.75 (word2vec's smoothing: head items are drawn more often
without starving the tail). With in-batch negatives the batch's M engaged target occurrences
join them; those are distributed as targets are, by each item's share p(j) of training
engagements.

``log_expected_count`` is the sampled-softmax correction (Bengio & Senécal 2008; Yi et al.
2019, "Sampling-bias-corrected neural modeling"): Q(j) = N·q(j) + M·p(j) is the expected
number of copies of item j among a row's negatives, and ``losses`` lowers every candidate's
logit — the positive's and the negatives' — by log Q(j), so Σ_k e^{s_k}/Q(k) over the drawn
negatives estimates the full softmax denominator without bias. With uniform draws alone Q is
a constant and the loss is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

SamplerKind = Literal["uniform", "popularity"]
POPULARITY_POWER = 0.75


@dataclass(frozen=True)
class NegativeSampler:
    kind: SamplerKind
    draw_probability: torch.Tensor  # (V,) float64, sums to 1: q(j) of one draw
    target_share: torch.Tensor  # (V,) float64, sums to 1 (all 0 without counts): p(j)
    cdf: np.ndarray  # (V,) cumulative draw_probability, for popularity draws

    @classmethod
    def fit(cls, kind: SamplerKind, counts: np.ndarray) -> NegativeSampler:
        """``counts``: (V,) training engagement count per item index (sessions in which it was
        engaged: ``model_export.baselines.engaged_counts``)."""
        counts = np.asarray(counts, dtype=np.float64)
        if kind == "uniform":
            weights = np.ones_like(counts)
        elif kind == "popularity":
            weights = (counts + 1.0) ** POPULARITY_POWER
        else:
            raise ValueError(f"unknown negative sampler {kind!r}")
        total = counts.sum()
        share = counts / total if total > 0 else np.zeros_like(counts)
        probability = weights / weights.sum()
        return cls(kind, torch.from_numpy(probability), torch.from_numpy(share), np.cumsum(probability))

    @classmethod
    def uniform(cls, n_items: int) -> NegativeSampler:
        return cls.fit("uniform", np.zeros(n_items))

    @property
    def n_items(self) -> int:
        return len(self.draw_probability)

    def draw(self, rng: np.random.Generator, n: int) -> torch.Tensor:
        """(n,) item indices, with replacement."""
        if self.kind == "uniform":
            # The same draws as before samplers existed, so seeded runs are unchanged.
            return torch.from_numpy(rng.integers(0, self.n_items, n))
        picks = np.searchsorted(self.cdf, rng.random(n) * self.cdf[-1], side="right")
        return torch.from_numpy(np.minimum(picks, self.n_items - 1).astype(np.int64))

    def log_expected_count(self, items: torch.Tensor, n_sampled: int, n_in_batch: int) -> torch.Tensor:
        """log Q(j) = log(N·q(j) + M·p(j)) for ``items`` (any shape, float32); 0 where Q(j) = 0:
        an item that can be neither drawn nor in the batch is never a negative, and as a
        positive it is left uncorrected."""
        expected = n_sampled * self.draw_probability[items] + n_in_batch * self.target_share[items]
        return torch.where(expected > 0, expected.log(), torch.zeros_like(expected)).float()
