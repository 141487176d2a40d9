"""The command line: ``python -m fastload inspect FILE`` and ``python -m fastload diff A B``.

A checkpoint is a safetensors file or a sharded checkpoint's ``*.safetensors.index.json``.
``diff`` also takes ``module:name``, a Python object (called if a function or class) whose state is
compared, so that a checkpoint can be checked against a model before loading it.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
from inspect import isclass, isroutine
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from . import _fastload
from ._files import array_identity, read_checked
from ._flat import flatten, is_array, is_flat_state
from .errors import LoadError, shape_text

Signature = Tuple[Tuple[int, ...], str]


class TargetError(Exception):
    """A ``module:name`` target that cannot be imported, found or built."""


def _size(nbytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""


def inspect(path: str, out: Optional[TextIO] = None) -> None:
    """Prints the tree of a checkpoint: paths, shapes, dtypes, bytes, ties and totals.
    A file that ``load`` refuses is refused (``LoadError``) rather than half shown."""
    arrays, ties, _ = read_checked(path)
    entries: Dict[str, Any] = dict(arrays)
    entries.update(ties)
    rows: List[Tuple[str, str]] = []
    current: List[str] = []  # the node whose children are being printed
    for key in sorted(entries, key=_natural):
        parts = key.split(".")
        parents = parts[:-1]
        common = 0
        while common < min(len(current), len(parents)) and current[common] == parents[common]:
            common += 1
        for depth in range(common, len(parents)):
            rows.append((_indent(depth) + _shown(parents[depth]), ""))
        current = parents
        name = _indent(len(parts) - 1) + _shown(parts[-1])
        value = entries[key]
        if isinstance(value, str):
            rows.append((name, f"tied to {_shown(value)}"))
        else:
            shape = shape_text(value.shape)
            rows.append((name, f"{shape:<16} {value.dtype.name:<13} {_size(value.nbytes)}"))
    # Capped: one long name should not pad every row (longer ones push their own row out).
    width = min(max((len(n) for n, _ in rows), default=0), _MAX_NAME_WIDTH) + 2
    total = sum(a.nbytes for a in arrays.values())
    print(
        f"{path}: {len(arrays)} tensors, {_size(total)}, {len(ties)} tied",
        file=out,
    )
    for name, detail in rows:
        pad = max(width, len(name) + 2)
        print(f"{name:<{pad}}{detail}".rstrip(), file=out)


_MAX_NAME_WIDTH = 60

# Deeper rows are indented no further, so that a key of many parts prints in linear space.
_MAX_INDENT = 32


def _indent(depth: int) -> str:
    return "  " * min(depth, _MAX_INDENT)


def _shown(name: str) -> str:
    """A name as printed: as it is when printable, else escaped (``repr``), so that a
    file's names cannot forge rows or send control codes to the terminal."""
    return name if name.isprintable() else repr(name)


def _natural(key: str) -> List[Any]:
    """Sort key that puts ``h.2`` before ``h.10``: a part of ASCII digits sorts by its
    number, compared as its length without leading zeros, then its digits (any number of
    digits, with no conversion to ``int``)."""

    def part(p: str) -> Tuple[int, int, str]:
        if p.isascii() and p.isdigit():
            digits = p.lstrip("0")
            return (0, len(digits), digits)
        return (1, 0, p)

    return [part(p) for p in key.split(".")]


def signatures(spec: str) -> Tuple[Dict[str, Signature], Dict[str, str]]:
    """Shape and dtype of each array of a checkpoint path or a ``module:name`` object, and
    its ties: each later name of a tied array, with its first."""
    if os.path.exists(spec) or spec.endswith((".safetensors", ".json")):
        arrays, ties, _ = read_checked(spec)
        found = {k: (tuple(a.shape), a.dtype.name) for k, a in arrays.items()}
        found.update({k: found[first] for k, first in ties.items()})
        return found, dict(ties)
    obj = _import(spec)
    if obj is None or is_array(obj) or _fastload.children(obj) is None:
        raise TargetError(f"{spec}: gave {type(obj).__name__}, not a model or a state")
    if is_flat_state(obj):  # a `state_dict`: its keys are the paths already
        leaves = dict(obj)
    else:
        try:
            leaves = flatten(obj)
        except Exception as err:  # a failing `children` of the user's own types, say
            raise TargetError(f"{spec}: cannot take its state: {_one_line(err)}") from None
    out: Dict[str, Signature] = {}
    ties: Dict[str, str] = {}
    first_names: Dict[Any, str] = {}  # `head.weight = wte.weight`, or a view alike
    for key, value in leaves.items():
        if is_array(value):
            out[key] = (tuple(value.shape), str(value.dtype).replace("torch.", ""))
            first = first_names.setdefault(_memory(value), key)
            if first != key:
                ties[key] = first
    return out, ties


def _memory(array: Any) -> Any:
    """What makes arrays one tied parameter to a load: the same memory viewed alike,
    whatever the objects."""
    if isinstance(array, np.ndarray):
        return array_identity(array)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(array, torch.Tensor):
        from ._torch import tie_key

        return tie_key(array)
    return id(array)


def _import(spec: str) -> Any:
    """The object a ``module:name`` target names, called (with no arguments) if it is a
    function or a class.
    Whatever goes wrong is a ``TargetError`` saying what."""
    if ":" not in spec:
        raise LoadError(f"{spec}: no such file (for a Python object, write module:name)", [])
    module, _, name = spec.partition(":")
    if not module or not name:
        raise TargetError(f"{spec!r}: a target is written module:name, as mypkg.models:build")
    sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module)
    except (Exception, SystemExit) as err:  # (a script that exits when imported)
        raise TargetError(f"{spec}: cannot import {module}: {_one_line(err)}") from None
    try:
        for part in name.split("."):
            obj = getattr(obj, part)
    except (Exception, SystemExit) as err:
        raise TargetError(f"{spec}: {module} has no {name}: {_one_line(err)}") from None
    if not _is_factory(obj):
        return obj
    try:
        return obj()
    except (Exception, SystemExit) as err:
        raise TargetError(
            f"{spec}: calling {name}() raised {_one_line(err)} (a target is called with no "
            "arguments)"
        ) from None


def _is_factory(obj: Any) -> bool:
    """Whether a target is called to make the model: a function or a class, not a model
    that is callable (an ``nn.Module``, whose call runs its ``forward``)."""
    return isroutine(obj) or isclass(obj) or isinstance(obj, functools.partial)


def _one_line(err: Exception) -> str:
    """An exception as one line: its class and the first line of its message, or of a
    ``LoadError``, its first problem."""
    problems = getattr(err, "problems", None)
    if isinstance(err, LoadError) and problems:
        path, text = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        return f"{type(err).__name__}: {path or 'the root'}: {(text.splitlines() or [''])[0]}{more}"
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _tie_groups(ties: Dict[str, str]) -> List[List[str]]:
    """The names of each tied array, its first name first, from each later name's first."""
    groups: Dict[str, List[str]] = {}
    for key, first in ties.items():
        groups.setdefault(first, [first]).append(key)
    return list(groups.values())


def diff(a: str, b: str, out: Optional[TextIO] = None) -> int:
    """Prints where two checkpoints (or a checkpoint and a model) differ in structure,
    shape or dtype; returns 0 when they match, 1 when they differ."""
    (left, left_ties), (right, right_ties) = signatures(a), signatures(b)
    # Names of a tied array that the other side leaves out (as `save_model` stores a tie
    # under one of its names) load from the names it has, as a load fills them in: no
    # difference, where those agree.
    for found, ties, other in ((left, left_ties, right), (right, right_ties, left)):
        for names in _tie_groups(ties):
            present = [name for name in names if name in other]
            if present and all(other[name] == found[name] for name in present):
                for name in names:
                    if name not in other:
                        del found[name]
    lines = []
    for key in sorted(set(left) | set(right), key=_natural):
        if key not in right:
            lines.append(f"- {_shown(key)}: only in {a}")
        elif key not in left:
            lines.append(f"+ {_shown(key)}: only in {b}")
        elif left[key] != right[key]:
            (ls, ld), (rs, rd) = left[key], right[key]
            what = []
            if ls != rs:
                what.append(f"shape {shape_text(ls)} vs {shape_text(rs)}")
            if ld != rd:
                what.append(f"dtype {ld} vs {rd}")
            lines.append(f"~ {_shown(key)}: {', '.join(what)}")
    for line in lines:
        print(line, file=out)
    same = sum(1 for k in left if k in right and left[k] == right[k])
    arrays = "array matches" if same == 1 else "arrays match"
    print(f"{same} {arrays}, {len(lines)} differ", file=out)
    return 1 if lines else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastload",
        description="Inspect a safetensors checkpoint, or compare two (or one and a model).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    checkpoint = "a safetensors file, or a sharded checkpoint's *.safetensors.index.json"
    shown = commands.add_parser(
        "inspect",
        help="print the tree of a checkpoint",
        description="Print the tree of a checkpoint: paths, shapes, dtypes, bytes, ties.",
    )
    shown.add_argument("file", help=checkpoint)
    compared = commands.add_parser(
        "diff",
        help="where two checkpoints (or a model) differ",
        description="Show where two checkpoints, or a checkpoint and a model, differ in "
        "structure, shape or dtype. Exit status: 0 if they match, 1 if they differ, 2 on "
        "an error.",
    )
    target = f"{checkpoint}; or module:name, an object (called if a function or class) to compare"
    compared.add_argument("a", help=target)
    compared.add_argument("b", help=target)
    args = parser.parse_args(argv)
    np.set_printoptions(threshold=10)
    try:
        if args.command == "inspect":
            inspect(args.file)
            return 0
        return diff(args.a, args.b)
    except BrokenPipeError:
        # The reader stopped early (`| head`): the rest goes nowhere, quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (LoadError, TargetError, OSError) as err:
        problems = getattr(err, "problems", None) if isinstance(err, LoadError) else None
        # A file's problems, without the words of a refused load ("nothing was loaded").
        for line in [f"{path}: {text}" for path, text in problems] if problems else [err]:
            print(f"error: {line}", file=sys.stderr)
        return 2
