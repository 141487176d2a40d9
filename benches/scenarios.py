"""Benchmark scenarios: the trees each benchmark loads, built the same way every run."""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import numpy as np


class Module:
    """A plain object with attributes, as user models are."""

    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


def gpt2_layout(n_layer: int = 12, d: int = 768, vocab: int = 50257, ctx: int = 1024):
    """GPT-2 124M as (path, shape) pairs in nested dicts/lists; lm_head is tied to wte."""

    def linear(n_in, n_out):
        return {"weight": (n_in, n_out), "bias": (n_out,)}

    def norm():
        return {"weight": (d,), "bias": (d,)}

    block = lambda: {  # noqa: E731
        "ln_1": norm(),
        "attn": {"c_attn": linear(d, 3 * d), "c_proj": linear(d, d)},
        "ln_2": norm(),
        "mlp": {"c_fc": linear(d, 4 * d), "c_proj": linear(4 * d, d)},
    }
    return {
        "wte": (vocab, d),
        "wpe": (ctx, d),
        "h": [block() for _ in range(n_layer)],
        "ln_f": norm(),
    }


def materialize(layout: Any, make: Callable[[tuple], np.ndarray]) -> Any:
    if isinstance(layout, tuple):
        return make(layout)
    if isinstance(layout, dict):
        return {k: materialize(v, make) for k, v in layout.items()}
    return [materialize(v, make) for v in layout]


def gpt2(dtype=np.float32, seed: int = 0, fill: bool = True, scale: int = 1) -> Dict[str, Any]:
    """A GPT-2 tree of ``dtype`` arrays; ``scale`` > 1 shrinks it (quick runs)."""
    rng = np.random.default_rng(seed)
    layout = gpt2_layout(n_layer=12, d=768 // scale, vocab=50257 // scale, ctx=1024 // scale)

    def make(shape):
        if not fill:
            return np.zeros(shape, dtype)
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)

    tree = materialize(layout, make)
    tree["lm_head"] = {"weight": tree["wte"]}
    return tree


def tiny(n_leaves: int = 100_000, seed: int = 0, mixed: bool = False) -> List[Any]:
    """Many leaves of 2-16 float32, nested 4-6 deep in dicts, lists and plain objects.

    Nodes of one depth are of one kind, so the leaves sit in lists; ``mixed`` rotates the
    kinds from node to node instead, so that a third of the leaves sit in each kind. The
    structure is the same for every ``seed``; only the values differ."""
    shapes = np.random.default_rng(12345)
    values = np.random.default_rng(seed)
    made = [0]
    nodes = [0]

    def node(depth: int) -> Any:
        if depth == 0 or made[0] >= n_leaves:
            made[0] += 1
            return values.random(int(shapes.integers(2, 17)), dtype=np.float32)
        kids = [node(depth - 1) for _ in range(8)]
        nodes[0] += 1
        kind = (depth + nodes[0]) % 3 if mixed else depth % 3
        if kind == 0:
            return {f"k{i}": k for i, k in enumerate(kids)}
        if kind == 1:
            return kids
        return Module(**{f"a{i}": k for i, k in enumerate(kids)})

    roots = []
    while made[0] < n_leaves:
        roots.append(node(4 + len(roots) % 3))
    return roots


def arrays(count: int, nbytes: int, seed: int = 0, fill: bool = True) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    n = nbytes // 4
    if fill:
        return [rng.standard_normal(n, dtype=np.float32) for _ in range(count)]
    return [np.zeros(n, np.float32) for _ in range(count)]
