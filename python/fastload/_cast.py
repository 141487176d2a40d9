"""Casts the Rust kernels leave to NumPy (complex numbers, float8, byte-swapped data...).

Both are called only for casts already checked against the casting rule, so NumPy's
floating-point warnings are silenced, with `np.errstate`, which is local to the thread.
Complex values cast to real ones lose their imaginary part, as `casting="unsafe"` asks;
taking `.real` first does that without the process-wide warning filters.
"""

from __future__ import annotations

import numpy as np


def copy_cast(dst: np.ndarray, src: np.ndarray) -> None:
    """Copy ``src`` into ``dst``, casting to ``dst``'s dtype."""
    if np.iscomplexobj(src) and not np.iscomplexobj(dst):
        src = src.real
    with np.errstate(all="ignore"):
        np.copyto(dst, src, casting="unsafe")


def staged(src: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A new C-contiguous array: ``src`` cast to ``dtype``."""
    out = np.empty(src.shape, dtype=dtype)
    copy_cast(out, src)
    return out
