"""The ``gram`` channel's code generator at serving time: the ONNX encoder and one-step decoder
that ``model_export.gram.export`` writes, run by ONNX Runtime (numpy only, no torch). Loading,
the checks and the decoder step are ``index.generator_runtime``'s; this module names the files
and encodes one prompt.

``gram_encoder.onnx``: ``text_ids`` (B, L) int64 text pieces (0 = pad, 1 <= L <= the generator's
``max_text_tokens``), ``task`` (B,) int64 (``QUERY_TASK`` or ``PRODUCT_TASK``) → ``memory``
(B, 1+L, D) float32, ``memory_pad`` (B, 1+L) bool (True = padding; position 0, the task token,
never is). ``gram_decoder.onnx``: ONE prompt's ``memory`` (1, 1+L, D) and ``memory_pad``
(1, 1+L), ``prefix`` (B, t) int64 code tokens starting with ``BOS``, 1 <= t <= 7 → ``logits``
(B, V) float32 over the whole code vocabulary (``index.gram_vocab``) for the next token.
"""

from __future__ import annotations

import numpy as np

from index.generator_runtime import GeneratorFiles, GeneratorRuntime

GRAM_ENCODER_FILE = "gram_encoder.onnx"
GRAM_DECODER_FILE = "gram_decoder.onnx"
GRAM_PROBE_FILE = "gram_probe.npz"
GRAM_GENERATOR_FILES = (GRAM_ENCODER_FILE, GRAM_DECODER_FILE, GRAM_PROBE_FILE)
ENCODER_INPUTS = ("text_ids", "task")
GRAM_GENERATOR = GeneratorFiles(GRAM_ENCODER_FILE, GRAM_DECODER_FILE, GRAM_PROBE_FILE, ENCODER_INPUTS)

# The encoder's task token: which side's code distribution the one shared generator produces.
QUERY_TASK, PRODUCT_TASK = 0, 1
TASKS = (QUERY_TASK, PRODUCT_TASK)


class GramGeneratorRuntime(GeneratorRuntime):
    """The GRAM generator's sessions (``GeneratorRuntime``: ``load``, ``stepper``, ``dim``,
    ``vocab_size``). Immutable and thread-safe; blocking CPU work: call it off the event loop."""

    files = GRAM_GENERATOR

    def encode(self, text_ids: np.ndarray, task: int) -> tuple[np.ndarray, np.ndarray]:
        """One prompt: text_ids (L,) or (1, L) int64 pieces, ``task`` ``QUERY_TASK`` or
        ``PRODUCT_TASK`` → memory (1, 1+L, D) float32, memory_pad (1, 1+L) bool. Raises
        ``ValueError`` for more than one row, no pieces (L = 0) or an unknown task."""
        text = np.ascontiguousarray(np.atleast_2d(text_ids), dtype=np.int64)
        if text.ndim != 2 or text.shape[0] != 1 or text.shape[1] == 0:
            raise ValueError(f"encode takes one prompt of at least one piece, got shape {np.shape(text_ids)}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        return self._run_encoder({"text_ids": text, "task": np.array([task], dtype=np.int64)})
