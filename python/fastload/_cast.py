"""Casts the Rust kernels leave to NumPy (complex numbers, float8, byte-swapped data...),
or to torch when the destination is a tensor's memory: torch rounds some casts (float64
to float16, through float32) differently from NumPy, and a load into a tensor gives
`load_state_dict`'s bits.

Both are called only for casts already checked against the casting rule, so NumPy's
floating-point warnings are silenced, with `np.errstate`, which is local to the thread.
Complex values cast to real ones lose their imaginary part, as `casting="unsafe"` asks:
NumPy is given `.real`, which it casts without the warning that process-wide filters
would be needed to silence; so is torch for a float, while its cast into an integer
(which differs from that of `.real` for uint32) runs with its warning ignored: a warning
would run a `showwarning` of the user's once the load's checks had passed.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Optional

import numpy as np


def copy_cast(dst: np.ndarray, src: np.ndarray) -> None:
    """Copy ``src`` into ``dst``, casting to ``dst``'s dtype."""
    if np.may_share_memory(dst, src):
        # Read in full before any element is written: NumPy's own overlap check does not
        # cover a cast between dtypes of different sizes.
        src = src.copy()
    cast = _torch_cast(src, dst)
    if cast is not None:
        np.copyto(dst, cast, casting="no")
        return
    if np.iscomplexobj(src) and not np.iscomplexobj(dst) and dst.dtype.kind != "b":
        src = src.real  # (a complex number is true where either part is not zero)
    with np.errstate(all="ignore"):
        np.copyto(dst, src, casting="unsafe")


def staged(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """A new C-contiguous array: ``src`` cast to ``dst``'s dtype, as it is copied into
    ``dst``."""
    cast = _torch_cast(src, dst)
    if cast is not None:
        return np.ascontiguousarray(cast) if cast.ndim else cast.copy()
    out = np.empty(src.shape, dtype=dst.dtype)
    copy_cast(out, src)
    return out


def _torch_cast(src: np.ndarray, dst: np.ndarray) -> Optional[np.ndarray]:
    """``src`` cast by torch to ``dst``'s dtype when ``dst`` views a tensor's memory and
    torch holds both dtypes, else ``None``."""
    torch = sys.modules.get("torch")
    # (`type`, not `isinstance`, which would ask a base of the user's for its `__class__`.)
    if torch is None or not issubclass(type(dst.base), torch.Tensor):
        return None
    if torch._C._len_torch_function_stack() or torch._C._len_torch_dispatch_stack():
        return None  # a mode of the user's would run, after the load's checks: NumPy casts
    from . import _torch

    if any(stride < 0 for stride in src.strides):
        src = np.ascontiguousarray(src)  # torch holds no negative strides
    # Torch warns of complex values cast to real ones, and a warning runs code of the
    # user's (a `showwarning`, a logging handler) once the load's checks have run: a
    # float is given the real part, which torch keeps; an integer takes torch's own cast
    # (not that of the real part), the warning ignored.
    discards = np.iscomplexobj(src) and not np.iscomplexobj(dst) and dst.dtype.kind != "b"
    if discards and dst.dtype.kind == "f":
        src, discards = src.real, False
    try:
        tensor = _torch.as_tensor(src)
        out = torch.empty(tensor.shape, dtype=_torch.torch_dtype(dst), device="cpu")
        with warnings.catch_warnings() if discards else contextlib.nullcontext():
            if discards:
                warnings.simplefilter("ignore")
            out.copy_(tensor)  # as `load_state_dict` copies (`.real.to()` differs for uint32)
    except (TypeError, ValueError, RuntimeError):
        return None  # a dtype or a byte order torch does not hold: NumPy casts
    return _torch.as_numpy(out)
