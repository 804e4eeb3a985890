"""The dense text channel's serving side: the ONNX query encoder and the HNSW index of item
text vectors a bundle carries (``model_export.text.dense`` writes them).

``DenseText.load`` checks the files agree with the manifest's ``text.dense`` section and with
each other, and that the encoder reproduces the probe recorded at export, so a re-exported or
corrupt ``query_encoder.onnx`` is refused before it serves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from index.ann import ItemIndex
from index.bundle import DenseSpec
from index.onnx_options import serving_session_options
from index.probe import verify_probe
from index.tokenizer import PAD_ID, TextTokenizer

QUERY_ENCODER_FILE = "query_encoder.onnx"
TEXT_INDEX_FILE = "text_items.hnsw"
TEXT_PROBE_FILE = "text_probe.npz"
DENSE_FILES = (QUERY_ENCODER_FILE, TEXT_INDEX_FILE, TEXT_PROBE_FILE)
INPUT_NAME = "query_tokens"  # (B, L) int64 piece ids, right-padded with 0
OUTPUT_NAME = "query_vec"  # (B, D) float32, L2-normalised


class DenseText:
    """A loaded query encoder and item index. Immutable; ``encode`` and ``search`` may be called
    from many threads (ONNX Runtime sessions and hnswlib queries are thread-safe). Both are
    blocking CPU work: call them off the event loop."""

    def __init__(
        self, session: ort.InferenceSession, index: ItemIndex, spec: DenseSpec, max_query_tokens: int
    ) -> None:
        self._session = session
        self._index = index
        self.spec = spec
        self.max_query_tokens = max_query_tokens

    @classmethod
    def load(
        cls, directory: Path, spec: DenseSpec, n_items: int, max_query_tokens: int, *, threads: int = 1
    ) -> DenseText:
        """Load and check ``DENSE_FILES`` in ``directory``. Raises ``OSError`` for a missing file,
        ``ValueError`` when a file disagrees with ``spec``, the catalog or the probe, and
        ``RuntimeError`` for a file ONNX Runtime or hnswlib cannot read."""
        session = _open_session(directory / QUERY_ENCODER_FILE, spec, threads)
        try:
            index = ItemIndex.load(
                directory / TEXT_INDEX_FILE, spec.dim, n_items, spec.hnsw, num_threads=threads
            )
        except (OSError, RuntimeError, ValueError) as exc:  # hnswlib raises RuntimeError
            raise type(exc)(f"{TEXT_INDEX_FILE}: {exc}") from exc
        if index.count != n_items:
            raise ValueError(f"{TEXT_INDEX_FILE} holds {index.count} items, the catalog {n_items}")
        dense = cls(session, index, spec, max_query_tokens)
        dense._check_probe(directory / TEXT_PROBE_FILE)
        return dense

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """(B, L) int64 piece ids → (B, D) float32 query vectors."""
        (out,) = self._session.run(
            [self.spec.outputs[0]], {self.spec.inputs[0]: np.ascontiguousarray(ids, np.int64)}
        )
        return np.asarray(out, dtype=np.float32)

    def search(
        self, query: str, tokenizer: TextTokenizer, k: int, excluded: frozenset[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels int64, scores float32) of the items nearest ``query``, best first: exactly
        min(k, catalog - excluded), none in ``excluded``. A query with no pieces (nothing left
        after normalisation) has no neighbours: empty arrays."""
        ids = tokenizer.ids([query], self.max_query_tokens)  # (1, L)
        length = int((ids[0] != PAD_ID).sum())
        if length == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        vector = self.encode(ids[:, :length])  # (1, D); padding changes nothing but the work
        return self._index.search_excluding(vector, k, excluded)

    def _check_probe(self, path: Path) -> None:
        out = verify_probe(
            path, ("query_tokens", "query_vec"), self.encode, self.spec.dim, QUERY_ENCODER_FILE
        )
        self._index.search(out, min(10, self._index.count))  # warm the index pages


def _open_session(path: Path, spec: DenseSpec, threads: int) -> ort.InferenceSession:
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}")
    options = serving_session_options(threads)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own exception types
        raise ValueError(f"ONNX Runtime cannot load {path.name}: {exc}") from exc
    inputs = [i.name for i in session.get_inputs()]
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if not spec.inputs or spec.inputs[0] not in inputs:
        raise ValueError(f"{path.name} has inputs {inputs}, the manifest names {spec.inputs}")
    if not spec.outputs or spec.outputs[0] not in outputs:
        raise ValueError(f"{path.name} has outputs {list(outputs)}, the manifest names {spec.outputs}")
    dim = outputs[spec.outputs[0]][-1]
    if isinstance(dim, int) and dim != spec.dim:
        raise ValueError(f"{path.name} outputs dim {dim}, the manifest says {spec.dim}")
    return session
