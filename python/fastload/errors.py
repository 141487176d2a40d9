"""Exceptions raised by fastload.

Every refused load raises one exception, of the class of the first problem found, after
checking everything and before writing anything. Its message lists the problems with
their paths, and ``.problems`` holds all of them as ``(path, message)`` pairs.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

__all__ = ["ArgumentError", "DimensionMismatch", "LoadError"]


class LoadError(ValueError):
    """A load was refused; nothing in the destination was changed.

    Raised as is for leaf problems (dtype casts, tied parameters with different sources,
    read-only destinations, a non-array where an array is expected).
    """

    problems: List[Tuple[str, str]]

    def __init__(self, message: str, problems: Sequence[Tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems = [(str(path), str(text)) for path, text in problems]


class ArgumentError(LoadError):
    """The two trees do not have the same structure (keys, lengths, node kinds)."""


class DimensionMismatch(LoadError):
    """An array of one shape was loaded into an array of another."""


def shape_text(shape: Sequence[int]) -> str:
    """``(3, 4)``, ``(3,)`` or ``()``: a shape as messages print it."""
    dims = tuple(shape)
    return f"({dims[0]},)" if len(dims) == 1 else str(dims)
