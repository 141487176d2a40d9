"""Progress reporting: ``progress=True`` draws a bar on stderr for large loads and saves."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional

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
            sys.stderr.write("\n")
        sys.stderr.flush()


def reporter(progress: Any, label: str) -> Optional[ProgressFn]:
    """The callable a ``progress=`` argument stands for, or ``None``."""
    if progress is None or isinstance(progress, (bool, np.bool_)):
        return Bar(label) if progress else None
    if callable(progress):
        return progress
    raise TypeError(f"progress must be True, False, None or a callable, got {progress!r}")
