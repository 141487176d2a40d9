"""Shared helpers: snapshots that prove a refused load wrote nothing, and a thread with a
small stack."""

from __future__ import annotations

import threading

import numpy as np
import pytest


def arrays_in(tree, seen=None):
    """Every ndarray reachable through dicts, lists, tuples and object attributes."""
    seen = set() if seen is None else seen
    if id(tree) in seen:
        return []
    seen.add(id(tree))
    if isinstance(tree, np.ndarray):
        return [tree]
    if isinstance(tree, dict):
        items = list(tree.values())
    elif isinstance(tree, (list, tuple)):
        items = list(tree)
    elif hasattr(tree, "__dict__") and not isinstance(tree, type):
        items = list(vars(tree).values())
    else:
        return []
    return [a for item in items for a in arrays_in(item, seen)]


class Snapshot:
    """Raw bytes of every array of a tree, to check that it is bit-for-bit unchanged."""

    def __init__(self, tree):
        self.arrays = arrays_in(tree)
        self.bytes = [self._raw(a) for a in self.arrays]

    @staticmethod
    def _raw(a):
        if a.dtype.hasobject:
            return list(a.ravel())
        return np.ascontiguousarray(a).view(np.uint8).tobytes()

    def assert_unchanged(self):
        for array, before in zip(self.arrays, self.bytes):
            assert self._raw(array) == before, "a refused load changed the destination"


@pytest.fixture
def snapshot():
    return Snapshot


def run_on_small_stack(fn, expected=(), stack_size=512 * 1024):
    """``fn()`` on a thread with a small stack (512 KiB, as some servers give their
    threads): what it returned, or the exception of an ``expected`` class it raised."""
    outcome = []

    def run():
        try:
            outcome.append(fn())
        except expected as e:
            outcome.append(e)

    old = threading.stack_size(stack_size)
    try:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    finally:
        threading.stack_size(old)
    assert outcome, "the thread ended without a result (an unexpected exception)"
    return outcome[0]


@pytest.fixture
def on_small_stack():
    return run_on_small_stack
