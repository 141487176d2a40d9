"""The main job on built-in example data: load a checkpoint into a GPT-style model.

Run ``python -m fastload.demo`` (``--help`` for the sizes). It builds a model out of
plain Python objects, makes a checkpoint with ``fastload.state`` of a second model,
loads it, checks every parameter, shows that a bad checkpoint changes nothing, saves a
checkpoint to a safetensors file and loads it back, and times the loads against a
hand-written tree walk with ``numpy.copyto``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any, Callable, List

import numpy as np

import fastload


class LayerNorm:
    def __init__(self, width: int, rng: np.random.Generator) -> None:
        self.weight = rng.normal(1, 0.02, width).astype(np.float32)
        self.bias = np.zeros(width, np.float32)
        self.eps = 1e-5


class Linear:
    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator) -> None:
        self.weight = rng.normal(0, 0.02, (n_in, n_out)).astype(np.float32)
        self.bias = np.zeros(n_out, np.float32)


class Block:
    def __init__(self, width: int, rng: np.random.Generator) -> None:
        self.ln_1 = LayerNorm(width, rng)
        self.attn = {"c_attn": Linear(width, 3 * width, rng), "c_proj": Linear(width, width, rng)}
        self.ln_2 = LayerNorm(width, rng)
        self.mlp = [Linear(width, 4 * width, rng), np.tanh, Linear(4 * width, width, rng)]
        self.dropout = 0.1


class GPT:
    def __init__(self, layers: int, width: int, vocab: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.wte = rng.normal(0, 0.02, (vocab, width)).astype(np.float32)
        self.wpe = rng.normal(0, 0.01, (1024, width)).astype(np.float32)
        self.h = [Block(width, rng) for _ in range(layers)]
        self.ln_f = LayerNorm(width, rng)
        self.lm_head = {"weight": self.wte}  # tied to the token embedding


def python_walk(dst: Any, src: Any) -> None:
    """The hand-written baseline: a recursive walk with ``numpy.copyto``."""
    if isinstance(dst, np.ndarray):
        np.copyto(dst, src, casting="same_kind")
    elif isinstance(dst, dict):
        for k, v in dst.items():
            python_walk(v, src[k])
    elif isinstance(dst, (list, tuple)):
        for d, s in zip(dst, src):
            python_walk(d, s)
    elif hasattr(dst, "__dict__") and not callable(dst):
        children = src if isinstance(src, dict) else vars(src)
        for k, v in vars(dst).items():
            python_walk(v, children[k])


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def arrays_of(tree: Any) -> List[np.ndarray]:
    """The distinct arrays of a tree, in walk order."""
    found: dict = {}

    def visit(x: Any) -> None:
        if isinstance(x, np.ndarray):
            found.setdefault(id(x), x)
        elif isinstance(x, dict):
            for v in x.values():
                visit(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                visit(v)

    visit(fastload.state(tree))
    arrays = list(found.values())
    # `visit` refers to itself, so `found` lives until the cyclic collector runs: emptied
    # now, it holds no array past this call.
    found.clear()
    return arrays


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _check(ok: bool) -> None:
    """What the demo claims, checked (under ``python -O`` too, unlike ``assert``)."""
    if not ok:
        raise SystemExit("fastload.demo: a check failed; this is a bug, please report it")


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastload.demo", description=__doc__.split("\n")[0]
    )
    sizes = {
        "--layers": (6, "transformer blocks"),
        "--width": (512, "model width"),
        "--vocab": (16384, "vocabulary size"),
        "--repeats": (5, "timed loads; the median is shown"),
    }
    for flag, (default, text) in sizes.items():
        parser.add_argument(flag, type=_positive, default=default, help=f"{text} ({default})")
    args = parser.parse_args(argv)

    model = GPT(args.layers, args.width, args.vocab, seed=0)
    checkpoint = fastload.state(GPT(args.layers, args.width, args.vocab, seed=1))
    params = arrays_of(model)
    nbytes = sum(a.nbytes for a in params)
    print(
        f"model: GPT, {args.layers} blocks of width {args.width}: {len(params)} arrays, "
        f"{nbytes / 1e6:.1f} MB of float32, lm_head tied to wte"
    )

    fastload.loadmodel(model, checkpoint)
    expected = GPT(args.layers, args.width, args.vocab, seed=1)
    _check(all(np.array_equal(a, b) for a, b in zip(arrays_of(model), arrays_of(expected))))
    _check(model.lm_head["weight"] is model.wte)
    print("loaded: every parameter equals the checkpoint's; the tie is still one array")

    bad = fastload.state(GPT(args.layers, args.width, args.vocab, seed=2))
    bad["h"][-1]["mlp"][2]["weight"] = np.zeros((3, 3), np.float32)
    del bad["ln_f"]["bias"]
    before = [a.copy() for a in params]
    try:
        fastload.loadmodel(model, bad)
    except fastload.LoadError as err:
        print(f"bad checkpoint refused with {type(err).__name__}:")
        print("  " + str(err).replace("\n", "\n  "))
    _check(all(np.array_equal(a, b) for a, b in zip(params, before)))
    print("after the refused load the model is bit-for-bit unchanged")

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "gpt.safetensors")
        fastload.save(path, GPT(args.layers, args.width, args.vocab, seed=3))
        fresh = GPT(args.layers, args.width, args.vocab, seed=0)
        fastload.loadmodel(fresh, path)
        saved = GPT(args.layers, args.width, args.vocab, seed=3)
        _check(all(np.array_equal(a, b) for a, b in zip(arrays_of(fresh), arrays_of(saved))))
        t_file = median_seconds(lambda: fastload.loadmodel(fresh, path), args.repeats)
        print(
            f"saved to a safetensors file ({os.path.getsize(path) / 1e6:.1f} MB, the tie stored "
            "once) and loaded back from it: every parameter equal"
        )

    cores = fastload._fastload.default_threads()
    t_fast = median_seconds(lambda: fastload.loadmodel(model, checkpoint), args.repeats)
    t_walk = median_seconds(lambda: python_walk(model, checkpoint), args.repeats)
    print(
        f"fastload.loadmodel ({cores} threads): {t_fast * 1e3:8.1f} ms  "
        f"{nbytes / t_fast / 1e9:6.2f} GB/s"
    )
    print(
        f"  ... from the file:            {t_file * 1e3:8.1f} ms  {nbytes / t_file / 1e9:6.2f} GB/s"
    )
    print(
        f"Python walk + np.copyto:      {t_walk * 1e3:8.1f} ms  "
        f"{nbytes / t_walk / 1e9:6.2f} GB/s   ({t_walk / t_fast:.2f}x fastload's time)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
