"""The probe check every exported encoder of a bundle passes at load: the encoder must reproduce
the outputs recorded at export time, so a copied or re-exported file that computes something
else is refused (``service.runtime`` for the session encoder, ``index.dense`` for the text one).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

PROBE_ATOL = 1e-4


def verify_probe(
    path: Path,
    keys: tuple[str, str],
    encode: Callable[[np.ndarray], np.ndarray],
    dim: int,
    encoder: str,
) -> np.ndarray:
    """Run ``encode`` (the encoder named ``encoder``) on the probe inputs in ``path`` (the npz
    arrays named ``keys``: inputs, recorded outputs) and return its outputs, for warming an
    index with. Raises ``ValueError`` saying why when the file is unreadable, the encoder fails,
    or its outputs are not the recorded ones of width ``dim`` within ``PROBE_ATOL``."""
    try:
        with np.load(path, allow_pickle=False) as probe:
            inputs, expected = probe[keys[0]], probe[keys[1]]
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"unreadable {path.name}: {exc}") from exc
    try:
        out = encode(inputs)
    except Exception as exc:  # ONNX Runtime raises its own exception types
        raise ValueError(f"{encoder} failed on the probe: {exc}") from exc
    if out.shape != expected.shape or out.shape[-1] != dim:
        raise ValueError(f"{encoder} output shape {out.shape}, probe expects {expected.shape} with dim {dim}")
    if not np.allclose(out, expected, atol=PROBE_ATOL):
        worst = float(np.max(np.abs(out - expected)))
        raise ValueError(f"{encoder} does not reproduce the probe in {path.name} (max abs diff {worst:.2e})")
    return out
