"""Shared helpers: snapshots that prove a refused load wrote nothing."""

from __future__ import annotations

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
