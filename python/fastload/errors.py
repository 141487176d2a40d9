"""Exceptions raised by fastload.

Every refused load raises one exception, of the class of the first problem found, after
checking everything and before writing anything. Its message lists the problems with
their paths, and ``.problems`` holds all of them as ``(path, message)`` pairs.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

from ._fastload import keys_text

__all__ = ["ArgumentError", "DimensionMismatch", "LoadError", "SkippedKeysWarning"]


class LoadError(ValueError):
    """A load was refused, and nothing in the destination was changed; or a file could not
    be read (by :func:`fastload.load` and the command line too).

    Raised as is for leaf problems (dtype casts, tied parameters with different sources,
    read-only destinations, a non-array where an array is expected) and corrupt files.
    """

    problems: List[Tuple[str, str]]

    def __init__(self, message: str, problems: Sequence[Tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems = [(str(path), str(text)) for path, text in problems]


class ArgumentError(LoadError):
    """The two trees do not have the same structure (keys, lengths, node kinds)."""


class DimensionMismatch(LoadError):
    """An array of one shape was loaded into an array of another."""


class SkippedKeysWarning(UserWarning):
    """Keys present on one side only, skipped by ``loadmodel(..., strict=False)``.

    ``.skipped`` holds them as ``(path, missing_keys, unexpected_keys)``, one entry per
    node: the keys of the destination the source lacks, and the keys of the source the
    destination lacks. Everything else was loaded.
    """

    skipped: List[Tuple[str, List[Any], List[Any]]]

    def __init__(self, skipped: Sequence[Tuple[str, Sequence[Any], Sequence[Any]]]) -> None:
        self.skipped = [(str(path), list(m), list(u)) for path, m, u in skipped]
        missing = sum(len(m) for _, m, _ in self.skipped)
        unexpected = sum(len(u) for _, _, u in self.skipped)
        lines = []
        for path, m, u in self.skipped[:_LISTED_NODES]:
            parts = [f"missing {keys_text(m)}"] if m else []
            parts += [f"unexpected {keys_text(u)}"] if u else []
            lines.append(f"  {path}: {', '.join(parts)}")
        if len(self.skipped) > _LISTED_NODES:
            lines.append(f"  ... and {len(self.skipped) - _LISTED_NODES} more nodes")
        super().__init__(
            f"strict=False skipped {missing} missing and {unexpected} unexpected keys:\n"
            + "\n".join(lines)
        )

    def __reduce__(self) -> Any:
        # Pickled and copied from what it was made of, not its message.
        return type(self), (self.skipped,)


# Nodes that a warning lists before it counts the rest.
_LISTED_NODES = 30


def shape_text(shape: Sequence[int]) -> str:
    """``(3, 4)``, ``(3,)`` or ``()``: a shape as messages print it."""
    dims = tuple(shape)
    return f"({dims[0]},)" if len(dims) == 1 else str(dims)
