"""Stochastic partial incremental training (PIT): small rounds that follow today's shoppers.

Users are hashed into ``n_buckets`` buckets. A round picks one bucket, continues training from
the last published round's checkpoint on that bucket's most recent ``window_days`` (older
sessions are context only), evaluates on the validation day, passes the quality gate and
publishes the next bundle with its parent, round, bucket and data window in the manifest.

Buckets come from a shuffle bag: each cycle is a fresh random permutation of all buckets, so
the order is random but no bucket waits more than ``2 · n_buckets - 1`` rounds.

The catalog may have grown since the last round: the vocabulary is extended (known items keep
their rows) and a new item's embedding starts as the mean of its category's items (or of all
items when its category is new), so it is retrievable before it has any interactions.

State lives in one directory: ``state.json`` (round counter, bag, the run to continue from)
and ``runs/<round>/`` (run directories, the same layout as ``nsprecall train`` writes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from index import bundle
from index.vocab import ITEM_OFFSET, Vocabulary
from model_export.catalog_meta import catalog_meta
from model_export.data import Dataset, load_dataset, read_catalog
from model_export.gram.targets import product_attributes
from model_export.model import NSPModel
from model_export.publish import QualityGate, QualityGateError, load_run, load_run_tokenizer, publish
from model_export.text.corpus import item_texts
from model_export.train import NoTrainingData, TrainConfig, train

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
RUNS_DIR = "runs"


def user_bucket(user_id: str, n_buckets: int) -> int:
    """Stable across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.blake2b(user_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_buckets


def bucket_of_users(users: list[str], n_buckets: int) -> np.ndarray:
    return np.fromiter((user_bucket(u, n_buckets) for u in users), dtype=np.int64, count=len(users))


@dataclass
class RoundConfig:
    n_buckets: int = 10
    window_days: int = 10
    epochs: int = 1
    val_days: int = 1  # the newest days, held out for the quality gate
    lr: float = 1e-3  # continuing from a trained model: smaller steps than pretraining
    keep: int = 5  # bundles (and round runs) retained
    seed: int = 0
    threads: int = 2


@dataclass
class RoundState:
    """What survives between rounds (``state.json``)."""

    n_buckets: int
    seed: int
    run: str  # run directory (relative to the state directory) the next round continues from
    round: int = 0  # rounds attempted so far
    cycle: int = 0  # shuffle-bag cycles started
    bag: list[int] = field(default_factory=list)  # buckets left in the current cycle
    history: list[dict[str, Any]] = field(default_factory=list)  # one line per round, newest last

    def next_bucket(self) -> int:
        if not self.bag:
            rng = np.random.default_rng([self.seed, self.cycle])
            self.bag = rng.permutation(self.n_buckets).tolist()
            self.cycle += 1
        return int(self.bag.pop(0))

    @classmethod
    def load(cls, directory: Path) -> RoundState:
        return cls(**json.loads((directory / STATE_FILE).read_text()))

    def save(self, directory: Path) -> None:
        """Atomically (temp file + rename), so a crash never leaves half a state."""
        temp = directory / f".{STATE_FILE}.{os.getpid()}"
        temp.write_text(json.dumps(dataclasses.asdict(self), indent=2))
        os.replace(temp, directory / STATE_FILE)


def init_state(directory: Path, pretrain_run: Path, config: RoundConfig) -> RoundState:
    """Start a PIT state from a pretraining run (copied in as ``runs/0``)."""
    if (directory / STATE_FILE).exists():
        raise FileExistsError(f"{directory} already holds PIT state")
    target = directory / RUNS_DIR / "0"
    shutil.copytree(pretrain_run, target)
    state = RoundState(n_buckets=config.n_buckets, seed=config.seed, run=str(target.relative_to(directory)))
    state.save(directory)
    return state


@torch.no_grad()
def grow_model(model: NSPModel, old: Vocabulary, new: Vocabulary) -> NSPModel:
    """``model`` (trained on ``old``) resized for ``new`` (``old`` extended): known rows copied,
    a new item row = mean of the known items of its category (all known items if none), new
    category and scene rows = the mean of the known ones."""
    config = dataclasses.replace(
        model.config,
        n_items=new.n_items,
        n_category_tokens=new.n_category_tokens,
        n_scene_tokens=new.n_scene_tokens,
    )
    grown = NSPModel(config)
    state = model.state_dict()
    targets = grown.state_dict()
    for name, value in state.items():
        target = targets[name]
        if target.shape == value.shape:
            target.copy_(value)
            continue
        rows = value.shape[0]
        target[:rows] = value
        if name == "item.weight":
            known = value[ITEM_OFFSET:]
            overall = known.mean(dim=0)
            for index in range(old.n_items, new.n_items):
                same = np.flatnonzero(old.item_category == new.item_category[index])
                target[index + ITEM_OFFSET] = known[same].mean(dim=0) if len(same) else overall
        else:  # category / scene tables: token 0 (unknown) and the known ones, then the mean
            target[rows:] = value[1:].mean(dim=0) if rows > 1 else value.mean(dim=0)
    grown.load_state_dict(targets)
    return grown


@dataclass
class RoundResult:
    round: int
    bucket: int
    version: int | None  # None: the quality gate refused it
    metrics: dict[str, float]
    seconds: float
    new_items: int
    refused: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def bucket_dataset(dataset: Dataset, bucket: int, n_buckets: int) -> Dataset:
    """The same splits with training restricted to one bucket's users."""
    train = {u: s for u, s in dataset.train.items() if user_bucket(u, n_buckets) == bucket}
    return dataclasses.replace(dataset, train=train)


def run_round(
    events: Path,
    catalog: Path,
    state_dir: Path,
    bundle_root: Path,
    config: RoundConfig,
    gate: QualityGate | None = None,
    progress: bool = False,
) -> RoundResult:
    """One PIT round: continue from the state's run on one bucket, then gate and publish."""
    started = time.monotonic()
    state = RoundState.load(state_dir)
    number = state.round + 1
    bucket = state.next_bucket()
    model, checkpoint, old_vocab = load_run(state_dir / state.run)
    dataset = load_dataset(events, catalog, val_days=config.val_days, test_days=0, base_vocab=old_vocab)
    model = grow_model(model, old_vocab, dataset.vocab)
    previous = checkpoint["train_config"]
    train_config = TrainConfig.from_dict(
        {
            **previous,
            "epochs": config.epochs,
            "lr": config.lr,
            "seed": config.seed + number,
            "threads": config.threads,
            "window_days": config.window_days,
            "baselines": False,
        }
    )
    run_dir = state_dir / RUNS_DIR / str(number)
    shutil.rmtree(run_dir, ignore_errors=True)  # a crashed earlier attempt of this round
    info = {"kind": "incremental", "round": number, "bucket": bucket, "n_buckets": config.n_buckets}
    # The start run's tokenizer (the encoder's query pieces are ids of it); with it the text
    # channels are rebuilt over the round's catalog, so new items are searchable.
    tokenizer = load_run_tokenizer(state_dir / state.run)
    texts, products = None, None
    frame = read_catalog(catalog)  # again: the items' metadata over the extended vocabulary
    if tokenizer is not None:
        texts = item_texts(frame, dataset.vocab)
        products = product_attributes(frame, catalog.parent, dataset.vocab)
    try:
        summary = train(
            bucket_dataset(dataset, bucket, config.n_buckets),
            train_config,
            run_dir,
            progress,
            model,
            info,
            channel_data=dataset,
            tokenizer=tokenizer,
            texts=texts,
            products=products,
            item_meta=catalog_meta(frame, dataset.vocab),
        )
    except NoTrainingData as exc:
        log.warning("round %d: bucket %d has no training data in the window: %s", number, bucket, exc)
        summary = {"val": {}}
    metrics = {f"val.{k}": float(v) for k, v in summary["val"].items()}
    version, refused = None, None
    try:
        if not summary["val"]:
            raise QualityGateError("nothing was trained")
        version = publish(run_dir, bundle_root, gate=gate).name
    except QualityGateError as exc:
        refused = str(exc)
        log.warning("round %d (bucket %d) not published: %s", number, bucket, exc)
        shutil.rmtree(run_dir, ignore_errors=True)
    result = RoundResult(
        round=number,
        bucket=bucket,
        version=None if version is None else int(version),
        metrics=metrics,
        seconds=time.monotonic() - started,
        new_items=dataset.vocab.n_items - old_vocab.n_items,
        refused=refused,
    )
    state.round = number
    if version is not None:
        state.run = str(run_dir.relative_to(state_dir))
    state.history = [*state.history, result.to_dict()][-100:]
    state.save(state_dir)
    bundle.prune(bundle_root, config.keep)
    _prune_runs(state_dir, state, config.keep)
    return result


def _prune_runs(state_dir: Path, state: RoundState, keep: int) -> None:
    runs = [p for p in (state_dir / RUNS_DIR).iterdir() if p.name.isdigit()]
    runs.sort(key=lambda p: int(p.name))
    current = state_dir / state.run
    for path in runs[:-keep]:
        if path != current:
            shutil.rmtree(path, ignore_errors=True)
