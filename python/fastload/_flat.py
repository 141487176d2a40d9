"""Flat dotted keys (``h.0.attn.weight``, as in a ``state_dict``) to nested dicts and back."""

from __future__ import annotations

import collections
import sys
from collections.abc import Mapping
from typing import Any, Dict, Optional

import numpy as np

from . import _fastload
from ._gc import paused
from .errors import ArgumentError, LoadError


def unflatten(flat: Mapping[str, Any], sep: str = ".") -> Dict[str, Any]:
    """Nested dicts from a mapping with keys joined by ``sep``: ``ValueError`` for keys
    that clash (``a`` and ``a.b``) or have an empty part, ``TypeError`` for keys that are
    not strings.

    >>> import fastload
    >>> fastload.unflatten({"fc.weight": 1, "fc.bias": 2, "scale": 3})
    {'fc': {'weight': 1, 'bias': 2}, 'scale': 3}
    """
    if not isinstance(flat, Mapping):
        raise TypeError(f"unflatten() needs a mapping, got {type(flat).__name__}")
    _check_separator(sep)
    return _fastload.unflatten(flat, sep)


def flatten(tree: Any, sep: str = ".") -> Dict[str, Any]:
    """The leaves of ``state(tree)`` under their paths joined by ``sep``; nodes without
    leaves are left out. The reverse of :func:`unflatten`: a tree whose paths it would not
    take back (a key holding ``sep`` or empty, a leaf at the root, two keys with the same
    ``str()``) raises ``ValueError``.

    >>> import fastload
    >>> fastload.flatten({"fc": {"weight": 1, "bias": 2}, "layers": [3, 4]})
    {'fc.weight': 1, 'fc.bias': 2, 'layers.0': 3, 'layers.1': 4}
    """
    _check_separator(sep)
    return _fastload.flatten(_fastload.state(tree), sep)


def _check_separator(sep: Any) -> None:
    if not isinstance(sep, str):
        raise TypeError(f"sep must be a string, got {type(sep).__name__}")
    if not sep:
        raise ValueError("sep must be a non-empty string")


def flatten_all(tree: Any) -> Dict[str, Any]:
    """Everything of ``state(tree)`` under dotted paths, for a checkpoint: the leaves, and
    the nodes without children (``()``, ``[]``, ``{}``), which ``load`` must give back.
    A dict key that is not a string is refused: it would load back as a string."""
    return _fastload.flatten(_fastload.state(tree), ".", True)


def flat_source(dst: Any, flat: Mapping) -> Dict[str, Any]:
    """A flat source (a ``state_dict``, a file's arrays) nested for loading into ``dst``.

    Such a source holds arrays only, and each tied array once: a key it lacks is filled
    from ``dst`` where that part of ``dst`` holds no arrays, and from the source of the
    parameter it is tied to where it is tied to one the source has.
    """
    try:
        return nested_for(dst, flat)
    except LoadError:
        raise
    except ValueError as err:  # keys that are no paths of one tree
        message = f"1 problem; nothing was loaded:\n  <root>: {err}"
        raise ArgumentError(message, [("<root>", err)]) from None


def nested_for(dst: Any, flat: Mapping) -> Dict[str, Any]:
    """:func:`flat_source`, raising ``ValueError`` for keys that are no paths of a tree."""
    return paused(_nest_for, dst, flat)


def _nest_for(dst: Any, flat: Mapping) -> Dict[str, Any]:
    dst_state = _fastload.state(dst, for_load=True)
    return _fastload.nest_flat(dst_state, flat, _array_types())


def is_array(x: Any) -> bool:
    """Whether ``x`` is an array leaf: a NumPy array, or a tensor when torch is loaded."""
    return isinstance(x, _array_types())


def _array_types() -> tuple:
    torch = sys.modules.get("torch")
    return (np.ndarray,) if torch is None else (np.ndarray, torch.Tensor)


def is_flat_state(x: Any) -> bool:
    """Whether ``x`` is a flat state, as a ``state_dict`` is: one that
    :func:`looks_flat`, of leaves only. Its keys are then taken for paths, as no file
    could give back a nested state whose keys hold the separator."""
    return looks_flat(x) and node_in_flat_state(x) is None


def node_in_flat_state(x: Mapping) -> Optional[str]:
    """The first key of a state that :func:`looks_flat` whose value is a node, which a
    flat state cannot hold; else ``None``."""
    return next((k for k, v in x.items() if _fastload.children(v) is not None), None)


def looks_flat(x: Any) -> bool:
    """Whether ``x`` is a dict (not a type of the user's, whose children may be others)
    under string keys, one of them dotted."""
    if type(x) not in (dict, collections.OrderedDict):
        return False
    keys = x.keys()
    return all(isinstance(k, str) for k in keys) and any("." in k for k in keys)


# The key under which ``state_dict`` stores a module's ``get_extra_state()``.
_EXTRA_STATE = "_extra_state"


def is_flat_state_dict(dst: Any, src: Any) -> bool:
    """Whether ``src`` is a flat ``state_dict`` for the module ``dst``: a mapping under
    string keys, of leaves or with a dotted key (torch names never contain dots, so dotted
    keys can only be paths). A module's extra state (``..._extra_state``) may be any
    object."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(dst, torch.nn.Module) or not isinstance(src, Mapping):
        return False
    arrays, nodes = _array_types(), (Mapping, list, tuple, torch.nn.Module)
    leaves, dotted = True, False
    for key, value in src.items():
        if not isinstance(key, str):
            return False
        dotted = dotted or "." in key
        if isinstance(value, arrays):
            continue  # asked first: a check against `Mapping` is slow
        if isinstance(value, nodes) and key.rpartition(".")[2] != _EXTRA_STATE:
            leaves = False
    return leaves or dotted
