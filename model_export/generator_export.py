"""The ONNX export steps every encoder-decoder generator shares (``model_export.sid.export``,
``model_export.gram.export``): the one-step decoder graph, the torch-vs-ONNX Runtime parity check
over encoder feeds and decoder prefixes, and the probe file ``index.generator_runtime`` verifies
at load. Each channel's module exports its own encoder (its inputs differ) and picks the cases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from index.generator_runtime import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_OUTPUTS, GeneratorFiles
from model_export.export import ExportMismatch, export_graph, onnx_session

log = logging.getLogger(__name__)

PROBE_BATCH = 3  # rows of the batched parity cases and of the probe's prefixes
PARITY_ATOL = 1e-4

Prefixes = Callable[[int, int], np.ndarray]  # (rows, length) -> (rows, length) int64, BOS first


class EncoderDecoder(Protocol):
    """A generator as its ONNX files see it: two encoder inputs, one decoder."""

    def encode(self, text_ids: torch.Tensor, other: torch.Tensor, /) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(
        self, memory: torch.Tensor, memory_pad: torch.Tensor, prefix: torch.Tensor, /
    ) -> torch.Tensor: ...


class EncoderGraph(nn.Module):
    def __init__(self, model: EncoderDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, text_ids: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(text_ids, other)


class DecoderStep(nn.Module):
    """One decoding step: next-token logits (B, V) of the last prefix position."""

    def __init__(self, model: EncoderDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, memory: torch.Tensor, memory_pad: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        return self.model.decode(memory, memory_pad, prefix)[:, -1]  # (B, V)


def export_encoder(
    model: EncoderDecoder,
    path: Path,
    files: GeneratorFiles,
    example: dict[str, np.ndarray],
    dynamic: dict[str, dict[int, torch.export.Dim]],
) -> None:
    """Write the encoder graph (inputs ``files.encoder_inputs``, fed ``example``) to ``path``;
    ``dynamic`` maps each input name to its dynamic axes."""
    first, second = files.encoder_inputs
    examples = (example[first], example[second])
    dims = {"text_ids": dynamic[first], "other": dynamic[second]}
    export_graph(EncoderGraph(model), path, examples, files.encoder_inputs, ENCODER_OUTPUTS, dims)


def export_decoder(
    model: EncoderDecoder,
    path: Path,
    memory: torch.Tensor,
    memory_pad: torch.Tensor,
    prefix: np.ndarray,
    max_prefix: int,
) -> None:
    """Write the one-step decoder graph to ``path``: one prompt's memory (1, L, D), L >= 2, read
    by a dynamic batch of prefixes of 1..``max_prefix`` tokens (``prefix`` is the example)."""
    memory_len = torch.export.Dim("memory", min=2)
    export_graph(
        DecoderStep(model),
        path,
        (memory.numpy(), memory_pad.numpy(), prefix),
        DECODER_INPUTS,
        DECODER_OUTPUTS,
        {
            "memory": {1: memory_len},
            "memory_pad": {1: memory_len},
            "prefix": {
                0: torch.export.Dim("batch", min=1),
                1: torch.export.Dim("prefix", min=1, max=max_prefix),
            },
        },
    )


@torch.no_grad()
def check_parity(
    model: EncoderDecoder,
    files: GeneratorFiles,
    encoder_path: Path,
    decoder_path: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    prefixes: Prefixes,
    max_prefix: int,
    atol: float = PARITY_ATOL,
) -> float:
    """Max |torch - ORT| over memory and next-token logits (ORT encoder feeding the ORT decoder,
    one prompt's memory at a time) for every encoder feed in ``feeds`` and, for each of its rows,
    one BOS prefix and ``PROBE_BATCH`` prefixes of every length 1..``max_prefix``. Raises
    ``ExportMismatch`` above ``atol`` naming the file and the shapes."""
    encoder, decoder = onnx_session(encoder_path), onnx_session(decoder_path)
    worst = 0.0
    for feed in feeds:
        inputs = [torch.from_numpy(feed[name]) for name in files.encoder_inputs]
        expected, expected_pad = model.encode(inputs[0], inputs[1])
        memory, pad = encoder.run(list(ENCODER_OUTPUTS), feed)
        where = ", ".join(f"{name} {feed[name].shape}" for name in files.encoder_inputs)
        worst = max(worst, max_abs_diff(expected.numpy(), memory, atol, f"{files.encoder} at {where}"))
        if not np.array_equal(pad, expected_pad.numpy()):
            raise ExportMismatch(f"{files.encoder} memory_pad differs from torch at {where}")
        for row in range(len(memory)):  # the decoder takes one prompt's memory
            one, one_pad = expected[row : row + 1], expected_pad[row : row + 1]
            step_feed = {"memory": memory[row : row + 1], "memory_pad": pad[row : row + 1]}
            for rows, length in [(1, 1)] + [(PROBE_BATCH, n) for n in range(1, max_prefix + 1)]:
                prefix = prefixes(rows, length)
                want = model.decode(one, one_pad, torch.from_numpy(prefix))[:, -1].numpy()
                (got,) = decoder.run(list(DECODER_OUTPUTS), {**step_feed, "prefix": prefix})
                where_step = f"{files.decoder} at {where}, row {row}, prefix {prefix.shape}"
                worst = max(worst, max_abs_diff(want, got, atol, where_step))
    log.info("%s ONNX agreement: max abs diff %.2e over %d prompt shapes", files.encoder, worst, len(feeds))
    return worst


def max_abs_diff(expected: np.ndarray, actual: np.ndarray, atol: float, where: str) -> float:
    """Max |expected - actual|; raises ``ExportMismatch`` for other shapes or a diff above ``atol``."""
    if expected.shape != actual.shape:
        raise ExportMismatch(f"{where}: ONNX shape {actual.shape}, torch {expected.shape}")
    diff = float(np.abs(expected - actual).max()) if expected.size else 0.0
    if not diff <= atol:
        raise ExportMismatch(f"{where}: ONNX output differs from torch by {diff:.2e}")
    return diff


def write_probe(
    files: GeneratorFiles, directory: Path, feed: dict[str, np.ndarray], prefix: np.ndarray
) -> None:
    """Record ONNX Runtime's memory and next-token logits for ``prefix`` rows of one prompt
    (``feed``, batch 1) in the probe file: the serving side must reproduce both."""
    (memory, pad) = onnx_session(directory / files.encoder).run(list(ENCODER_OUTPUTS), feed)
    step_feed = {"memory": memory, "memory_pad": pad, "prefix": prefix}
    (logits,) = onnx_session(directory / files.decoder).run(list(DECODER_OUTPUTS), step_feed)
    arrays: dict[str, Any] = {**feed, "memory": memory, "prefix": prefix, "logits": logits}
    with (directory / files.probe).open("wb") as f:
        np.savez(f, **arrays)


def pad_rows(rows: Sequence[np.ndarray], pad: int = 0) -> np.ndarray:
    """Right-pad (1, n_i) rows into one (len(rows), max n) batch. The first row is left all
    padding when there are several: an empty prompt is a parity case too."""
    width = max(r.shape[1] for r in rows)
    out = np.full((len(rows), width), pad, np.int64)
    for i, row in enumerate(rows):
        if i or len(rows) == 1:
            out[i, : row.shape[1]] = row[0]
    return out
