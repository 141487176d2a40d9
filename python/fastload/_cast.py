"""Casts the Rust kernels leave to NumPy (complex numbers, float8, byte-swapped data...).

Both are called only for casts already checked against the casting rule, so NumPy's
warnings about the values (overflow, discarded imaginary parts) are silenced.
"""

from __future__ import annotations

import warnings

import numpy as np


def copy_cast(dst: np.ndarray, src: np.ndarray) -> None:
    """Copy ``src`` into ``dst``, casting to ``dst``'s dtype."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        np.copyto(dst, src, casting="unsafe")


def staged(src: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A new C-contiguous array: ``src`` cast to ``dtype``."""
    out = np.empty(src.shape, dtype=dtype)
    copy_cast(out, src)
    return out
