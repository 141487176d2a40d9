"""Progress reporting: ``progress=True`` draws a bar on stderr for large loads and saves."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import numpy as np

ProgressFn = Callable[[int, int], Any]

# Smaller jobs finish before a bar would be worth drawing.
BAR_MIN_BYTES = 256 << 20


class Bar:
    """A one-line bar on stderr: bytes done of the total, percentage, rate."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.start = time.perf_counter()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if total < BAR_MIN_BYTES:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        percent = 100 * done // max(total, 1)
        filled = percent // 5
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (20 - filled)}] {percent:3d}% "
            f"{done / 1e6:,.0f}/{total / 1e6:,.0f} MB {done / elapsed / 1e9:.1f} GB/s"
        )
        self.shown = True
        if done >= total:
            self.end()
        sys.stderr.flush()

    def end(self) -> None:
        """Ends the bar's line, once: when the job is done, or stopped (Ctrl-C)."""
        if self.shown:
            sys.stderr.write("\n")
            self.shown = False


@contextmanager
def reporting(progress: Any, label: str) -> Iterator[Optional[ProgressFn]]:
    """The callable a ``progress=`` argument stands for (see :func:`reporter`), for a job
    run inside the ``with``; a bar it draws ends its line however the job ends."""
    report = reporter(progress, label)
    try:
        yield report
    finally:
        if isinstance(report, Bar):
            report.end()


def reporter(progress: Any, label: str) -> Optional[ProgressFn]:
    """The callable a ``progress=`` argument stands for, or ``None``."""
    if progress is None or isinstance(progress, (bool, np.bool_)):
        return Bar(label) if progress else None
    if callable(progress):
        return progress
    raise TypeError(f"progress must be True, False, None or a callable, got {progress!r}")
