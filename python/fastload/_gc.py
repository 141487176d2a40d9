"""Pausing the cyclic garbage collector around work that only builds containers."""

from __future__ import annotations

import gc
from typing import Any, Callable, TypeVar

R = TypeVar("R")


def paused(fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)`` with the cyclic collector paused (and left as it was after).

    For code that builds many new containers of existing objects, which cannot form a
    cycle among themselves: collecting while they are made would only traverse them, and
    everything else the process holds, again and again.
    """
    if not gc.isenabled():
        return fn(*args)
    gc.disable()
    try:
        return fn(*args)
    finally:
        gc.enable()
