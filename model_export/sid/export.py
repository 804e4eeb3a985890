"""ONNX export of the SID generator: ``sid_encoder.onnx`` and a one-step ``sid_decoder.onnx``
(``index.sid_generator`` documents their inputs and outputs), the torch-vs-ONNX Runtime parity
check, and the probe file the serving side verifies at load. The steps are
``model_export.generator_export``'s; this module picks the SID generator's cases.

The decoder takes one prompt's memory (batch 1) for B prefix rows (beams); see
``index.generator_runtime`` for why, and for why there is no self-attention key/value cache.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from index.sid_generator import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    SID_DECODER_FILE,
    SID_ENCODER_FILE,
    SID_FILES,
    SID_PROBE_FILE,
)
from index.sid_layout import BOS_TOKEN, LEVELS, PAD_TOKEN
from model_export.generator_export import (
    PARITY_ATOL,
    PROBE_BATCH,
    check_parity,
    export_decoder,
    export_encoder,
    pad_rows,
    write_probe,
)
from model_export.sid.generator import TEXT_PAD, SidGenerator

log = logging.getLogger(__name__)

PROBE_TEXT_LENGTHS = (1, 4, 16)  # text pieces of the parity cases (capped at max_text_tokens)


@dataclass(frozen=True)
class GeneratorExport:
    """What the manifest records about the exported generator."""

    encoder: str
    decoder: str
    probe: str
    encoder_inputs: tuple[str, ...]
    encoder_outputs: tuple[str, ...]
    decoder_inputs: tuple[str, ...]
    decoder_outputs: tuple[str, ...]
    dim: int  # memory width D
    vocab_size: int  # SID token vocabulary V (decoder logits width)
    text_vocab: int
    sid_sizes: tuple[int, int, int, int]
    max_text_tokens: int
    max_user_tokens: int  # 4 * user_sids
    parity_max_abs_diff: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def export_generator(
    model: SidGenerator,
    directory: Path,
    text_pieces: np.ndarray | None = None,
    user_sids: np.ndarray | None = None,
) -> GeneratorExport:
    """Write ``sid_encoder.onnx``, ``sid_decoder.onnx`` and ``sid_probe.npz`` into ``directory``.

    ``text_pieces`` (n,) int64 real piece ids (e.g. the catalog's titles, padding dropped) and
    ``user_sids`` (m, 4) real SID level values make the parity and probe inputs; without them,
    ids spread over the vocabularies. Raises ``ExportMismatch`` when ONNX Runtime and torch
    differ by more than 1e-4 anywhere (text lengths 1/4/16, user parts of 0 and max tokens,
    prompt batches of 1 and 3 with all-pad rows, prefix lengths 1..4 over 1 and 3 beams)."""
    model = model.eval()
    config = model.config
    encoder_path, decoder_path = directory / SID_ENCODER_FILE, directory / SID_DECODER_FILE
    text, user = _probe_parts(model, text_pieces, user_sids)
    batch = torch.export.Dim("batch", min=1)
    text_len = torch.export.Dim("text", min=1, max=config.max_text_tokens)
    user_len = torch.export.Dim("user", min=0, max=config.max_user_tokens)
    example = {"text_ids": _batch(text[-1:] * PROBE_BATCH), "user_tokens": _batch(user[-1:] * PROBE_BATCH)}
    dynamic = {"text_ids": {0: batch, 1: text_len}, "user_tokens": {0: batch, 1: user_len}}
    export_encoder(model, encoder_path, SID_FILES, example, dynamic)
    with torch.no_grad():  # one prompt: the decoder reads one memory for all its rows (beams)
        memory, pad = model.encode(torch.from_numpy(text[-1]), torch.from_numpy(user[-1]))
    export_decoder(model, decoder_path, memory, pad, _prefixes(model, PROBE_BATCH, LEVELS), LEVELS)
    worst = check_generator(model, encoder_path, decoder_path, text, user)
    probe = {"text_ids": text[-1], "user_tokens": user[-1]}
    write_probe(SID_FILES, directory, probe, _prefixes(model, PROBE_BATCH, LEVELS))
    return GeneratorExport(
        encoder=SID_ENCODER_FILE,
        decoder=SID_DECODER_FILE,
        probe=SID_PROBE_FILE,
        encoder_inputs=ENCODER_INPUTS,
        encoder_outputs=ENCODER_OUTPUTS,
        decoder_inputs=DECODER_INPUTS,
        decoder_outputs=DECODER_OUTPUTS,
        dim=config.dim,
        vocab_size=model.layout.vocab_size,
        text_vocab=config.text_vocab,
        sid_sizes=model.layout.sizes,
        max_text_tokens=config.max_text_tokens,
        max_user_tokens=config.max_user_tokens,
        parity_max_abs_diff=worst,
    )


def check_generator(
    model: SidGenerator,
    encoder_path: Path,
    decoder_path: Path,
    text: list[np.ndarray],
    user: list[np.ndarray],
    atol: float = PARITY_ATOL,
) -> float:
    """Max |torch - ORT| over memory and next-token logits (ORT encoder feeding the ORT decoder,
    one prompt's memory at a time) for every text row alone and all of them as one right-padded
    batch, each with every user row (user parts may have width 0), at prefix lengths 1..4.
    Raises ``ExportMismatch`` above ``atol`` naming the file and the shapes."""
    batches = [(t, u) for t in text for u in user]
    batches += [(_batch(text), _batch([u] * len(text))) for u in user]
    batches.append((_batch(text), _batch(user[::-1] * len(text))[: len(text)]))  # mixed user parts
    feeds = [{"text_ids": t, "user_tokens": u} for t, u in batches]
    return check_parity(
        model,
        SID_FILES,
        encoder_path,
        decoder_path,
        feeds,
        lambda rows, length: _prefixes(model, rows, length),
        LEVELS,
        atol,
    )


def _probe_parts(
    model: SidGenerator, text_pieces: np.ndarray | None, user_sids: np.ndarray | None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Text rows (1, n) for n in ``PROBE_TEXT_LENGTHS`` (capped) and user rows (1, 0) and
    (1, max_user_tokens), from the given pieces and SIDs or spread-out stand-ins."""
    config = model.config
    pieces = np.asarray(text_pieces if text_pieces is not None else [], dtype=np.int64).ravel()
    pieces = pieces[pieces != TEXT_PAD]
    if len(pieces) == 0:
        pieces = 1 + (np.arange(64, dtype=np.int64) * 7919) % max(config.text_vocab - 1, 1)
    lengths = sorted({min(n, config.max_text_tokens) for n in PROBE_TEXT_LENGTHS})
    text = [np.resize(np.roll(pieces, -n), n).astype(np.int64)[None] for n in lengths]
    sizes = np.asarray(model.layout.sizes)
    if user_sids is None or len(user_sids) == 0:
        user_sids = (np.arange(config.user_sids)[:, None] * np.array([3, 5, 7, 1])) % sizes
    sids = np.resize(np.asarray(user_sids, dtype=np.int64), (config.user_sids, LEVELS))
    user = [np.zeros((1, 0), np.int64), model.layout.to_tokens(sids).reshape(1, -1)]
    return text, user


def _batch(rows: list[np.ndarray]) -> np.ndarray:
    """``pad_rows``: the text pad and ``PAD_TOKEN`` are both 0."""
    assert TEXT_PAD == PAD_TOKEN
    return pad_rows(rows, PAD_TOKEN)


def _prefixes(model: SidGenerator, rows: int, length: int) -> np.ndarray:
    """(rows, length) int64: BOS then distinct in-range level tokens per row."""
    values = (np.arange(rows)[:, None] * np.array([1, 2, 3, 1]) + 1) % np.asarray(model.layout.sizes)
    tokens = model.layout.to_tokens(values)[:, : length - 1]
    return np.concatenate([np.full((rows, 1), BOS_TOKEN, np.int64), tokens], axis=1)
