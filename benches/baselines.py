"""What fastload is measured against, in the same run on the same data."""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Any, Callable, List, Optional

import numpy as np


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(nbytes: int, repeats: int, max_threads: Optional[int] = None) -> dict:
    """The memory-bandwidth limit: the best, over 1..N threads, of ``np.copyto`` on disjoint
    slices of one large buffer. Returns bytes *written* per second and the best count."""
    max_threads = max_threads or os.cpu_count() or 1
    src = np.ones(nbytes // 4, np.float32)
    dst = np.zeros_like(src)
    best = {"bytes_per_s": 0.0, "threads": 1}
    for n in range(1, max_threads + 1):
        bounds = np.linspace(0, src.size, n + 1).astype(int)
        slices = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

        def run(slices=slices):
            if len(slices) == 1:
                np.copyto(*slices[0])
                return
            workers = [threading.Thread(target=np.copyto, args=pair) for pair in slices]
            for w in workers:
                w.start()
            for w in workers:
                w.join()

        t = median_time(run, repeats)
        if nbytes / t > best["bytes_per_s"]:
            best = {"bytes_per_s": nbytes / t, "threads": n}
    return best


def python_walk(dst: Any, src: Any) -> None:
    """A hand-written recursive walk with ``np.copyto``."""
    if isinstance(dst, np.ndarray):
        np.copyto(dst, src, casting="same_kind")
    elif isinstance(dst, dict):
        for k, v in dst.items():
            python_walk(v, src[k])
    elif isinstance(dst, (list, tuple)):
        for d, s in zip(dst, src):
            python_walk(d, s)
    elif hasattr(dst, "__dict__"):
        s = src if isinstance(src, dict) else vars(src)
        for k, v in vars(dst).items():
            python_walk(v, s[k])


def optree_copy(dst_state: Any, src_state: Any) -> Optional[Callable[[], Any]]:
    """``optree.tree_map(np.copyto, dst, src)`` over plain-container trees, if installed."""
    try:
        import optree
    except ImportError:
        return None
    return lambda: optree.tree_map(np.copyto, dst_state, src_state)


def torch_copy(dst_arrays: List[np.ndarray], src_arrays: List[np.ndarray]):
    """``Tensor.copy_`` leaf by leaf over tensors sharing the arrays' memory, if installed."""
    try:
        import torch
    except ImportError:
        return None
    dst = [torch.from_numpy(a) for a in dst_arrays]
    src = [torch.from_numpy(a) for a in src_arrays]

    def run():
        with torch.no_grad():
            for d, s in zip(dst, src):
                d.copy_(s)

    return run
