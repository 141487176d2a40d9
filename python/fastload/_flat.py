"""Flat dotted keys (``h.0.attn.weight``, as in a ``state_dict``) to nested dicts and back."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Dict, List

import numpy as np

from . import _fastload
from ._gc import paused


def unflatten(flat: Mapping, sep: str = ".") -> Dict[str, Any]:
    """Nested dicts from a mapping with keys joined by ``sep``.

    >>> import fastload
    >>> fastload.unflatten({"fc.weight": 1, "fc.bias": 2, "scale": 3})
    {'fc': {'weight': 1, 'bias': 2}, 'scale': 3}
    """
    if not isinstance(flat, Mapping):
        raise TypeError(f"unflatten() needs a mapping, got {type(flat).__name__}")
    if not isinstance(sep, str) or not sep:
        raise ValueError(f"sep must be a non-empty string, got {sep!r}")
    out: Dict[str, Any] = {}
    for key, value in flat.items():
        if not isinstance(key, str):
            raise TypeError(f"unflatten() needs string keys, got {key!r}")
        parts = key.split(sep)
        if "" in parts:
            raise ValueError(f"key {key!r} has an empty part between separators {sep!r}")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict) or child is value:
                prefix = sep.join(parts[: depth + 1])
                raise ValueError(f"key {key!r} is below {prefix!r}, which holds a value")
            node = child
        if parts[-1] in node:
            raise ValueError(f"key {key!r} is also the prefix of other keys")
        node[parts[-1]] = value
    return out


def flatten(tree: Any, sep: str = ".") -> Dict[str, Any]:
    """The leaves of ``state(tree)`` under their paths joined by ``sep``; nodes without
    leaves are left out. The reverse of :func:`unflatten`.

    >>> import fastload
    >>> fastload.flatten({"fc": {"weight": 1, "bias": 2}, "layers": [3, 4]})
    {'fc.weight': 1, 'fc.bias': 2, 'layers.0': 3, 'layers.1': 4}
    """
    if not isinstance(sep, str) or not sep:
        raise ValueError(f"sep must be a non-empty string, got {sep!r}")
    out: Dict[str, Any] = {}
    _flatten_into(out, [], _fastload.state(tree), sep)
    return out


def _flatten_into(out: Dict[str, Any], path: List[str], node: Any, sep: str) -> None:
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
    else:
        out[sep.join(path)] = node
        return
    for key, child in items:
        part = str(key)
        if sep in part:
            raise ValueError(f"key {part!r} contains the separator {sep!r}")
        path.append(part)
        _flatten_into(out, path, child, sep)
        path.pop()


def flat_source(dst: Any, flat: Mapping) -> Dict[str, Any]:
    """A flat source (a ``state_dict``, a file's arrays) nested for loading into ``dst``.

    Such a source holds arrays only, and each tied array once: a key it lacks is filled
    from ``dst`` where that part of ``dst`` holds no arrays, and from the source of the
    parameter it is tied to where it is tied to one the source has.
    """
    return paused(_nest_for, dst, flat)


def _nest_for(dst: Any, flat: Mapping) -> Dict[str, Any]:
    dst_state = _fastload.state(dst)
    flat = dict(flat)
    dst_leaves: Dict[str, Any] = {}
    _flatten_into(dst_leaves, [], dst_state, ".")  # (already a state: not made again)
    by_identity: Dict[int, List[str]] = {}
    for key, value in dst_leaves.items():
        if isinstance(value, _array_types()):
            by_identity.setdefault(id(value), []).append(key)
    for keys in by_identity.values():
        present = [key for key in keys if key in flat]
        if present and len(present) < len(keys):
            for key in keys:
                flat.setdefault(key, flat[present[0]])
    return fill_arrayless(dst_state, unflatten(flat))


def fill_arrayless(dst_state: Any, src: Dict[str, Any]) -> Dict[str, Any]:
    """``src`` (nested dicts of a flat source, which holds arrays only) completed with the
    parts of ``dst_state`` that hold no arrays (flags, empty modules, absent parameters),
    which such a source cannot name and which are therefore not missing from it."""
    if isinstance(dst_state, (list, tuple)):
        dst_state = {str(i): child for i, child in enumerate(dst_state)}
    if not isinstance(dst_state, dict):
        return src
    out = dict(src)
    for key, child in dst_state.items():
        part = str(key)
        if part in out:
            if isinstance(out[part], dict):
                out[part] = fill_arrayless(child, out[part])
        elif not _holds_arrays(child):
            out[part] = child
    return out


def _holds_arrays(node: Any) -> bool:
    if isinstance(node, dict):
        return any(_holds_arrays(child) for child in node.values())
    if isinstance(node, (list, tuple)):
        return any(_holds_arrays(child) for child in node)
    return is_array(node)


def is_array(x: Any) -> bool:
    """Whether ``x`` is an array leaf: a NumPy array, or a tensor when torch is loaded."""
    return isinstance(x, _array_types())


def _array_types() -> tuple:
    torch = sys.modules.get("torch")
    return (np.ndarray,) if torch is None else (np.ndarray, torch.Tensor)


def is_flat_state_dict(dst: Any, src: Any) -> bool:
    """Whether ``src`` is a flat ``state_dict`` for the module ``dst``: a mapping of leaves
    under string keys (torch names never contain dots, so dotted keys can only be paths)."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(dst, torch.nn.Module) or not isinstance(src, Mapping):
        return False
    nodes = (Mapping, list, tuple, torch.nn.Module)
    return all(isinstance(key, str) and not isinstance(value, nodes) for key, value in src.items())
