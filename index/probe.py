"""The probe check every exported encoder of a bundle passes at load: the encoder must reproduce
the outputs recorded at export time, so a copied or re-exported file that computes something
else is refused (``service.runtime`` for the session encoder, ``index.dense`` for the text one).
"""

from __future__ import annotations

import numpy as np

PROBE_ATOL = 1e-4


def probe_problem(out: np.ndarray, expected: np.ndarray, dim: int, encoder: str, probe: str) -> str | None:
    """Why ``out`` (what ``encoder`` computed on the probe inputs of ``probe``) is not the
    recorded ``expected`` output of width ``dim``; None when it is, within ``PROBE_ATOL``."""
    if out.shape != expected.shape or out.shape[-1] != dim:
        return f"{encoder} output shape {out.shape}, probe expects {expected.shape} with dim {dim}"
    if not np.allclose(out, expected, atol=PROBE_ATOL):
        worst = float(np.max(np.abs(out - expected)))
        return f"{encoder} does not reproduce the probe in {probe} (max abs diff {worst:.2e})"
    return None
