"""fastload: load model parameters into models, fast and safely.

A port of Flux's ``loadmodel!`` and ``state`` with a Rust core: ``loadmodel(dst, src)``
walks two object trees together, checks that they match, and copies every array of
``src`` into the matching array of ``dst`` in place, in parallel, with the GIL released.
A refused load raises before writing anything.
"""

# Imported under private names: `dir(fastload)` shows the public API only.
import operator as _operator
import os as _os
import warnings as _warnings
from typing import Any as _Any
from typing import Callable as _Callable
from typing import Dict as _Dict
from typing import Mapping as _Mapping
from typing import Optional as _Optional
from typing import Tuple as _Tuple
from typing import TypeVar as _TypeVar
from typing import Union as _Union

import numpy as _np

from . import _fastload, _files, _types
from ._flat import flat_source as _flat_source
from ._flat import flatten, unflatten
from ._flat import is_flat_state_dict as _is_flat_state_dict
from ._gc import paused as _paused
from ._progress import reporting as _reporting
from ._tree import register, register_leaf
from .errors import ArgumentError, DimensionMismatch, LoadError, SkippedKeysWarning

__all__ = [
    "ArgumentError",
    "DimensionMismatch",
    "LoadError",
    "SkippedKeysWarning",
    "children",
    "flatten",
    "load",
    "loadmodel",
    "register",
    "register_leaf",
    "save",
    "state",
    "unflatten",
]

__version__ = "0.1.0"

_T = _TypeVar("_T")

_CASTING_RULES = ("no", "equiv", "safe", "same_kind", "unsafe")


def _thread_count(threads: _Any) -> int:
    """``threads`` as a count of threads: any positive integer (a NumPy one too) but a
    bool; ``TypeError`` for anything else that is no integer, ``ValueError`` for one below 1."""
    try:
        if isinstance(threads, (bool, _np.bool_)):
            raise TypeError
        count = _operator.index(threads)
    except TypeError:
        message = f"threads must be a positive integer or None, got {type(threads).__name__}"
        raise TypeError(message) from None
    if count < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return min(count, 2**31)  # (the pool has at most one thread a core anyway)


# Values of FASTLOAD_NUM_THREADS already warned about.
_bad_thread_settings: set = set()


def _check_thread_setting() -> None:
    """Warns (once per value) when ``FASTLOAD_NUM_THREADS`` is set to what the core
    ignores: anything but a positive integer."""
    value = _os.environ.get("FASTLOAD_NUM_THREADS")
    if value is None or value in _bad_thread_settings:
        return
    if _fastload.thread_count(value) is not None:
        return
    _bad_thread_settings.add(value)
    _warnings.warn(
        f"FASTLOAD_NUM_THREADS={value!r} is not a positive integer; every core is used",
        RuntimeWarning,
        stacklevel=3,
    )


def loadmodel(
    dst: _T,
    src: _Any,
    *,
    filter: _Optional[_Callable[[_Any], object]] = None,
    strict: bool = True,
    casting: _types.Casting = "same_kind",
    threads: _types.Threads = None,
    progress: _types.Progress = None,
) -> _T:
    """Copy every array of ``src`` into the matching array of ``dst``, in place.

    The trees are walked together from the root. Keyed nodes (dicts, objects, dataclasses,
    namedtuples) match by key set, sequences by length, and a sequence matches a mapping
    keyed ``0..n-1`` or ``"0".."n-1"``. Array leaves are copied, cast to the destination's
    dtype under NumPy's ``casting`` rule; a ``False`` source zeroes its destination, and a
    ``False`` destination ignores its source. Other leaves (functions, numbers, flags) need
    not match. ``filter(child)`` drops children of both trees for which it is false.

    PyTorch: a ``torch.nn.Module`` is a keyed node of its parameters, persistent buffers
    and submodules under their ``state_dict`` names (a ``None`` parameter is ``False``),
    and tensors are array leaves, written in place (identity and ``requires_grad`` kept).
    A flat ``state_dict()`` (dotted keys) loads into a module as it is. Large loads between
    host memory and a GPU go through pinned buffers that the parallel copy fills (or
    empties) while the GPU reads (or writes) the other one.

    Files: ``src`` may be the path of a safetensors file (or of a sharded checkpoint's
    ``*.safetensors.index.json``). The file is mapped, its header checked, the whole load
    planned and checked, and only then are the bytes copied from the file into ``dst``. A
    file holds arrays only, so a key it lacks whose destination holds no arrays is not
    missing.

    Everything is checked before the first byte is written: on any problem ``dst`` is left
    unchanged and one :class:`LoadError` (or :class:`ArgumentError`,
    :class:`DimensionMismatch`) lists them all with their paths.

    Args:
        dst: the model to load into; returned.
        src: the tree to load from (another model, a ``state``, nested dicts...).
        filter: keep only the children for which it returns true.
        strict: if false, keys present on one side only are skipped, and reported in
            one :class:`SkippedKeysWarning` once the load is done.
        casting: ``"no"``, ``"equiv"``, ``"safe"``, ``"same_kind"`` or ``"unsafe"``.
        threads: copy threads; ``None`` uses ``FASTLOAD_NUM_THREADS`` or every core.
        progress: ``True`` for a bar on stderr when the load is large, or a callable
            receiving ``(bytes_done, bytes_total)`` about every 100 ms of the copy.

    A copy of 64 MiB or more (or any copy with ``progress``) stops on Ctrl-C with
    ``KeyboardInterrupt`` within about 100 ms; the arrays written by then stay written.

    Raises:
        LoadError: the load is refused (``ArgumentError`` for structure,
            ``DimensionMismatch`` for shapes); ``dst`` is unchanged.
        TypeError, ValueError: an argument is not one of those above (``threads``,
            ``casting``, a ``filter`` that is not callable).
        RuntimeError: a copy that torch itself failed after the checks had passed
            (the leaves before it stay written).

    >>> import numpy as np, fastload
    >>> model = {"layers": [{"weight": np.zeros((2, 2)), "act": "relu"}]}
    >>> ckpt = {"layers": [{"weight": np.ones((2, 2)), "act": None}]}
    >>> fastload.loadmodel(model, ckpt)["layers"][0]["weight"]
    array([[1., 1.],
           [1., 1.]])
    """
    if casting not in _CASTING_RULES:
        raise ValueError(f"casting must be one of {_CASTING_RULES}, got {casting!r}")
    if threads is None:
        _check_thread_setting()
    count = 0 if threads is None else _thread_count(threads)
    if filter is not None and not callable(filter):
        raise TypeError(f"filter must be callable or None, got {filter!r}")
    with _reporting(progress, "fastload: loading") as report:
        if _files.is_path(src):
            src = _files.source_for(dst, src)
        elif _is_flat_state_dict(dst, src):
            src = _flat_source(dst, src)
        # With the collector paused, no `__del__` or `gc.callbacks` of the user's runs
        # midway (see "No crash on bad input" in the README).
        load = _fastload.loadmodel
        skipped = _paused(load, dst, src, filter, bool(strict), casting, count, report)
    if skipped:
        _warnings.warn(SkippedKeysWarning(skipped), stacklevel=2)
    return dst


def state(x: _Any) -> _Any:
    """The state of ``x``: the same nesting, made of dicts, lists, tuples and arrays.

    Keyed nodes become dicts, lists stay lists and tuples stay tuples. Arrays are kept
    (the same objects, so shared arrays stay shared), as are numbers, strings, bytes,
    ``None`` and NumPy scalars; every other leaf becomes ``()``.

    >>> import numpy as np, fastload
    >>> class Dense:
    ...     def __init__(self):
    ...         self.weight, self.bias, self.act = np.ones(2), False, np.tanh
    >>> fastload.state(Dense())
    {'weight': array([1., 1.]), 'bias': False, 'act': ()}

    The cyclic garbage collector is paused while the containers are built: they cannot
    form a cycle (a tree with one is refused), and collecting as they are made would only
    traverse them again and again.
    """
    return _paused(_fastload.state, x)


def children(x: _Any) -> _Optional[_Union[_Dict[_Any, _Any], _Tuple[_Any, ...]]]:
    """The child view of ``x``: ``None`` for a leaf, a dict for a keyed node, a tuple for a
    sequence.

    >>> import numpy as np, fastload
    >>> fastload.children([np.zeros(1), 2])
    (array([0.]), 2)
    >>> fastload.children({"a": 1})
    {'a': 1}
    >>> fastload.children(np.zeros(3)) is None
    True
    """
    return _fastload.children(x)


def save(
    path: _types.PathLike,
    x: _Any,
    *,
    metadata: _Optional[_Mapping[str, str]] = None,
    max_shard_size: _Optional[int] = None,
    progress: _types.Progress = None,
) -> None:
    """Write ``state(x)`` to ``path`` as a safetensors file.

    Arrays (NumPy, or tensors, moved to the CPU) are stored under their dotted paths
    (``h.0.attn.weight``), a tied array once; a flat state such as a ``state_dict()``
    under its own dotted keys. The rest of the state (numbers, strings,
    ``None``, ``()``) and the tie table go into the file's metadata, with ``metadata``
    (strings to strings). The file is written to a temporary file in the same folder,
    flushed to disk and renamed: ``path`` never holds a partial file.

    With ``max_shard_size`` (bytes), ``path`` names a ``*.safetensors.index.json`` and the
    arrays are split into shards next to it, as large models ship them.

    ``progress`` is ``True`` for a bar on stderr when the save is large, or a callable
    receiving ``(bytes_done, bytes_total)``. Ctrl-C stops a save, leaving ``path`` as it was.

    Raises:
        TypeError: a dict key that is not a string, an array safetensors cannot hold, or
            ``metadata`` that does not map strings to strings.
        ValueError: a name the file could not give back (empty, ``__metadata__``, not
            UTF-8, keys of a flat state that are no paths of one tree), or a
            ``metadata`` key of fastload's own (``fastload.*``, and ``total_size`` in a
            sharded save).
        FileExistsError: a sharded save would overwrite a shard file its old index does
            not name.
        IsADirectoryError: ``path`` is or names a folder.
        NotADirectoryError: a part of ``path`` that should be a folder is a file.
        FileNotFoundError: the folder ``path`` is in does not exist.

    >>> import numpy as np, fastload, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> fastload.save(path, {"fc": {"weight": np.ones((2, 2)), "act": "relu"}})
    >>> fastload.load(path)
    {'fc': {'weight': array([[1., 1.],
           [1., 1.]]), 'act': 'relu'}}
    """
    _files.save(path, x, metadata=metadata, max_shard_size=max_shard_size, progress=progress)


def load(path: _types.PathLike, *, copy: bool = False) -> _Dict[str, _Any]:
    """The nested state stored at ``path`` by :func:`save` (or any safetensors file, or a
    sharded checkpoint's index): dicts of NumPy arrays, tied arrays shared, and the
    numbers, strings, ``None`` and ``()`` that :func:`save` kept in its metadata. Lists
    come back as dicts keyed ``"0"``, ``"1"``..., which load into lists.

    Arrays are read-only views of the memory-mapped file unless ``copy=True``. A corrupt
    file raises :class:`LoadError` naming the file and what is wrong.
    """
    return _files.load(path, copy=copy)
