"""The ``sid`` channel's generator at serving time: the ONNX encoder and one-step decoder that
``model_export.sid.export`` writes, run by ONNX Runtime (numpy only, no torch). Loading, the
checks and the decoder step are ``index.generator_runtime``'s; this module names the files and
encodes one prompt.

``sid_encoder.onnx``: ``text_ids`` (B, Lt) int64 (0 = pad), ``user_tokens`` (B, Lu) int64 SID
tokens (``PAD_TOKEN`` = pad; Lu may be 0) → ``memory`` (B, 1+Lt+Lu, D) float32, ``memory_pad``
(B, 1+Lt+Lu) bool (True = padding). ``sid_decoder.onnx``: ONE prompt's ``memory`` (1, L, D) and
``memory_pad`` (1, L), ``prefix`` (B, t) int64 SID tokens starting with BOS, 1 <= t <= 4 →
``logits`` (B, V) float32 for the next position only (``index.generator_runtime`` says why one
memory for all beams and no key/value cache).
"""

from __future__ import annotations

import numpy as np

from index.generator_runtime import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_OUTPUTS,
    GeneratorFiles,
    GeneratorRuntime,
    Step,
)

SID_ENCODER_FILE = "sid_encoder.onnx"
SID_DECODER_FILE = "sid_decoder.onnx"
SID_PROBE_FILE = "sid_probe.npz"
SID_GENERATOR_FILES = (SID_ENCODER_FILE, SID_DECODER_FILE, SID_PROBE_FILE)
ENCODER_INPUTS = ("text_ids", "user_tokens")
SID_FILES = GeneratorFiles(SID_ENCODER_FILE, SID_DECODER_FILE, SID_PROBE_FILE, ENCODER_INPUTS)
# The probe file's arrays: one prompt, its encoder memory, prefixes and their next-token logits.
PROBE_KEYS = SID_FILES.probe_keys

__all__ = [
    "DECODER_INPUTS",
    "DECODER_OUTPUTS",
    "ENCODER_INPUTS",
    "ENCODER_OUTPUTS",
    "PROBE_KEYS",
    "SID_DECODER_FILE",
    "SID_ENCODER_FILE",
    "SID_FILES",
    "SID_GENERATOR_FILES",
    "SID_PROBE_FILE",
    "SidGeneratorRuntime",
    "Step",
]


class SidGeneratorRuntime(GeneratorRuntime):
    """The SID generator's sessions (``GeneratorRuntime``: ``load``, ``stepper``, ``dim``,
    ``vocab_size``). Immutable and thread-safe; blocking CPU work."""

    files = SID_FILES

    def encode(self, text_ids: np.ndarray, user_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One prompt: text_ids (Lt,) or (1, Lt), user_tokens (Lu,) or (1, Lu) int64 → memory
        (1, L, D) float32, memory_pad (1, L) bool. Raises ``ValueError`` for more than one row."""
        text = np.ascontiguousarray(np.atleast_2d(text_ids), dtype=np.int64)
        user = np.ascontiguousarray(np.asarray(user_tokens, dtype=np.int64).reshape(1, -1))
        if text.shape[0] != 1:
            raise ValueError(f"encode takes one prompt, got text_ids of shape {np.shape(text_ids)}")
        return self._run_encoder({"text_ids": text, "user_tokens": user})
