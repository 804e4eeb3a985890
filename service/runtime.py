"""A bundle loaded for serving: encoder (ONNX Runtime), item index (hnswlib), vocabulary,
fallbacks, the channels' files (the i2i table) and the items' metadata.

``LoadedBundle.load`` is the only way in, and it validates before it returns: manifest, file
checksums (before any other reader sees a file: hnswlib and ONNX Runtime trust their input),
shapes and counts that must agree, and the probe (the encoder must reproduce the
user vectors recorded at export time, so a copied or re-exported ``encoder.onnx`` that
computes something else is refused). A bundle that loads is also warm: the probe has run
through both the encoder and the index.

``Bundle`` is what the request pipeline needs; tests substitute a fake that has no ONNX.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from index.ann import ItemIndex
from index.bundle import (
    ENCODER_FILE,
    INDEX_FILE,
    POPULARITY_FILE,
    PROBE_FILE,
    BundleError,
    Manifest,
    read_manifest,
    verify_files,
)
from index.i2i import I2I_FILE, ItemToItem
from index.item_meta import ITEM_META_FILE, ItemMeta
from index.onnx_options import serving_session_options
from index.popularity import ALL_SCENES
from index.probe import verify_probe
from index.vocab import ITEMS_FILE, VOCAB_FILE, Vocabulary
from service.text_indexes import TextIndexes, load_text_indexes

log = logging.getLogger(__name__)

REQUIRED_FILES = (ENCODER_FILE, INDEX_FILE, POPULARITY_FILE, PROBE_FILE, VOCAB_FILE, ITEMS_FILE)
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class Bundle(Protocol):
    """One loaded bundle. Immutable; ``encode`` and ``search`` may be called from many threads.

    ``encode`` and ``search`` are blocking CPU work: call them off the event loop.
    """

    @property
    def version(self) -> int: ...

    @property
    def manifest(self) -> Manifest: ...

    @property
    def vocab(self) -> Vocabulary: ...

    @property
    def i2i(self) -> ItemToItem | None:
        """The co-occurrence table, when the manifest's channels carry one."""
        ...

    @property
    def text(self) -> TextIndexes | None:
        """The tokenizer and text indexes, when the manifest has a text section."""
        ...

    @property
    def meta(self) -> ItemMeta | None:
        """Each item's title, category, price and attributes, when the bundle carries them."""
        ...

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (B, T, N_FEATURES) int64 → user vectors (B, D) float32, L2-normalised."""
        ...

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels, scores), each (B, min(k, item count)), best first; labels index vocab.item_ids."""
        ...

    def search_excluding(
        self, vector: np.ndarray, k: int, excluded: frozenset[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top-k (labels, scores) for ``vector`` (1, D) not in ``excluded``, best first:
        exactly min(k, item count - excluded in the catalog) (``ItemIndex.search_excluding``)."""
        ...

    def fallback(self, scene: str) -> list[str]:
        """Most popular item ids for the scene (all scenes if the scene has no list), best first."""
        ...


class LoadedBundle:
    """A validated, warmed bundle from one directory. Thread-safe for encode/search/fallback."""

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        vocab: Vocabulary,
        session: ort.InferenceSession,
        index: ItemIndex,
        popularity: dict[str, list[str]],
        i2i: ItemToItem | None = None,
        text: TextIndexes | None = None,
        meta: ItemMeta | None = None,
    ) -> None:
        self.directory = directory
        self._manifest = manifest
        self._vocab = vocab
        self._session = session
        self._index = index
        self._popularity = popularity
        self._i2i = i2i
        self._text = text
        self._meta = meta
        self._input = manifest.encoder.inputs[0]
        self._output = manifest.encoder.outputs[0]

    @classmethod
    def load(
        cls, directory: Path, *, encoder_threads: int = 1, ann_threads: int = 1, provider: str = "cpu"
    ) -> LoadedBundle:
        """Load, validate and warm the bundle in ``directory``.

        Blocking disk and CPU work (seconds for a large index): run it off the event loop.
        Raises ``BundleError`` with the reason when anything is missing or inconsistent.
        """
        manifest = read_manifest(directory)
        missing = [name for name in REQUIRED_FILES if name not in manifest.files]
        if missing:
            raise BundleError(f"{directory}: manifest does not list {', '.join(missing)}")
        if not manifest.encoder.inputs or not manifest.encoder.outputs:
            raise BundleError(f"{directory}: manifest names no encoder input or output")
        verify_files(directory, manifest)
        try:
            vocab = Vocabulary.load(directory)
        except (OSError, KeyError, ValueError) as exc:
            raise BundleError(f"{directory}: unreadable {VOCAB_FILE} or {ITEMS_FILE}: {exc}") from exc
        session = _open_encoder(directory / ENCODER_FILE, manifest, encoder_threads, provider)
        try:
            index = ItemIndex.load(
                directory / INDEX_FILE,
                dim=manifest.embedding_dim,
                count=manifest.item_count,
                params=manifest.hnsw,
                num_threads=ann_threads,
            )
        except (OSError, RuntimeError, ValueError) as exc:  # hnswlib raises RuntimeError
            raise BundleError(f"{directory}: unreadable {INDEX_FILE}: {exc}") from exc
        if not index.count == vocab.n_items == manifest.item_count:
            raise BundleError(
                f"{directory}: item counts disagree: index {index.count}, vocabulary {vocab.n_items}, "
                f"manifest {manifest.item_count}"
            )
        i2i = _read_i2i(directory, manifest)
        text = load_text_indexes(directory, manifest)
        if manifest.encoder.query_pieces > 0 and text is None:
            raise BundleError(
                f"{directory}: the encoder reads search queries but the bundle has no tokenizer "
                "(the manifest has no text section)"
            )
        popularity = _read_popularity(directory)
        meta = _read_meta(directory, manifest, vocab)
        bundle = cls(directory, manifest, vocab, session, index, popularity, i2i, text, meta)
        bundle._check_probe()
        log.info(
            "loaded bundle %d from %s (%d items, dim %d)",
            manifest.version,
            directory,
            manifest.item_count,
            manifest.embedding_dim,
        )
        return bundle

    @property
    def version(self) -> int:
        return self._manifest.version

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def vocab(self) -> Vocabulary:
        return self._vocab

    @property
    def i2i(self) -> ItemToItem | None:
        return self._i2i

    @property
    def text(self) -> TextIndexes | None:
        return self._text

    @property
    def meta(self) -> ItemMeta | None:
        return self._meta

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        out = self._session.run([self._output], {self._input: np.ascontiguousarray(tokens, dtype=np.int64)})
        return np.asarray(out[0], dtype=np.float32)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(vectors, k)

    def search_excluding(
        self, vector: np.ndarray, k: int, excluded: frozenset[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search_excluding(vector, k, excluded)

    def fallback(self, scene: str) -> list[str]:
        return self._popularity.get(scene) or self._popularity[ALL_SCENES]

    def _check_probe(self) -> None:
        try:
            out = verify_probe(
                self.directory / PROBE_FILE,
                ("tokens", "user_vec"),
                self.encode,
                self._manifest.embedding_dim,
                ENCODER_FILE,
            )
        except ValueError as exc:
            raise BundleError(f"{self.directory}: {exc}") from exc
        self.search(out, min(10, self._index.count))  # warm the index pages


def execution_providers(provider: str) -> list[str]:
    """ONNX Runtime providers for the configured ``provider`` ("cpu" or "cuda"), best first.

    "cuda" where this onnxruntime build has no CUDA provider (the CPU package, no GPU driver)
    falls back to the CPU with a warning instead of refusing to serve.
    """
    if provider == "cpu":
        return [CPU_PROVIDER]
    if provider != "cuda":
        raise ValueError(f"unknown encoder provider {provider!r} (cpu or cuda)")
    if CUDA_PROVIDER in ort.get_available_providers():
        return [CUDA_PROVIDER, CPU_PROVIDER]
    log.warning(
        "encoder provider cuda requested but onnxruntime offers only %s: running on the CPU",
        ", ".join(ort.get_available_providers()),
    )
    return [CPU_PROVIDER]


def _open_encoder(path: Path, manifest: Manifest, threads: int, provider: str) -> ort.InferenceSession:
    options = serving_session_options(threads)
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=execution_providers(provider)
        )
    except Exception as exc:  # ONNX Runtime raises its own exception types
        raise BundleError(f"{path}: ONNX Runtime cannot load the encoder: {exc}") from exc
    inputs = [i.name for i in session.get_inputs()]
    outputs = {o.name: o.shape for o in session.get_outputs()}
    expected_input, expected_output = manifest.encoder.inputs[0], manifest.encoder.outputs[0]
    if expected_input not in inputs:
        raise BundleError(f"{path}: encoder has inputs {inputs}, manifest names {expected_input!r}")
    if expected_output not in outputs:
        raise BundleError(f"{path}: encoder has outputs {list(outputs)}, manifest names {expected_output!r}")
    dim = outputs[expected_output][-1]
    if isinstance(dim, int) and dim != manifest.embedding_dim:
        raise BundleError(f"{path}: encoder output dim {dim} != embedding_dim {manifest.embedding_dim}")
    return session


def _read_popularity(directory: Path) -> dict[str, list[str]]:
    try:
        raw = json.loads((directory / POPULARITY_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{directory}: unreadable {POPULARITY_FILE}: {exc}") from exc
    if not isinstance(raw, dict) or not all(
        isinstance(items, list) and all(isinstance(i, str) for i in items) for items in raw.values()
    ):
        raise BundleError(f"{directory}: {POPULARITY_FILE} must map scene names to lists of item ids")
    if ALL_SCENES not in raw:
        raise BundleError(f"{directory}: {POPULARITY_FILE} has no {ALL_SCENES!r} list")
    return {str(scene): list(items) for scene, items in raw.items()}


def _read_i2i(directory: Path, manifest: Manifest) -> ItemToItem | None:
    if manifest.channels is None or manifest.channels.i2i is None:
        return None
    if I2I_FILE not in manifest.files:
        raise BundleError(f"{directory}: manifest configures the i2i channel but does not list {I2I_FILE}")
    try:
        return ItemToItem.load(directory / I2I_FILE, manifest.item_count)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{directory}: unreadable {I2I_FILE}: {exc}") from exc


def _read_meta(directory: Path, manifest: Manifest, vocab: Vocabulary) -> ItemMeta | None:
    if manifest.item_meta is None:
        return None
    if ITEM_META_FILE not in manifest.files:
        raise BundleError(
            f"{directory}: manifest says the bundle has item metadata but does not list {ITEM_META_FILE}"
        )
    return ItemMeta.load(directory / ITEM_META_FILE, vocab.item_ids.tolist(), manifest.item_meta.attributes)
