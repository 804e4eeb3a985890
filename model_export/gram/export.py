"""ONNX export of the GRAM generator: ``gram_encoder.onnx`` and a one-step ``gram_decoder.onnx``
(``index.gram_generator`` documents their inputs and outputs), the torch-vs-ONNX Runtime parity
check, and the probe file the serving side verifies at load. The steps are
``model_export.generator_export``'s (shared with the SID generator); this module picks the cases.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from index.generator_runtime import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_OUTPUTS
from index.gram_generator import (
    ENCODER_INPUTS,
    GRAM_DECODER_FILE,
    GRAM_ENCODER_FILE,
    GRAM_GENERATOR,
    GRAM_PROBE_FILE,
    PRODUCT_TASK,
    QUERY_TASK,
)
from index.gram_vocab import BOS, MAX_CODE_TOKENS, RESERVED
from model_export.generator_export import (
    PARITY_ATOL,
    PROBE_BATCH,
    check_parity,
    export_decoder,
    export_encoder,
    pad_rows,
    write_probe,
)
from model_export.gram.generator import TEXT_PAD, GramGenerator

log = logging.getLogger(__name__)

PROBE_TEXT_LENGTHS = (1, 5, 16, 48)  # text pieces of the parity cases (capped at max_text_tokens)


@dataclass(frozen=True)
class GramExport:
    """What the manifest records about the exported generator."""

    encoder: str
    decoder: str
    probe: str
    encoder_inputs: tuple[str, ...]
    encoder_outputs: tuple[str, ...]
    decoder_inputs: tuple[str, ...]
    decoder_outputs: tuple[str, ...]
    dim: int  # memory width D
    vocab_size: int  # code token vocabulary V (decoder logits width)
    text_vocab: int
    max_text_tokens: int
    max_code_tokens: int  # longest decoder prefix: BOS + 6 values
    parity_max_abs_diff: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def export_generator(
    model: GramGenerator, directory: Path, text_pieces: np.ndarray | None = None
) -> GramExport:
    """Write ``gram_encoder.onnx``, ``gram_decoder.onnx`` and ``gram_probe.npz`` into ``directory``.

    ``text_pieces`` (n,) int64 real piece ids (e.g. the catalog's titles, padding dropped) make
    the parity and probe inputs; without them, ids spread over the vocabulary. Raises
    ``ExportMismatch`` when ONNX Runtime and torch differ by more than 1e-4 anywhere (text
    lengths 1/5/16/48 capped at ``max_text_tokens``, both tasks, a batch with an all-pad row
    and mixed tasks, prefix lengths 1..7 over 1 and 3 beams)."""
    model = model.eval()
    config = model.config
    encoder_path, decoder_path = directory / GRAM_ENCODER_FILE, directory / GRAM_DECODER_FILE
    text = _probe_text(model, text_pieces)
    batch = torch.export.Dim("batch", min=1)
    text_len = torch.export.Dim("text", min=1, max=config.max_text_tokens)
    example = {"text_ids": pad_rows(text[-1:] * PROBE_BATCH, TEXT_PAD), "task": _tasks(PROBE_BATCH)}
    export_encoder(
        model,
        encoder_path,
        GRAM_GENERATOR,
        example,
        {"text_ids": {0: batch, 1: text_len}, "task": {0: batch}},
    )
    with torch.no_grad():  # one prompt: the decoder reads one memory for all its rows (beams)
        memory, pad = model.encode(torch.from_numpy(text[-1]), torch.tensor([QUERY_TASK]))
    export_decoder(
        model, decoder_path, memory, pad, _prefixes(model, PROBE_BATCH, MAX_CODE_TOKENS), MAX_CODE_TOKENS
    )
    worst = check_generator(model, encoder_path, decoder_path, text)
    probe = {"text_ids": text[-1], "task": np.array([QUERY_TASK], np.int64)}
    write_probe(GRAM_GENERATOR, directory, probe, _prefixes(model, PROBE_BATCH, MAX_CODE_TOKENS))
    return GramExport(
        encoder=GRAM_ENCODER_FILE,
        decoder=GRAM_DECODER_FILE,
        probe=GRAM_PROBE_FILE,
        encoder_inputs=ENCODER_INPUTS,
        encoder_outputs=ENCODER_OUTPUTS,
        decoder_inputs=DECODER_INPUTS,
        decoder_outputs=DECODER_OUTPUTS,
        dim=config.dim,
        vocab_size=config.code_vocab,
        text_vocab=config.text_vocab,
        max_text_tokens=config.max_text_tokens,
        max_code_tokens=MAX_CODE_TOKENS,
        parity_max_abs_diff=worst,
    )


def check_generator(
    model: GramGenerator,
    encoder_path: Path,
    decoder_path: Path,
    text: list[np.ndarray],
    atol: float = PARITY_ATOL,
) -> float:
    """Max |torch - ORT| over memory and next-token logits (ORT encoder feeding the ORT decoder,
    one prompt's memory at a time) for every text row (1, n) alone with each task, and all of
    them as one right-padded batch (first row all padding) with alternating tasks, at prefix
    lengths 1..7. Raises ``ExportMismatch`` above ``atol`` naming the file and the shapes."""
    feeds = [
        {"text_ids": t, "task": np.array([task], np.int64)}
        for t in text
        for task in (QUERY_TASK, PRODUCT_TASK)
    ]
    feeds.append({"text_ids": pad_rows(text, TEXT_PAD), "task": _tasks(len(text))})
    return check_parity(
        model,
        GRAM_GENERATOR,
        encoder_path,
        decoder_path,
        feeds,
        lambda rows, length: _prefixes(model, rows, length),
        MAX_CODE_TOKENS,
        atol,
    )


def _probe_text(model: GramGenerator, text_pieces: np.ndarray | None) -> list[np.ndarray]:
    """Text rows (1, n) for n in ``PROBE_TEXT_LENGTHS`` (capped), from the given pieces or
    spread-out stand-ins."""
    config = model.config
    pieces = np.asarray(text_pieces if text_pieces is not None else [], dtype=np.int64).ravel()
    pieces = pieces[pieces != TEXT_PAD]
    if len(pieces) == 0:
        pieces = 1 + (np.arange(64, dtype=np.int64) * 7919) % max(config.text_vocab - 1, 1)
    lengths = sorted({min(n, config.max_text_tokens) for n in PROBE_TEXT_LENGTHS})
    return [np.resize(np.roll(pieces, -n), n).astype(np.int64)[None] for n in lengths]


def _tasks(rows: int) -> np.ndarray:
    """(rows,) int64 alternating query and product tasks."""
    return np.where(np.arange(rows) % 2 == 0, QUERY_TASK, PRODUCT_TASK).astype(np.int64)


def _prefixes(model: GramGenerator, rows: int, length: int) -> np.ndarray:
    """(rows, length) int64: BOS then distinct value tokens per row."""
    values = model.config.code_vocab - RESERVED
    steps = np.arange(1, length)[None] * np.array([[1], [2], [3]])[np.arange(rows) % 3]  # (rows, length-1)
    tokens = RESERVED + (steps + np.arange(rows)[:, None]) % values
    return np.concatenate([np.full((rows, 1), BOS, np.int64), tokens.astype(np.int64)], axis=1)
