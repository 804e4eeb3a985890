"""An operator's pin, kept in a file so that every server process of an instance follows it.

With several worker processes (``workers`` > 1) an admin call reaches one of them; it writes the
pin here and the others apply it at their next watcher poll. A restarted process reads it at
start-up, so a pin also survives a worker crash. The file holds ``{"version": <int>}`` while
pinned and ``{"version": null}`` after an unpin; a missing file means never pinned.

Blocking file I/O: call it off the event loop. Reads and writes are atomic (``os.replace``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from service.serving_record import write_atomically

log = logging.getLogger(__name__)

PIN_FILE_MODE = 0o600


@dataclass(frozen=True)
class SharedPin:
    version: int | None  # None: not pinned (newest wins)


class PinFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> SharedPin | None:
        """The shared pin; None when there is none to follow (no file, or unreadable: logged)."""
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("cannot read pin file %s, keeping this process's pin state: %s", self.path, exc)
            return None
        version = raw.get("version") if isinstance(raw, dict) else "invalid"
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            log.warning('pin file %s holds %r, expected {"version": int | null}; ignored', self.path, raw)
            return None
        return SharedPin(version)

    def write(self, version: int | None) -> bool:
        """Share the pin (None: unpinned); returns False (and logs) if it could not be written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps({"version": version}), PIN_FILE_MODE)
        except OSError as exc:
            log.error("cannot write pin file %s, other worker processes will not follow: %s", self.path, exc)
            return False
        return True
