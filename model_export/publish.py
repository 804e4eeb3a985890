"""Turn a training run directory into a published bundle ``<bundle_root>/<version>/``.

Export the encoder to ONNX, check torch and ONNX Runtime agree at several history lengths
(with and without search queries, for an encoder that reads them), store probe inputs with
ONNX Runtime's outputs (the service re-runs them after loading), build
the HNSW index over the item vectors, copy vocabulary, item metadata and popularity lists, then
commit the bundle atomically through ``index.bundle``. Any failure leaves no partial bundle behind.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from index import bundle
from index.ann import ItemIndex, choose_ef
from index.bundle import ChannelsSpec, HnswParams, TextSpec
from index.features import QueryText, Session, build_tokens, stack_left_padded
from index.i2i import I2I_FILE
from index.item_meta import ITEM_META_FILE, ItemMeta
from index.tokenizer import TOKENIZER_FILE, TextTokenizer
from index.vocab import Vocabulary
from model_export.evaluate import item_matrix
from model_export.export import INPUT_NAME, OUTPUT_NAME, check_agreement, export_encoder, onnx_session
from model_export.model import Encoder, NSPConfig, NSPModel
from model_export.text.build import read_text_spec, text_files
from model_export.train import CHANNELS, CHECKPOINT, METRICS, POPULARITY, query_text_for

log = logging.getLogger(__name__)

PROBE_LENGTHS = (1, 4, 40)  # history sessions: short, typical, and past the encoder's window
PROBE_TS = 1767225600
PROBE_QUERIES = ("red running shoes", "phone case 12", "organic green tea")  # 3: indexed by n % 3


def load_run(run_dir: Path) -> tuple[NSPModel, dict[str, Any], Vocabulary]:
    checkpoint = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    model = NSPModel(NSPConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint, Vocabulary.load(run_dir)


def load_run_tokenizer(run_dir: Path) -> TextTokenizer | None:
    """The run's text tokenizer (``train`` writes one for a log with queries), or None."""
    path = run_dir / TOKENIZER_FILE
    return TextTokenizer.load(path) if path.is_file() else None


def _random_items(rng: np.random.Generator, vocab: Vocabulary, max_picks: int) -> list[tuple[str, int]]:
    """1..max_picks-1 random catalog items, each with a random action (exposure..cart)."""
    picks = rng.integers(0, vocab.n_items, size=int(rng.integers(1, max_picks)))
    return [(str(vocab.item_ids[i]), int(rng.integers(1, 5))) for i in picks]


def probe_sequences(
    vocab: Vocabulary, max_sessions: int, max_items: int, seed: int = 0, query_text: QueryText | None = None
) -> list[np.ndarray]:
    """Deterministic synthetic histories of several lengths, one holding an unknown item id.

    With ``query_text``, each history comes twice: without queries, then with a search query on
    every other session and on the request (the query columns exercised at every length).
    """
    rng = np.random.default_rng(seed)
    scenes = vocab.scenes or ["default"]
    tokens = functools.partial(
        build_tokens, vocab=vocab, max_sessions=max_sessions, max_items=max_items, query_text=query_text
    )
    plain, searched = [], []
    for n, n_sessions in enumerate(PROBE_LENGTHS):
        sessions = []
        for j in range(n_sessions):
            items = _random_items(rng, vocab, 6)
            if j == 0:
                items.append(("__not_in_catalog__", 1))
            sessions.append(Session(f"probe{j}", PROBE_TS + 3600 * j, scenes[j % len(scenes)], tuple(items)))
        query_ts = PROBE_TS + 3600 * n_sessions
        plain.append(tokens(sessions, scenes[0], query_ts))
        if query_text is not None:
            with_queries = [
                s._replace(query=PROBE_QUERIES[j % 3]) if j % 2 else s for j, s in enumerate(sessions)
            ]
            searched.append(tokens(with_queries, scenes[0], query_ts, query=PROBE_QUERIES[n % 3]))
    return plain + searched


def query_sample(
    model: NSPModel,
    vocab: Vocabulary,
    max_sessions: int,
    max_items: int,
    n: int = 256,
    seed: int = 1,
    query_text: QueryText | None = None,
) -> np.ndarray:
    """(n, D) user vectors of random histories (1-10 sessions of random catalog items): the
    queries ``ef_search`` is tuned on (with ``query_text``, every other one a search request)."""
    rng = np.random.default_rng(seed)
    scenes = vocab.scenes or ["default"]
    tokens = functools.partial(
        build_tokens, vocab=vocab, max_sessions=max_sessions, max_items=max_items, query_text=query_text
    )
    sequences: list[np.ndarray] = []
    for _ in range(n):
        sessions = []
        for j in range(int(rng.integers(1, 11))):
            items = tuple(_random_items(rng, vocab, 8))
            sessions.append(Session(f"q{j}", PROBE_TS + 3600 * j, scenes[j % len(scenes)], items))
        scene = scenes[int(rng.integers(0, len(scenes)))]
        query = PROBE_QUERIES[len(sequences) % 3] if len(sequences) % 2 else ""
        sequences.append(tokens(sessions, scene, PROBE_TS + 86400, query=query))
    with torch.no_grad():
        vectors = Encoder(model.eval())(torch.from_numpy(stack_left_padded(sequences)))
    return vectors.numpy().astype(np.float32)


def _flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    flat = {}
    for split, values in metrics.items():
        if isinstance(values, dict):
            flat.update({f"{split}.{name}": float(v) for name, v in values.items()})
    return flat


def _ship_text(run_dir: Path, stage: Path, fields: dict[str, Any], encoder_reads_queries: bool) -> None:
    """The run's text channels (``text.json`` and their files) go into the bundle; an encoder
    that reads queries needs at least the tokenizer (with a default text section)."""
    text = read_text_spec(run_dir)
    if text is None and encoder_reads_queries:
        text = TextSpec()
    if text is None:
        return
    for name in text_files(text):
        shutil.copyfile(run_dir / name, stage / name)
    fields["text"] = text.model_dump()


def _ship_item_meta(run_dir: Path, stage: Path, vocab: Vocabulary, fields: dict[str, Any]) -> None:
    """The run's item metadata goes into the bundle, checked against its vocabulary as the
    service will check it; a run from before item metadata publishes a bundle without it."""
    path = run_dir / ITEM_META_FILE
    if not path.is_file():
        log.warning("%s has no %s: the bundle carries no item metadata", run_dir, ITEM_META_FILE)
        return
    meta = ItemMeta.load(path, vocab.item_ids.tolist())
    shutil.copyfile(path, stage / ITEM_META_FILE)
    fields["item_meta"] = {"attributes": meta.attribute_names}


def _run_channels(run_dir: Path) -> ChannelsSpec | None:
    """The run's fitted channel settings and fusion (``train`` writes them); None for a run from
    before the merge, which publishes an nsp-only bundle."""
    path = run_dir / CHANNELS
    if not path.is_file():
        return None
    channels = ChannelsSpec.model_validate_json(path.read_text())
    if channels.i2i is not None and not (run_dir / I2I_FILE).is_file():
        raise FileNotFoundError(f"{run_dir}: {CHANNELS} configures the i2i channel but {I2I_FILE} is missing")
    return channels


class QualityGateError(Exception):
    """The run's validation quality is below the floor or too far below the serving bundle's."""


@dataclass(frozen=True)
class QualityGate:
    """Publishing refuses a run whose validation ``metric`` is below ``floor`` or more than
    ``max_drop`` (relative) below the latest published bundle's; ``force`` overrides both."""

    metric: str = "val.hr@100"
    floor: float = 0.0
    max_drop: float = 0.05
    force: bool = False

    def check(self, metrics: dict[str, float], bundle_root: Path) -> None:
        value = metrics.get(self.metric)
        problems = []
        if value is None:
            problems.append(f"the run has no {self.metric}")
        else:
            if value < self.floor:
                problems.append(f"{self.metric} {value:.4f} is below the floor {self.floor:.4f}")
            latest = bundle.latest_version(bundle_root)
            if latest is not None:
                previous = bundle.read_manifest(bundle_root / str(latest)).metrics.get(self.metric)
                if previous is not None and value < previous * (1 - self.max_drop):
                    problems.append(
                        f"{self.metric} {value:.4f} is more than {self.max_drop:.0%} below "
                        f"bundle {latest}'s {previous:.4f}"
                    )
        if not problems:
            return
        if self.force:
            log.warning("quality gate overridden (--force): %s", "; ".join(problems))
            return
        raise QualityGateError("; ".join(problems) + " (publish with --force to override)")


def publish(
    run_dir: Path,
    bundle_root: Path,
    hnsw: HnswParams | None = None,
    version: int | None = None,
    build_threads: int = 2,
    gate: QualityGate | None = None,
    recall_target: float | None = 0.95,
    tune_k: int = 200,
) -> Path:
    """Publish ``run_dir`` as the next bundle version (or ``version``); returns its directory.

    With ``recall_target``, ``ef_search`` is the smallest that reaches that recall@``tune_k``
    against exact search on ``query_sample`` queries (recorded in the manifest's ``hnsw``).
    Raises QualityGateError (nothing written) when the run fails the quality gate.
    """
    hnsw = hnsw or HnswParams()
    run_metrics = _flat_metrics(json.loads((run_dir / METRICS).read_text()))
    (gate or QualityGate()).check(run_metrics, bundle_root)
    model, checkpoint, vocab = load_run(run_dir)
    train_config = checkpoint["train_config"]
    if train_config.get("objective", "nsp") != "nsp":
        objective = train_config["objective"]
        raise ValueError(f"{run_dir} trained a {objective!r} baseline; only NSP runs are served")
    max_sessions, max_items = int(train_config["max_sessions"]), int(train_config["max_items"])
    tokenizer = load_run_tokenizer(run_dir)
    if model.config.query_pieces > 0 and tokenizer is None:
        raise FileNotFoundError(f"{run_dir}: the encoder reads queries but the run has no {TOKENIZER_FILE}")
    query_text = query_text_for(model, tokenizer)
    sequences = probe_sequences(vocab, max_sessions, max_items, query_text=query_text)
    parent = bundle.latest_version(bundle_root)
    with bundle.staging(bundle_root) as stage:
        encoder_path = stage / bundle.ENCODER_FILE
        export_encoder(model, encoder_path, sequences[1][None])
        check_agreement(model, encoder_path, sequences)

        probe_tokens = stack_left_padded(sequences)
        (probe_vec,) = onnx_session(encoder_path).run([OUTPUT_NAME], {INPUT_NAME: probe_tokens})
        with (stage / bundle.PROBE_FILE).open("wb") as f:
            np.savez(f, tokens=probe_tokens, user_vec=probe_vec)

        items = item_matrix(model, vocab)
        index = ItemIndex.build(items, hnsw, num_threads=build_threads)
        if recall_target is not None:
            queries = query_sample(model, vocab, max_sessions, max_items, query_text=query_text)
            ef, recall = choose_ef(index, items, queries, tune_k, recall_target)
            k = min(tune_k, vocab.n_items)
            tuned = {"ef_search": ef, "tuned_k": k, "recall_target": recall_target, "measured_recall": recall}
            hnsw = hnsw.model_copy(update=tuned)
            log.info("ef_search %d: recall@%d %.4f vs exact (target %.2f)", ef, k, recall, recall_target)
        index.save(stage / bundle.INDEX_FILE)
        vocab.save(stage)
        shutil.copyfile(run_dir / POPULARITY, stage / bundle.POPULARITY_FILE)
        channels = _run_channels(run_dir)
        if channels is not None and channels.i2i is not None:
            shutil.copyfile(run_dir / I2I_FILE, stage / I2I_FILE)

        data = checkpoint["data"]
        fields = {
            "parent_version": parent,
            "training": {
                "kind": data.get("kind", "pretrain"),
                "round": data.get("round"),
                "bucket": data.get("bucket"),
                "n_buckets": data.get("n_buckets"),
                "data_start_ts": data.get("window_start_ts", data["data_start_ts"]),
                "data_end_ts": data["val_start_ts"],
            },
            "model_config": checkpoint["model_config"],
            "embedding_dim": model.config.dim,
            "encoder": {
                "inputs": [INPUT_NAME],
                "outputs": [OUTPUT_NAME],
                "max_sessions": max_sessions,
                "max_items_per_session": max_items,
                "query_pieces": model.config.query_pieces,
            },
            "hnsw": hnsw.model_dump(),
            "item_count": vocab.n_items,
            "metrics": run_metrics,
            "channels": channels.model_dump() if channels is not None else None,
        }
        _ship_text(run_dir, stage, fields, query_text is not None)
        _ship_item_meta(run_dir, stage, vocab, fields)
        return bundle.commit(bundle_root, stage, fields, version)
