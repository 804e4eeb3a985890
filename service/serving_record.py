"""This instance's serving record: the bundle version it serves, for the training side's pruning.

``<bundle_root>/.serving/<instance>.json`` holds
``{"version": <int>, "pinned": <bool>, "updated": <unix seconds>}``. The registry rewrites it at
every swap and pin change and on every watcher poll (a heartbeat), and removes it at a clean
shutdown; pruning (``index.bundle.prune``) never deletes a version named by a record updated
recently, and treats older records as instances that died without removing theirs.

Writes are atomic for readers (a temporary file in the same directory, then ``os.replace``)
and best effort: a failure is logged and reported to the caller, never raised, because a
read-only or full bundle volume must not stop the service from serving.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from index.bundle import SERVING_DIR

log = logging.getLogger(__name__)

RECORD_MODE = 0o644  # pruning may run as another user than the service


class ServingRecord:
    """Writes one instance's record. Blocking file I/O: call it off the event loop.

    Not thread-safe; the registry calls it from one task at a time.
    """

    def __init__(self, bundle_root: Path, instance: str, clock: Callable[[], float] = time.time) -> None:
        self.directory = bundle_root / SERVING_DIR
        self.path = self.directory / f"{instance}.json"
        self._clock = clock
        self._failing = False

    def write(self, version: int, pinned: bool) -> bool:
        """Replace the record; returns False (and logs) if it could not be written."""
        body = json.dumps({"version": version, "pinned": pinned, "updated": self._clock()})
        try:
            self.directory.mkdir(exist_ok=True)
            write_atomically(self.path, body, RECORD_MODE)
        except OSError as exc:
            self._failed(exc)
            return False
        if self._failing:
            log.info("serving record %s written again", self.path)
            self._failing = False
        return True

    def remove(self) -> None:
        """Withdraw the record (this instance stops serving); best effort like ``write``."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove serving record %s: %s", self.path, exc)

    def _failed(self, exc: OSError) -> None:
        # Heartbeats repeat every poll: warn when writing starts failing, not on every poll.
        level = logging.DEBUG if self._failing else logging.WARNING
        log.log(
            level, "cannot write serving record %s (pruning cannot see this instance): %s", self.path, exc
        )
        self._failing = True


def write_atomically(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old or the new file, never half.

    The temporary file is dot-prefixed and not ``*.json``, in the same directory (readers of
    the directory look at ``*.json`` only). Raises ``OSError``; leaves no temporary behind.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
