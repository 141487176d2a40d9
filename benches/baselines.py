"""What fastload is measured against, in the same run on the same data."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, List, Optional

import numpy as np

from fastload.demo import median_seconds as median_time
from fastload.demo import python_walk

__all__ = [
    "copy_bandwidth",
    "median_time",
    "optree_copy",
    "python_walk",
    "torch_copy",
    "versions",
]


def versions() -> dict:
    """Versions of the optional baselines installed, for the record."""
    found = {}
    for name in ("optree", "torch", "ml_dtypes"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            pass
    return found


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


def optree_copy(dst_state: Any, src_state: Any) -> Optional[Callable[[], Any]]:
    """``optree.tree_map(np.copyto, dst, src)`` over plain-container trees, if installed."""
    try:
        import optree
    except ImportError:
        return None
    return lambda: optree.tree_map(np.copyto, dst_state, src_state)


def torch_copy(dst_arrays: List[np.ndarray], src_arrays: List[np.ndarray]):
    """``Tensor.copy_`` leaf by leaf over tensors sharing the arrays' memory, if installed.

    bfloat16 destinations (which NumPy tensors cannot share) get torch tensors of their
    own, of the same shape."""
    try:
        import torch
    except ImportError:
        return None

    def tensor(a: np.ndarray):
        if a.dtype.name == "bfloat16":
            return torch.empty(a.shape, dtype=torch.bfloat16)
        return torch.from_numpy(a)

    dst = [tensor(a) for a in dst_arrays]
    src = [torch.from_numpy(a) for a in src_arrays]

    def run():
        with torch.no_grad():
            for d, s in zip(dst, src):
                d.copy_(s)

    return run
