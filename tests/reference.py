"""A plain-Python model of ``fastload.loadmodel`` (SPEC section 2), used as a test oracle.

It walks ``dst`` and ``src`` together, collects every problem first and, only when there
is none, copies leaf by leaf in walk order (``dst`` key order) with ``numpy.copyto``.
It covers trees of dict, list, tuple, NumPy arrays and plain Python data (and, for
convenience, dataclasses, namedtuples and plain objects, seen through their fields).
A leaf (or an empty node) in ``dst`` follows the leaf table whatever ``src`` holds there;
a non-empty node in ``dst`` against a leaf in ``src`` is an ``ArgumentError``.
"""

from __future__ import annotations

import dataclasses
import types
import warnings
from collections.abc import Mapping

import numpy as np

import fastload

ROOT = "<root>"
_PLAIN = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType, type)
_TIE_MISMATCH = "tied destination parameters with untied and mismatched sources"


def is_array(x):
    """An array leaf: an ndarray of any dtype but ``object`` (object arrays are plain leaves)."""
    return isinstance(x, np.ndarray) and x.dtype != object


def is_bool(x, value):
    """``x`` is the boolean ``value`` (a Python bool or a NumPy bool scalar, never 0 or 1)."""
    return (type(x) is bool or isinstance(x, np.bool_)) and bool(x) is value


def children(x):
    """``("keyed", dict)`` or ``("seq", list)`` for a node, ``None`` for a leaf."""
    if isinstance(x, (np.ndarray, *_PLAIN)):
        return None
    if isinstance(x, Mapping):
        return "keyed", dict(x)
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return "keyed", dict(zip(x._fields, x))
    if isinstance(x, (list, tuple)):
        return "seq", list(x)
    if dataclasses.is_dataclass(x):
        return "keyed", {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    if hasattr(x, "__dict__"):
        return "keyed", dict(vars(x))
    return None


def tie_key(a):
    """Arrays with equal keys are one tied parameter."""
    return (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype)


def _string_like(dtype):
    """Fixed-width str, bytes, raw void and structured dtypes (not ml_dtypes' numbers)."""
    return dtype.kind in "US" or issubclass(dtype.type, np.void)


def _floating(dtype):
    """NumPy's floats and ml_dtypes' (bfloat16, float8...), which NumPy does not count as
    floats."""
    return dtype.kind == "f" or (
        dtype.num >= 256 and dtype.type.__name__.startswith(("float", "bfloat16"))
    )


def castable(src, dst, casting):
    """NumPy's casting rules, except that string, bytes and structured dtypes never cast,
    and that any float casts to any other float under ``same_kind`` where NumPy has a cast
    between them."""
    if _string_like(src) or _string_like(dst):
        return src == dst
    if casting == "same_kind" and _floating(src) and _floating(dst):
        return bool(np.can_cast(src, dst, "unsafe"))
    return bool(np.can_cast(src, dst, casting))


def written_bytes(dst, src):
    """The bytes that loading ``src`` (an array or ``False``) writes into ``dst``."""
    if not is_array(src):
        return np.zeros(dst.shape, dst.dtype).tobytes()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return src.astype(dst.dtype, casting="unsafe").tobytes()


class _Plan:
    def __init__(self, filter, strict, casting):
        self.filter, self.strict, self.casting = filter, strict, casting
        self.problems = []  # (exception class, path, message), in walk order
        self.copies = []  # (dst array, src array or False): first source of each tie
        self.ties = {}  # tie key -> (first source, bytes it writes)

    def problem(self, cls, path, message):
        self.problems.append((cls, path or ROOT, message))

    def view(self, x):
        """``x``'s children, those the filter keeps: a sequence's as ``(index, child)``
        pairs, with the index each had in it."""
        view = children(x)
        if view is None:
            return view
        kind, items = view
        keep = self.filter or (lambda c: True)
        if kind == "seq":
            return kind, [(i, c) for i, c in enumerate(items) if keep(c)]
        return kind, {k: v for k, v in items.items() if keep(v)}

    def walk(self, dst, src, path):
        dview, sview = self.view(dst), self.view(src)
        if dview is not None and sview is not None:
            for key, d, s in self.match(dview, sview, path):
                self.walk(d, s, f"{path}.{key}" if path else str(key))
        elif dview and dview[1]:
            self.problem(fastload.ArgumentError, path, "a leaf cannot load into a node")
        else:
            self.leaf(dst, src, path)  # a leaf or an empty node in dst: the leaf rules apply

    def match(self, dview, sview, path):
        (dkind, dc), (skind, sc) = dview, sview
        if dkind == skind == "seq":  # by position among the children kept
            if len(dc) == len(sc):
                return [(i, d, s) for (i, d), (_, s) in zip(dc, sc)]
            self.problem(fastload.ArgumentError, path, f"length {len(sc)} into length {len(dc)}")
            return []
        if dkind == skind == "keyed":
            missing = [k for k in dc if k not in sc]
            unexpected = [k for k in sc if k not in dc]
            if self.strict and (missing or unexpected):
                message = f"missing keys {missing}, unexpected keys {unexpected}"
                self.problem(fastload.ArgumentError, path, message)
                return []
            return [(k, dc[k], sc[k]) for k in dc if k in sc]
        # A mapping keyed by the indices the sequence's children had in it.
        seq, keyed = (dc, sc) if dkind == "seq" else (sc, dc)
        for index_key in (int, str):
            if set(keyed) == {index_key(i) for i, _ in seq}:
                if dkind == "seq":
                    return [(i, d, sc[index_key(i)]) for i, d in dc]
                at = {index_key(i): c for i, c in sc}
                return [(k, v, at[k]) for k, v in dc.items()]
        self.problem(fastload.ArgumentError, path, "a sequence cannot load from these keys")
        return []

    def leaf(self, dst, src, path):
        if is_array(dst):
            if is_array(src):
                if dst.shape != src.shape:
                    message = f"Tried to load size {src.shape} array into size {dst.shape}"
                    self.problem(fastload.DimensionMismatch, path, message)
                    return
                if not castable(src.dtype, dst.dtype, self.casting):
                    message = f"cannot cast {src.dtype} to {dst.dtype} under {self.casting!r}"
                    self.problem(fastload.LoadError, path, message)
                    return
            elif not is_bool(src, False):
                message = f"Tried to copy {src!r} into an array destination"
                self.problem(fastload.LoadError, path, message)
                return
            self.tie(dst, src, path)
        elif is_array(src) and not is_bool(dst, False):
            self.problem(fastload.LoadError, path, f"Tried to copy an array to {dst!r}")

    def tie(self, dst, src, path):
        key = tie_key(dst)
        if key not in self.ties:
            self.ties[key] = (src, written_bytes(dst, src))
            if dst.flags.writeable:
                self.copies.append((dst, src))
            else:
                self.problem(fastload.LoadError, path, "read-only destination")
            return
        first, value = self.ties[key]
        if is_array(src) and is_array(first) and tie_key(src) == tie_key(first):
            return  # the same source buffer: nothing to compare
        if is_bool(src, False):
            same = not any(value)
        else:
            same = written_bytes(dst, src) == value
        if not same:
            self.problem(fastload.LoadError, path, _TIE_MISMATCH)


def _error(problems):
    cls = problems[0][0]
    pairs = [(path, message) for _, path, message in problems]
    exc = cls("\n".join(f"{path}: {message}" for path, message in pairs))
    exc.problems = pairs
    return exc


def reference_loadmodel(dst, src, *, filter=None, strict=True, casting="same_kind"):
    """Load ``src`` into ``dst`` the way SPEC section 2 says, and return ``dst``."""
    plan = _Plan(filter, strict, casting)
    plan.walk(dst, src, "")
    if plan.problems:
        raise _error(plan.problems)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for d, s in plan.copies:
            if is_array(s):
                np.copyto(d, s, casting=casting)
            else:
                d[...] = np.zeros((), d.dtype)
    return dst
