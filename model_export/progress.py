"""Progress bars for the offline commands: drawn on a terminal, off when output goes to a log."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress_bar(
    iterable: Iterable[T], enabled: bool = True, stream: TextIO | None = None, **options: Any
) -> tqdm[T]:
    """``tqdm`` over ``iterable`` on ``stream`` (default: stderr), disabled unless ``enabled``
    and ``stream`` is a terminal: in a file or a pod log every redraw of the bar would be one
    more line, and the commands' own log lines (one per epoch in training) say the progress."""
    stream = sys.stderr if stream is None else stream
    return tqdm(iterable, file=stream, disable=not enabled or not stream.isatty(), **options)
