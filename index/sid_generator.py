"""The ``sid`` channel's generator at serving time: the ONNX encoder and one-step decoder that
``model_export.sid.export`` writes, run by ONNX Runtime (numpy only, no torch).

``sid_encoder.onnx``: ``text_ids`` (B, Lt) int64 (0 = pad), ``user_tokens`` (B, Lu) int64 SID
tokens (``PAD_TOKEN`` = pad; Lu may be 0) → ``memory`` (B, 1+Lt+Lu, D) float32, ``memory_pad``
(B, 1+Lt+Lu) bool (True = padding). ``sid_decoder.onnx``: ONE prompt's ``memory`` (1, L, D) and
``memory_pad`` (1, L), ``prefix`` (B, t) int64 SID tokens starting with BOS, 1 <= t <= 4 →
``logits`` (B, V) float32 for the next position only, every prefix row (beam) reading the same
memory. Broadcasting the memory inside the graph computes the cross-attention keys and values
once per step instead of once per beam; feeding memory tiled to B rows was 2-4x slower per step
(B 20..100, measured). No self-attention key/value cache: a SID is four tokens, so each step
re-reads a prefix of at most four.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from index.onnx_options import serving_session_options
from index.probe import PROBE_ATOL

SID_ENCODER_FILE = "sid_encoder.onnx"
SID_DECODER_FILE = "sid_decoder.onnx"
SID_PROBE_FILE = "sid_probe.npz"
SID_GENERATOR_FILES = (SID_ENCODER_FILE, SID_DECODER_FILE, SID_PROBE_FILE)
ENCODER_INPUTS = ("text_ids", "user_tokens")
ENCODER_OUTPUTS = ("memory", "memory_pad")
DECODER_INPUTS = ("memory", "memory_pad", "prefix")
DECODER_OUTPUTS = ("logits",)
# The probe file's arrays: one prompt, its encoder memory, prefixes and their next-token logits.
PROBE_KEYS = ("text_ids", "user_tokens", "memory", "prefix", "logits")

Step = Callable[[np.ndarray], np.ndarray]


class SidGeneratorRuntime:
    """Loaded encoder and decoder sessions. Immutable; every method may be called from many
    threads (ONNX Runtime sessions are thread-safe). All calls are blocking CPU work: call them
    off the event loop."""

    def __init__(self, encoder: ort.InferenceSession, decoder: ort.InferenceSession) -> None:
        self._encoder = encoder
        self._decoder = decoder
        self.dim = _static(decoder.get_inputs()[0].shape[-1], SID_DECODER_FILE, "memory dim")
        self.vocab_size = _static(decoder.get_outputs()[0].shape[-1], SID_DECODER_FILE, "vocabulary")

    @classmethod
    def load(
        cls,
        directory: Path,
        threads: int = 1,
        *,
        dim: int | None = None,
        vocab_size: int | None = None,
    ) -> SidGeneratorRuntime:
        """Open ``SID_ENCODER_FILE`` and ``SID_DECODER_FILE`` in ``directory`` and check them.

        Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when a
        file cannot be loaded, has other input/output names, disagrees with the other file or
        with ``dim`` / ``vocab_size`` (the manifest's, where given), or does not reproduce
        ``SID_PROBE_FILE``'s memory (encoder) or logits (decoder) within ``PROBE_ATOL``."""
        encoder = _open_session(directory / SID_ENCODER_FILE, ENCODER_INPUTS, ENCODER_OUTPUTS, threads)
        decoder = _open_session(directory / SID_DECODER_FILE, DECODER_INPUTS, DECODER_OUTPUTS, threads)
        runtime = cls(encoder, decoder)
        if decoder.get_inputs()[0].shape[0] != 1:
            raise ValueError(
                f"{SID_DECODER_FILE} reads a memory batch of {decoder.get_inputs()[0].shape[0]!r}, not 1"
            )
        encoder_dim = encoder.get_outputs()[0].shape[-1]
        if encoder_dim != runtime.dim:
            raise ValueError(
                f"{SID_ENCODER_FILE} memory dim {encoder_dim}, {SID_DECODER_FILE} reads {runtime.dim}"
            )
        if dim is not None and dim != runtime.dim:
            raise ValueError(f"{SID_DECODER_FILE} memory dim {runtime.dim}, the manifest says {dim}")
        if vocab_size is not None and vocab_size != runtime.vocab_size:
            raise ValueError(
                f"{SID_DECODER_FILE} vocabulary {runtime.vocab_size}, the manifest says {vocab_size}"
            )
        runtime._check_probe(directory / SID_PROBE_FILE)
        return runtime

    def encode(self, text_ids: np.ndarray, user_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One prompt: text_ids (Lt,) or (1, Lt), user_tokens (Lu,) or (1, Lu) int64 → memory
        (1, L, D) float32, memory_pad (1, L) bool. Raises ``ValueError`` for more than one row."""
        text = np.ascontiguousarray(np.atleast_2d(text_ids), dtype=np.int64)
        user = np.ascontiguousarray(np.asarray(user_tokens, dtype=np.int64).reshape(1, -1))
        if text.shape[0] != 1:
            raise ValueError(f"encode takes one prompt, got text_ids of shape {np.shape(text_ids)}")
        memory, pad = self._encoder.run(list(ENCODER_OUTPUTS), {"text_ids": text, "user_tokens": user})
        return np.asarray(memory, dtype=np.float32), np.asarray(pad, dtype=bool)

    def stepper(self, memory: np.ndarray, memory_pad: np.ndarray) -> Step:
        """The decoder for one encoded prompt (``encode``'s outputs) as ``step(prefix (B, t)
        int64) -> logits (B, V)``: every prefix row is a beam of that prompt. Raises
        ``ValueError`` for memory of more than one prompt."""
        if memory.shape[0] != 1 or memory_pad.shape != memory.shape[:2]:
            raise ValueError(f"stepper takes one prompt's memory, got {memory.shape} / {memory_pad.shape}")
        feed = {
            "memory": np.ascontiguousarray(memory, np.float32),
            "memory_pad": np.ascontiguousarray(memory_pad),
        }

        def step(prefix: np.ndarray) -> np.ndarray:
            tokens = np.ascontiguousarray(prefix, dtype=np.int64)
            (logits,) = self._decoder.run(list(DECODER_OUTPUTS), {**feed, "prefix": tokens})
            return np.asarray(logits, dtype=np.float32)

        return step

    def _check_probe(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as probe:
                text, user, memory, prefix, logits = (probe[key] for key in PROBE_KEYS)
        except FileNotFoundError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"unreadable {path.name}: {exc}") from exc
        try:
            got_memory, got_pad = self.encode(text, user)
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise ValueError(f"{SID_ENCODER_FILE} failed on the probe: {exc}") from exc
        _compare(got_memory, memory, SID_ENCODER_FILE, path.name)
        try:
            got_logits = self.stepper(got_memory, got_pad)(prefix)
        except Exception as exc:
            raise ValueError(f"{SID_DECODER_FILE} failed on the probe: {exc}") from exc
        _compare(got_logits, logits, SID_DECODER_FILE, path.name)


def _compare(actual: np.ndarray, expected: np.ndarray, file: str, probe: str) -> None:
    if actual.shape != expected.shape:
        raise ValueError(f"{file} output shape {actual.shape}, {probe} expects {expected.shape}")
    if not np.allclose(actual, expected, atol=PROBE_ATOL):
        worst = float(np.max(np.abs(actual - expected)))
        raise ValueError(f"{file} does not reproduce the probe in {probe} (max abs diff {worst:.2e})")


def _open_session(
    path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...], threads: int
) -> ort.InferenceSession:
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}")
    try:
        session = ort.InferenceSession(
            str(path), sess_options=serving_session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ONNX Runtime raises its own exception types
        raise ValueError(f"ONNX Runtime cannot load {path.name}: {exc}") from exc
    found_in = tuple(i.name for i in session.get_inputs())
    found_out = tuple(o.name for o in session.get_outputs())
    if found_in != inputs or found_out != outputs:
        raise ValueError(
            f"{path.name} has inputs {found_in} and outputs {found_out}, expected {inputs} → {outputs}"
        )
    return session


def _static(dim: object, file: str, what: str) -> int:
    if not isinstance(dim, int):
        raise ValueError(f"{file} has a dynamic {what} ({dim!r}); the export fixes it")
    return dim
