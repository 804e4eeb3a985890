"""ONNX export of the encoder with dynamic batch and sequence length, and the agreement check.

The exported graph computes the session mask and session-wise positions from its ``tokens``
input, so one file serves any history length; ``check_agreement`` runs torch and ONNX Runtime
on the same inputs at several lengths and batch sizes before anything is published.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from index.features import stack_left_padded
from model_export.model import Encoder, NSPModel

log = logging.getLogger(__name__)

INPUT_NAME = "tokens"
OUTPUT_NAME = "user_vec"
OPSET = 18


class ExportMismatch(Exception):
    """ONNX Runtime and torch disagree on the encoder output."""


def export_encoder(model: NSPModel, path: Path, example: np.ndarray) -> None:
    """Write ``path`` (a single self-contained ONNX file); example: (B, T, F) int64."""
    batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("length", min=2)
    export_module(Encoder(model), path, example, INPUT_NAME, OUTPUT_NAME, {0: batch, 1: length})


def export_module(
    module: torch.nn.Module,
    path: Path,
    example: np.ndarray,
    input_name: str,
    output_name: str,
    dynamic: dict[int, torch.export.Dim],
) -> None:
    """Export ``module`` (one tensor in, one out) with the dynamo exporter to ``path``, a single
    self-contained ONNX file; ``dynamic`` maps the input's dynamic axes to their ``Dim``."""
    export_graph(module, path, (example,), (input_name,), (output_name,), {_first_argument(module): dynamic})


def export_graph(
    module: torch.nn.Module,
    path: Path,
    examples: tuple[np.ndarray, ...],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    dynamic: dict[str, dict[int, torch.export.Dim]],
) -> None:
    """``export_module`` for several inputs and outputs: ``dynamic`` maps each of ``forward``'s
    arguments by name to its dynamic axes."""
    module = module.eval()
    # The exporter warns through torch's logging about optional torchvision ops we never use.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # one INFO line per graph pass
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not actionable here
        program = torch.onnx.export(
            module,
            tuple(torch.from_numpy(x) for x in examples),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)


def _first_argument(module: torch.nn.Module) -> str:
    """The name of ``forward``'s first parameter: ``dynamic_shapes`` is keyed by it."""
    return next(iter(inspect.signature(module.forward).parameters))


def onnx_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_agreement(
    model: NSPModel, path: Path, sequences: Sequence[np.ndarray], atol: float = 1e-4
) -> float:
    """Max |torch - ORT| over each sequence alone and all of them as one padded batch.

    Raises ExportMismatch above ``atol``: a bundle whose encoder disagrees is never published.
    """
    encoder = Encoder(model).eval()
    session = onnx_session(path)
    batches = [s[None] for s in sequences] + [stack_left_padded(sequences)]
    worst = 0.0
    for tokens in batches:
        expected = encoder(torch.from_numpy(tokens)).numpy()
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: tokens})
        diff = float(np.abs(expected - actual).max())
        worst = max(worst, diff)
        if not diff <= atol:
            raise ExportMismatch(f"ONNX output differs from torch by {diff:.2e} at shape {tokens.shape}")
    log.info("ONNX agreement: max abs diff %.2e over %d shapes", worst, len(batches))
    return worst
