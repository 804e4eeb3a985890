"""The bundle format: the one contract shared by the offline and online sides.

A bundle is ``<root>/<version>/`` (``version`` a positive integer) holding the encoder, the
HNSW index, the vocabulary (id map + side info), the items' metadata (``index.item_meta``,
optional), per-scene popularity fallback lists, probe inputs with expected outputs, and
``manifest.json``. The manifest is written last and records
the sha256 of every other file, so a directory without a valid manifest is not a bundle.

Publishing writes into a hidden staging directory, fsyncs every file, writes the manifest,
then renames the directory into place; readers never see a half-written bundle, and a
published bundle is never modified. A publisher killed before the rename leaves its staging
directory behind: the next publish (and ``prune``) removes it once it is provably abandoned
(``remove_stale_staging``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from index.fusion import SEEN, UNSEEN, FusionParams, fusion_key
from index.history import HistoryParams
from index.i2i import I2IParams

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ENCODER_FILE = "encoder.onnx"
INDEX_FILE = "items.hnsw"
POPULARITY_FILE = "popularity.json"
PROBE_FILE = "probe.npz"
STAGING_PREFIX = ".staging-"
SERVING_DIR = ".serving"  # <root>/.serving/<instance>.json: what each live service instance serves
SERVING_RECORD_MAX_AGE_S = 600.0
STALE_STAGING_S = 6 * 3600.0


class BundleError(Exception):
    """A bundle directory is missing, incomplete, corrupt or of an unknown schema."""


class TrainingRound(BaseModel):
    kind: Literal["pretrain", "incremental"] = "pretrain"
    round: int | None = None  # incremental round number (1, 2, …)
    bucket: int | None = None
    n_buckets: int | None = None
    data_start_ts: int | None = None
    data_end_ts: int | None = None


class HnswParams(BaseModel):
    space: Literal["ip", "cosine", "l2"] = "ip"
    M: int = 16
    ef_construction: int = 200
    ef_search: int = 128  # hnswlib does not store it in the index file
    # How ef_search was chosen at publish time (None: set by hand): the recall@k it measured
    # against exact search on probe queries, for that k and target.
    tuned_k: int | None = None
    recall_target: float | None = None
    measured_recall: float | None = None


class EncoderSpec(BaseModel):
    inputs: list[str]
    outputs: list[str]
    max_sessions: int
    max_items_per_session: int
    # Query piece columns after the N_FEATURES ones (``index.features``); > 0: the encoder reads
    # the request's search text, tokenized with the bundle's tokenizer (so ``text`` is set).
    query_pieces: int = Field(default=0, ge=0)


class ChannelsSpec(BaseModel):
    """The channels' settings and the merge, fitted on the validation split at train time.

    ``fusion`` holds one merge per exclusion policy (``index.fusion.SEEN`` / ``UNSEEN``): with
    seen items excluded the history channel is empty, so the weights differ; a bundle fitted on
    search sessions adds one per policy for search requests (``SEARCH_SEEN`` / ``SEARCH_UNSEEN``),
    where the text channels answer too. ``i2i`` is None
    when the bundle has no co-occurrence table. ``validation`` records what the fit measured.
    """

    history: HistoryParams = HistoryParams()
    i2i: I2IParams | None = None
    # Candidates each channel hands to the merge: max(k, min_depth). A fixed floor keeps the
    # merge's inputs (ranks, normalised scores) the same for every k up to it, so a k = 10
    # answer is the prefix of the k = 100 one.
    min_depth: int = Field(default=100, ge=1, le=1000)
    fusion: dict[str, FusionParams] = Field(
        default_factory=lambda: {SEEN: FusionParams(), UNSEEN: FusionParams()}
    )
    validation: dict[str, float] = {}

    def fusion_for(self, exclude_seen: bool, search: bool = False) -> FusionParams:
        """The merge a request with this exclusion policy and scenario uses: a search request
        without a fitted search fusion gets the recommendation one of its policy, and either
        gets the defaults where none was fitted."""
        if search and (fitted := self.fusion.get(fusion_key(exclude_seen, search=True))) is not None:
            return fitted
        return self.fusion.get(fusion_key(exclude_seen, search=False), FusionParams())


class Bm25Params(BaseModel):
    """BM25 over the items' title + attributes, scored by the ``bm25s`` library (``index.bm25``)."""

    k1: float = Field(default=1.5, gt=0)
    b: float = Field(default=0.75, ge=0, le=1)
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"


class DenseSpec(BaseModel):
    """The dense text channel: an ONNX query encoder and an HNSW index of item text vectors."""

    dim: int = Field(gt=0)
    inputs: list[str]
    outputs: list[str]
    hnsw: HnswParams = HnswParams()


class SidSpec(BaseModel):
    """The ``sid`` channel (CQ-SID): a generator from query (+ the user's recent SIDs) to
    semantic cluster IDs, served by trie-constrained beam search and an SID → items table
    (``index.sid_layout``, ``index.sid_table``, ``index.sid_trie``, ``index.sid_generator``)."""

    sizes: tuple[int, int, int, int]  # values per level: (K1, K2, K3, group suffixes G_max)
    categories: int = Field(ge=0)  # level-1 codes reserved for categories (0: not forced)
    t_max: int = Field(gt=0)  # items per SID the cluster split aims at
    max_text_tokens: int = Field(gt=0)  # query pieces the generator reads
    user_sids: int = Field(ge=0)  # the user's recent clicked items' SIDs in the context
    dim: int = Field(gt=0)  # the generator's hidden size (the encoder's memory width)
    # Beam sizes a request chooses from: the smallest whose SIDs hold about ``depth`` items.
    beams: list[int] = Field(default=[20, 50, 100], min_length=1)
    items_per_sid: float = Field(gt=0)  # mean items per SID of the published table
    item_order: str = "engaged in the training period (click or deeper), most first; then label"


class GramSpec(BaseModel):
    """The ``gram`` channel (GRAM): a generator from a query to shared text codes (attribute-value
    combinations), served by trie-constrained beam search over the published codes, a code →
    items index and a query-product score (``index.gram_vocab``, ``index.gram_trie``,
    ``index.gram_index``, ``index.gram_score``, ``index.gram_generator``)."""

    max_text_tokens: int = Field(gt=0)  # query pieces the generator reads
    dim: int = Field(gt=0)  # the generator's hidden size (the encoder's memory width)
    vocab_size: int = Field(gt=3)  # code tokens, PAD/BOS/EOS included
    beam: int = Field(default=10, gt=0)  # beam width a request uses (bounded by the service's setting)
    max_codes: int = Field(default=10, gt=0)  # codes a request looks up (bounded likewise)
    # ``index.gram_score.ScoreWeights`` per granularity (coarse, medium, fine): divergence,
    # query_logprob and bias, three numbers each.
    weights: dict[str, list[float]]
    codes: int = Field(ge=0)  # codes in the index
    items_per_code: float = Field(ge=0)


class TextSpec(BaseModel):
    """The search side of a bundle: the shared tokenizer (``index.tokenizer``) and the text
    channels built with it. A manifest without it has no text channels; its search requests
    are answered by the other channels."""

    max_query_tokens: int = Field(default=16, ge=1, le=512)  # query pieces the text models read
    bm25: Bm25Params | None = None
    dense: DenseSpec | None = None
    sid: SidSpec | None = None
    gram: GramSpec | None = None


class ItemMetaSpec(BaseModel):
    """The bundle carries ``index.item_meta.ITEM_META_FILE``: each item's title, category,
    price and these catalog attributes (in this order), for people reading answers."""

    attributes: list[str] = []


class Manifest(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    schema_version: int = SCHEMA_VERSION
    version: int = Field(gt=0)
    parent_version: int | None = None
    created_at: str
    training: TrainingRound
    model_config_: dict[str, Any] = Field(alias="model_config")
    embedding_dim: int = Field(gt=0)
    encoder: EncoderSpec
    hnsw: HnswParams
    item_count: int = Field(ge=0)
    files: dict[str, str]  # file name → sha256 hex
    metrics: dict[str, float] = {}
    # None: a bundle from before the multi-channel merge; it serves the nsp channel alone.
    channels: ChannelsSpec | None = None
    # None: a bundle without text channels (from before search, or trained on a log without queries).
    text: TextSpec | None = None
    # None: a bundle without item metadata (from before it, or published from a run without it).
    item_meta: ItemMetaSpec | None = None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_versions(root: Path) -> list[int]:
    """Versions with a readable manifest, ascending; staging and stray directories skipped."""
    if not root.is_dir():
        return []
    versions = []
    for child in root.iterdir():
        if child.name.isdigit() and int(child.name) > 0 and (child / MANIFEST).is_file():
            versions.append(int(child.name))
    return sorted(versions)


def latest_version(root: Path) -> int | None:
    versions = list_versions(root)
    return versions[-1] if versions else None


def read_manifest(directory: Path) -> Manifest:
    """Parse and check the manifest; raises BundleError with the reason (one line)."""
    try:
        raw = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{directory}: unreadable {MANIFEST}: {exc}") from exc
    if not isinstance(raw, dict):
        raise BundleError(f"{directory}: {MANIFEST} is not a JSON object")
    if (schema := raw.get("schema_version")) != SCHEMA_VERSION:
        raise BundleError(f"{directory}: {MANIFEST} has schema {schema!r}, this build reads {SCHEMA_VERSION}")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BundleError(f"{directory}: invalid {MANIFEST}: {problems}") from exc
    if directory.name != str(manifest.version):
        raise BundleError(f"{directory}: manifest says version {manifest.version}")
    return manifest


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Check every file listed in the manifest exists and matches its sha256."""
    for name, expected in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{directory}: missing file {name}")
        if sha256_file(path) != expected:
            raise BundleError(f"{directory}: checksum mismatch for {name}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def now_timestamp() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


@contextmanager
def staging(root: Path) -> Iterator[Path]:
    """A private staging directory under ``root``; removed if the block raises.

    The name, ``.staging-<namespace>-<pid>-<time>``, says which process made it, so that a
    later publisher can tell a killed run's leftover from a live one; leftovers are removed
    first (``remove_stale_staging``).
    """
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(root)
    stamp = f"{_PROCESS_NAMESPACE}-{os.getpid()}-{dt.datetime.now().timestamp():.6f}"
    path = root / f"{STAGING_PREFIX}{stamp}"
    path.mkdir()
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def commit(root: Path, stage: Path, manifest_fields: dict[str, Any], version: int | None = None) -> Path:
    """Checksum and fsync the staged files, write the manifest last, rename into place.

    ``version`` defaults to latest + 1. Raises BundleError (and removes the staging
    directory) if that version already exists: published bundles are never overwritten.
    """
    version = version if version is not None else (latest_version(root) or 0) + 1
    files = {}
    for path in sorted(stage.iterdir()):
        if path.name == MANIFEST:
            continue
        with path.open("rb") as f:
            os.fsync(f.fileno())
        files[path.name] = sha256_file(path)
    manifest = Manifest.model_validate(
        {**manifest_fields, "version": version, "files": files, "created_at": now_iso()}
    )
    manifest_path = stage / MANIFEST
    with manifest_path.open("w") as f:
        f.write(manifest.model_dump_json(by_alias=True, indent=2))
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(stage)
    target = root / str(version)
    if target.exists():
        shutil.rmtree(stage, ignore_errors=True)
        raise BundleError(f"version {version} already exists under {root}")
    os.rename(stage, target)
    _fsync_dir(root)
    log.info("published bundle %s at %s", version, target)
    return target


def serving_versions(
    root: Path, max_age_s: float = SERVING_RECORD_MAX_AGE_S, now: float | None = None
) -> set[int]:
    """Versions named by a serving record (``<root>/.serving/*.json``, ``{"version": int,
    "updated": unix seconds, …}``) refreshed within ``max_age_s``. Service instances write and
    refresh their record; an unreadable record is ignored."""
    now = now_timestamp() if now is None else now
    versions = set()
    directory = root / SERVING_DIR
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            record = json.loads(path.read_text())
            version, updated = int(record["version"]), float(record["updated"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring serving record %s: %s", path, exc)
            continue
        if now - updated <= max_age_s:
            versions.add(version)
    return versions


def prune(root: Path, keep: int, protect: set[int] | None = None) -> list[int]:
    """Delete all but the newest ``keep`` versions, never one in ``protect`` or in a fresh
    serving record; returns the versions deleted. The manifest goes first, so a reader never
    sees a half-deleted bundle as complete."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    protected = set(protect or ()) | serving_versions(root)
    doomed = [v for v in list_versions(root)[:-keep] if v not in protected]
    for version in doomed:
        directory = root / str(version)
        (directory / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
        log.info("pruned bundle %d", version)
    remove_stale_staging(root)
    return doomed


def _process_namespace() -> str:
    """This kernel boot and pid namespace: a pid names the same process only within both.

    Containers on one host share the kernel but not pids, and two hosts share neither, so a
    staging directory's pid is only checked by a process that prints the same string here.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:16]
        pid_namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return UNKNOWN_NAMESPACE
    return boot + pid_namespace.removeprefix("pid:[").removesuffix("]")


UNKNOWN_NAMESPACE = "unknown"  # no /proc: pids are never checked, only idle time
_PROCESS_NAMESPACE = _process_namespace()


def _process_gone(pid: int) -> bool:
    """True only when no process ``pid`` runs in this pid namespace (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's: alive
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _last_activity(directory: Path) -> float:
    """The newest mtime of the directory and the files in it (a live publisher writing one large
    file changes that file's mtime, not the directory's)."""
    times = [directory.stat().st_mtime]
    for child in directory.iterdir():
        with suppress(OSError):
            times.append(child.stat().st_mtime)
    return max(times)


def remove_stale_staging(root: Path, max_idle_s: float = STALE_STAGING_S) -> list[str]:
    """Delete staging directories that no live publisher is writing; returns their names.

    One is abandoned when the process that made it is gone (checked only for directories made
    in this kernel boot and pid namespace, see ``staging``), or when nothing in it changed for
    ``max_idle_s``: the only test possible for a publisher on another host or in another
    container, so ``max_idle_s`` must exceed the longest pause between two writes of a publish.
    A live publisher's directory is never deleted by this process's checks.
    """
    removed = []
    for path in sorted(root.glob(f"{STAGING_PREFIX}*")) if root.is_dir() else []:
        namespace, _, rest = path.name.removeprefix(STAGING_PREFIX).partition("-")
        pid = rest.partition("-")[0]
        try:
            if namespace == _PROCESS_NAMESPACE != UNKNOWN_NAMESPACE and pid.isdigit():
                if not _process_gone(int(pid)):
                    continue  # however long it has been quiet: its publisher is still running
                why = f"its publisher (pid {pid}) is gone"
            elif (idle := time.time() - _last_activity(path)) > max_idle_s:
                why = f"untouched for {idle / 3600:.1f} h"
            else:
                continue
        except OSError:  # removed meanwhile (its publisher committed or failed)
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
        log.warning(
            "removed staging directory %s left by a publisher that did not finish: %s", path.name, why
        )
    return removed
