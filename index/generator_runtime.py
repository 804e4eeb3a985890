"""An exported encoder-decoder generator at serving time: the ONNX encoder and one-step decoder
pair that ``model_export.generator_export`` writes, opened, checked against each other, the
manifest and the probe file, and run by ONNX Runtime (numpy only, no torch). The ``sid`` and
``gram`` channels' runtimes are this class with their own files and encoder inputs.

Encoder: the channel's inputs (``GeneratorFiles.encoder_inputs``) → ``memory`` (B, L, D) float32,
``memory_pad`` (B, L) bool (True = padding). Decoder: ONE prompt's ``memory`` (1, L, D) and
``memory_pad`` (1, L), ``prefix`` (B, t) int64 tokens starting with BOS → ``logits`` (B, V)
float32 for the next position only, every prefix row (beam) reading the same memory.
Broadcasting the memory inside the graph computes the cross-attention keys and values once per
step instead of once per beam; feeding memory tiled to B rows was 2-4x slower per step (B
20..100, measured on the SID decoder). No self-attention key/value cache: codes are a few tokens
long, so each step re-reads a short prefix.

The probe file holds one prompt's encoder inputs (under their input names), its ``memory``, a
batch of ``prefix`` rows and their next-token ``logits``, as ONNX Runtime computed them at export.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import onnxruntime as ort

from index.onnx_options import serving_session_options
from index.probe import PROBE_ATOL

ENCODER_OUTPUTS = ("memory", "memory_pad")
DECODER_INPUTS = ("memory", "memory_pad", "prefix")
DECODER_OUTPUTS = ("logits",)

Step = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class GeneratorFiles:
    """One generator's file names and encoder input names."""

    encoder: str
    decoder: str
    probe: str
    encoder_inputs: tuple[str, ...]

    @property
    def names(self) -> tuple[str, str, str]:
        return self.encoder, self.decoder, self.probe

    @property
    def probe_keys(self) -> tuple[str, ...]:
        """The probe file's arrays: the encoder inputs, then the outputs to reproduce."""
        return (*self.encoder_inputs, "memory", "prefix", "logits")


class GeneratorRuntime:
    """Loaded encoder and decoder sessions of the generator ``files`` names (set by each
    channel's subclass, which adds its own ``encode``). Immutable; every method may be called
    from many threads (ONNX Runtime sessions are thread-safe). All calls are blocking CPU work:
    call them off the event loop."""

    files: ClassVar[GeneratorFiles]

    def __init__(self, encoder: ort.InferenceSession, decoder: ort.InferenceSession) -> None:
        self._encoder = encoder
        self._decoder = decoder
        self.dim = _static(decoder.get_inputs()[0].shape[-1], self.files.decoder, "memory dim")
        self.vocab_size = _static(decoder.get_outputs()[0].shape[-1], self.files.decoder, "vocabulary")

    @classmethod
    def load(
        cls,
        directory: Path,
        threads: int = 1,
        *,
        dim: int | None = None,
        vocab_size: int | None = None,
    ) -> Self:
        """Open the encoder and decoder files in ``directory`` and check them.

        Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when a
        file cannot be loaded, has other input/output names, disagrees with the other file or
        with ``dim`` / ``vocab_size`` (the manifest's, where given), or does not reproduce the
        probe file's memory (encoder) or logits (decoder) within ``PROBE_ATOL``."""
        files = cls.files
        encoder = _open_session(directory / files.encoder, files.encoder_inputs, ENCODER_OUTPUTS, threads)
        decoder = _open_session(directory / files.decoder, DECODER_INPUTS, DECODER_OUTPUTS, threads)
        runtime = cls(encoder, decoder)
        if decoder.get_inputs()[0].shape[0] != 1:
            raise ValueError(
                f"{files.decoder} reads a memory batch of {decoder.get_inputs()[0].shape[0]!r}, not 1"
            )
        encoder_dim = encoder.get_outputs()[0].shape[-1]
        if encoder_dim != runtime.dim:
            raise ValueError(f"{files.encoder} memory dim {encoder_dim}, {files.decoder} reads {runtime.dim}")
        if dim is not None and dim != runtime.dim:
            raise ValueError(f"{files.decoder} memory dim {runtime.dim}, the manifest says {dim}")
        if vocab_size is not None and vocab_size != runtime.vocab_size:
            raise ValueError(
                f"{files.decoder} vocabulary {runtime.vocab_size}, the manifest says {vocab_size}"
            )
        runtime._check_probe(directory / files.probe)
        return runtime

    def _run_encoder(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        memory, pad = self._encoder.run(list(ENCODER_OUTPUTS), feed)
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
        files = self.files
        try:
            with np.load(path, allow_pickle=False) as probe:
                arrays = {key: probe[key] for key in files.probe_keys}
        except FileNotFoundError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"unreadable {path.name}: {exc}") from exc
        try:
            feed = {name: np.ascontiguousarray(arrays[name], np.int64) for name in files.encoder_inputs}
            got_memory, got_pad = self._run_encoder(feed)
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise ValueError(f"{files.encoder} failed on the probe: {exc}") from exc
        _compare(got_memory, arrays["memory"], files.encoder, path.name)
        try:
            got_logits = self.stepper(got_memory, got_pad)(arrays["prefix"])
        except Exception as exc:
            raise ValueError(f"{files.decoder} failed on the probe: {exc}") from exc
        _compare(got_logits, arrays["logits"], files.decoder, path.name)


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
