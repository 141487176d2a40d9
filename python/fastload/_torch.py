"""PyTorch support: modules as keyed nodes, tensors as array leaves.

This module imports torch, so it is imported only once a torch object is met (torch is then
already in ``sys.modules``). A CPU tensor whose dtype NumPy can hold is handed to the Rust
core as a NumPy view of its memory, so it goes through the same checks and parallel copy
as an array. Every other tensor (on a GPU, a conjugate view, a dtype NumPy lacks) is
copied by torch itself, after every check of the whole load has passed.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import _fastload, _staging
from .errors import shape_text

try:
    import ml_dtypes
except ImportError:  # bfloat16 and float8 tensors are then copied by torch
    ml_dtypes = None

# Torch dtypes NumPy holds natively.
_NUMPY: Dict[torch.dtype, np.dtype] = {
    torch.bool: np.dtype(np.bool_),
    torch.uint8: np.dtype(np.uint8),
    torch.int8: np.dtype(np.int8),
    torch.int16: np.dtype(np.int16),
    torch.int32: np.dtype(np.int32),
    torch.int64: np.dtype(np.int64),
    torch.float16: np.dtype(np.float16),
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
    torch.complex64: np.dtype(np.complex64),
    torch.complex128: np.dtype(np.complex128),
}
for _name in ("uint16", "uint32", "uint64"):
    if hasattr(torch, _name):
        _NUMPY[getattr(torch, _name)] = np.dtype(_name)

# Torch dtypes `ml_dtypes` holds: viewed as a same-sized integer tensor, whose NumPy array
# is then viewed with the `ml_dtypes` dtype.
_ML: Dict[torch.dtype, Tuple[torch.dtype, np.dtype]] = {}
if ml_dtypes is not None:
    _ML[torch.bfloat16] = (torch.int16, np.dtype(ml_dtypes.bfloat16))
    for _name in (
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
    ):
        if hasattr(torch, _name) and hasattr(ml_dtypes, _name):
            _ML[getattr(torch, _name)] = (torch.int8, np.dtype(getattr(ml_dtypes, _name)))


def needs_ml_dtypes(dtype: torch.dtype) -> bool:
    """Whether NumPy would hold ``dtype`` (bfloat16, float8) were ``ml_dtypes`` installed."""
    return ml_dtypes is None and (dtype == torch.bfloat16 or "float8" in str(dtype))


# The NumPy dtype of a view of each torch dtype's memory (read by the Rust core).
VIEW_DTYPES: Dict[torch.dtype, np.dtype] = dict(_NUMPY)
VIEW_DTYPES.update({k: v[1] for k, v in _ML.items()})

# Tensor types the Rust core views without calling `as_numpy`: their methods run only
# torch's own code.
PLAIN_TENSOR_TYPES = [torch.Tensor, torch.nn.Parameter]
_PLAIN_TYPES = frozenset(PLAIN_TENSOR_TYPES)

# The torch dtype of each NumPy dtype above, for NumPy arrays that torch copies into.
_TORCH: Dict[np.dtype, torch.dtype] = {v: k for k, v in _NUMPY.items()}
_TORCH.update({v[1]: k for k, v in _ML.items()})


def module_children(module: torch.nn.Module) -> Dict[str, Any]:
    """The children of a module under their ``state_dict`` names: parameters (``False`` for
    a ``None`` parameter, an absent one), persistent buffers, then submodules."""
    out: Dict[str, Any] = {}
    for name, param in module._parameters.items():
        out[name] = False if param is None else param
    transient = module._non_persistent_buffers_set
    for name, buf in module._buffers.items():
        if buf is not None and name not in transient:
            out[name] = buf
    for name, sub in module._modules.items():
        if sub is not None:
            out[name] = sub
    return out


# `_save_to_state_dict`s that save a module's parameters and persistent buffers under
# their names, and nothing else.
_STANDARD_SAVES = (
    torch.nn.Module._save_to_state_dict,
    torch.nn.modules.lazy.LazyModuleMixin._save_to_state_dict,
)


def saves_its_own_layout(tp: type) -> bool:
    """Whether modules of class ``tp`` write their own ``state_dict`` entries, which may be
    other than their parameters and persistent buffers (quantized modules' are)."""
    return getattr(tp, "_save_to_state_dict", None) not in _STANDARD_SAVES


def own_layout_children(module: torch.nn.Module) -> Dict[str, Any]:
    """The children of a module that :func:`saves_its_own_layout`: its usual children
    where what it saves is exactly its parameters and persistent buffers (as observers and
    fake quantizers do), else a refusal, since its children would not load its state."""
    saved: Dict[str, Any] = {}
    module._save_to_state_dict(saved, "", True)
    children = module_children(module)
    own = {k: v for k, v in children.items() if v is not False and k not in module._modules}
    if saved.keys() == own.keys() and all(saved[k] is own[k] for k in own):
        return children
    name = type(module).__name__
    raise TypeError(
        f"{name} saves a state_dict of its own layout (it overrides _save_to_state_dict), "
        "not its parameters and buffers; load it with load_state_dict, or tell fastload "
        f"its children with fastload.register({name}, ...)"
    )


def as_numpy(tensor: torch.Tensor) -> Optional[np.ndarray]:
    """A NumPy view of a CPU tensor's memory, or ``None`` where torch must copy it (or, for
    the uninitialized parameter of a lazy module, materialize it first)."""
    if is_lazy(tensor) or not tensor.is_cpu:
        return None  # asked first: torch's refusal is an exception, slow to raise
    np_dtype = VIEW_DTYPES.get(tensor.dtype)
    if np_dtype is None or tensor.layout != torch.strided:
        return None
    if tensor.is_conj() or tensor.is_neg() or tensor._is_zerotensor():
        return None
    if tensor.numel() == 0:
        return np.empty(tuple(tensor.shape), np_dtype)  # no memory to view
    tensor = tensor.detach()
    if tensor.dtype in _ML:  # seen as integers: older releases describe no float8 tensor
        tensor = tensor.view(_ML[tensor.dtype][0])
    # Not `Tensor.numpy()`, which makes the storage unresizable for good.
    return _fastload.tensor_view(tensor, np_dtype)


def memory_refusal(tensor: torch.Tensor, role: str = "tensor") -> Optional[str]:
    """Why ``tensor`` (the ``role`` of a copy) has no values to read or write, or
    ``None``: a zero tensor (which torch keeps without memory, and refuses to write), or
    one whose storage no longer holds the elements it views (freed or shrunk with
    ``untyped_storage().resize_()``, as FSDP does), where a copy would read garbage or
    write past the memory."""
    if is_lazy(tensor) or tensor.is_nested:
        return None  # (refused as such: `TorchCopies.add`, `_files`)
    if tensor._is_zerotensor():
        return f"the {role} is a zero tensor (torch._efficientzerotensor), which holds no memory"
    if tensor.layout != torch.strided or tensor.is_meta or tensor.dtype in _PACKED:
        return None
    if tensor.numel() == 0:
        return None
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None  # a wrapper subclass (as DTensor) without memory of its own
    reach = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
    needed = (tensor.storage_offset() + reach + 1) * tensor.element_size()
    if needed <= storage.nbytes():
        return None
    return (
        f"the {role}'s storage holds {storage.nbytes()} bytes, fewer than the {needed} its "
        "elements reach: its memory was freed or shrunk (untyped_storage().resize_())"
    )


# As the core words it (see `src/core/ties.rs`).
_STAGING = "the pinned staging of large copies between host and GPU"
_MISMATCHED_TIE = "tied destination parameters with untied and mismatched sources"
_UNORDERED = (
    "this destination, which torch copies into, is memory another leaf of the load writes "
    "as another dtype; torch's copies are made last, not in walk order: load them apart"
)


def resolved_values(tensor: torch.Tensor) -> Optional[Tuple[np.ndarray, int, int]]:
    """A conjugate or negative view on the CPU, resolved into a new array, with the first
    and past-the-last byte it was read from; ``None`` for any other tensor, or one whose
    dtype NumPy lacks."""
    if tensor.device.type != "cpu" or tensor.layout != torch.strided or is_lazy(tensor):
        return None
    if not (tensor.is_conj() or tensor.is_neg()):
        return None
    values = as_numpy(tensor.detach().resolve_conj().resolve_neg())
    if values is None:
        return None
    span = _staging.span_of(tensor)
    return (values, 0, 0) if span is None else (values, span[1], span[2])


def memory_key(tensor: torch.Tensor, owner: Any) -> tuple:
    """What makes destinations one tied parameter: the same memory viewed the same way
    (device, address, shape, strides, dtype, conjugate and negative bits), whatever the
    objects. A tensor without memory of its own (a wrapper subclass, as DTensor) is tied
    only to ``owner``, the object it was taken from."""
    address = tensor.data_ptr()
    where = address if address else ("object", id(owner))
    view = (tensor.is_conj(), tensor.is_neg())
    return (tensor.device, where, tensor.shape, tensor.stride(), tensor.dtype, view)


def tie_key(x: torch.Tensor) -> tuple:
    """:func:`memory_key` of a destination tensor of a flat source's nesting."""
    return memory_key(x.detach(), x)


def is_lazy(x: Any) -> bool:
    """Whether ``x`` is the uninitialized parameter or buffer of a lazy module, which has
    a dtype but neither a shape nor memory yet."""
    return isinstance(x, torch.nn.parameter.UninitializedTensorMixin)


def as_tensor(x: Any) -> torch.Tensor:
    """``x`` as a tensor sharing its memory (a tensor, or a NumPy array)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    dtype = _TORCH.get(x.dtype)
    if dtype is None:
        raise TypeError(f"torch cannot hold a NumPy array of dtype {x.dtype}")
    if dtype in _ML:
        same_size = _ML[dtype][0]
        x = x.view(np.dtype(f"i{x.dtype.itemsize}"))
    if x.flags.writeable:
        tensor = torch.from_numpy(x)
    else:
        with warnings.catch_warnings():
            # A read-only source (a mapped file) is only ever read here.
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.from_numpy(x)
    return tensor.view(same_size).view(dtype) if dtype in _ML else tensor


def _readable_by_torch(array: np.ndarray) -> np.ndarray:
    """``array``, or a copy of it in native byte order without negative strides, which
    torch cannot read."""
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if any(stride < 0 for stride in array.strides):
        array = array.copy()
    return array


def torch_dtype(x: Any) -> Any:
    return x.dtype if isinstance(x, torch.Tensor) else _TORCH.get(x.dtype, x.dtype)


def _cast_refusal(src: torch.dtype, dst: torch.dtype, casting: str) -> Optional[str]:
    """Why ``casting`` forbids ``src -> dst`` (torch's promotion rules), or ``None``."""
    if src == dst or casting == "unsafe":
        return None
    if casting == "same_kind" and torch.can_cast(src, dst):
        return None
    if casting == "safe" and _promotes_to(src, dst):
        return None
    return f'cannot cast {_name_of(src)} to {_name_of(dst)} under casting="{casting}"'


def _promotes_to(src: torch.dtype, dst: torch.dtype) -> bool:
    """Whether torch promotes ``src`` with ``dst`` to ``dst``. Torch does not promote
    uint16, uint32 and uint64 with other integers (nor, before 2.2, float8 with anything):
    NumPy's rule decides those."""
    try:
        return torch.promote_types(src, dst) == dst
    except RuntimeError:
        if src in VIEW_DTYPES and dst in VIEW_DTYPES:
            return bool(np.can_cast(VIEW_DTYPES[src], VIEW_DTYPES[dst], "safe"))
        return False


def _name_of(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


_QUANTIZED = frozenset(
    getattr(torch, name)
    for name in ("qint8", "quint8", "qint32", "quint4x2", "quint2x4")
    if hasattr(torch, name)
)

# Quantized dtypes whose elements share bytes (a byte holds two or four): `element_size()`
# does not size their memory.
_PACKED = frozenset(
    getattr(torch, name) for name in ("quint4x2", "quint2x4") if hasattr(torch, name)
)


def _quantized_refusal(src: Any, dst: Any, casting: str) -> Optional[str]:
    """Why ``src`` cannot load into ``dst`` where either is quantized, or ``None``. As
    with ``load_state_dict``, a quantized tensor loads from one of its dtype and
    quantization scheme (taking its scale and zero point), or from float32, which it
    quantizes with its own (a cast, under the casting rule); nothing else loads from one."""
    src_dtype, dst_dtype = torch_dtype(src), torch_dtype(dst)
    if dst_dtype not in _QUANTIZED:
        return (
            f"cannot load a quantized {_name_of(src_dtype)} tensor into a "
            f"{_name_of(dst_dtype)} one; dequantize() it first"
        )
    if src_dtype not in _QUANTIZED:
        if src_dtype != torch.float32:
            return (
                f"a quantized {_name_of(dst_dtype)} tensor loads only from one of its dtype "
                f"or from float32, not from {_name_of(src_dtype)}"
            )
        if isinstance(dst, torch.Tensor) and dst.qscheme() not in _QUANTIZED_FROM_FLOAT:
            return (
                f"torch does not quantize float32 into a tensor quantized "
                f"{_name_of(dst.qscheme())}: load it from a quantized tensor of its scheme"
            )
        if casting in ("same_kind", "unsafe"):
            return None
        return f'cannot cast float32 to {_name_of(dst_dtype)} under casting="{casting}"'
    if src_dtype != dst_dtype:
        return (
            f"cannot load a quantized {_name_of(src_dtype)} tensor into a quantized "
            f"{_name_of(dst_dtype)} one"
        )
    if src.qscheme() != dst.qscheme():
        schemes = _name_of(src.qscheme()), _name_of(dst.qscheme())
        return "cannot load a tensor quantized {} into one quantized {}".format(*schemes)
    return None


# Quantization schemes torch quantizes float32 into in place (`copy_`); it refuses
# the others (per_channel_affine_float_qparams, as quantized embeddings use).
_QUANTIZED_FROM_FLOAT = frozenset([torch.per_tensor_affine, torch.per_channel_affine])


# Dtypes that torch copies from and into each other on every device.
_COPIED = frozenset(
    [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]
    + [torch.float16, torch.bfloat16, torch.float32, torch.float64]
    + [torch.complex64, torch.complex128]
)

# Whether torch copies between two dtypes on a device type: `(src, dst, device)` ->
# `None`, or why not.
_COPY_REFUSALS: Dict[Tuple[torch.dtype, torch.dtype, str], Optional[str]] = {}


def _copy_refusal(src: Any, dst: Any, devices: Tuple[str, ...]) -> Optional[str]:
    """Why torch has no copy from dtype ``src`` into ``dst`` on one of ``devices`` (as
    for float4, the bit and sub-byte dtypes), or ``None``. Tried once per pair and device,
    on one element."""
    if not (isinstance(src, torch.dtype) and isinstance(dst, torch.dtype)):
        return None  # a NumPy dtype torch lacks: refused when made a tensor
    for device in devices:
        key = (src, dst, device)
        if key not in _COPY_REFUSALS:
            _COPY_REFUSALS[key] = _try_copy(src, dst, device)
        if _COPY_REFUSALS[key] is not None:
            return _COPY_REFUSALS[key]
    return None


def _try_copy(src: torch.dtype, dst: torch.dtype, device: str) -> Optional[str]:
    """Copies one element of dtype ``src`` into one of ``dst`` on ``device``: ``None``, or
    why torch refused."""
    try:
        _one_element(dst, device).copy_(_one_element(src, device))
    except (RuntimeError, NotImplementedError, TypeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"torch cannot copy {_name_of(src)} into {_name_of(dst)}: {reason}"
    return None


def _one_element(dtype: torch.dtype, device: str) -> torch.Tensor:
    """A tensor of one element of ``dtype`` (quantized ones with a quantizer)."""
    if dtype in _QUANTIZED:
        with warnings.catch_warnings():  # torch deprecates making quantized tensors
            warnings.simplefilter("ignore", UserWarning)
            return torch.quantize_per_tensor(torch.zeros(1, device=device), 1.0, 0, dtype)
    return torch.zeros(1, dtype=dtype, device=device)


def _devices(*tensors: Any) -> Tuple[str, ...]:
    """The device types on which torch may run a copy between ``tensors``: the CPU
    (which casts staged uploads) and theirs, but the meta device."""
    devices = ["cpu"]
    for x in tensors:
        kind = x.device.type if isinstance(x, torch.Tensor) else "cpu"
        if kind not in devices and kind != "meta":
            devices.append(kind)
    return tuple(devices)


def _zeros_for(dst: torch.Tensor) -> torch.Tensor:
    """Zeros of ``dst``'s shape to copy into it: float32 for a quantized ``dst``, which
    quantizes them; a DTensor of its mesh and placements for a DTensor; for a sparse
    ``dst``, a sparse tensor of its layout (a compressed one with ``dst``'s structure,
    since torch copies only between those of one number of elements)."""
    if _is_dtensor(dst) or dst.layout == torch.sparse_coo:
        return torch.zeros_like(dst)
    if dst.layout != torch.strided:
        zeros = dst.clone()
        zeros.values().zero_()
        return zeros
    dtype = torch.float32 if dst.dtype in _QUANTIZED else dst.dtype
    return torch.zeros((), dtype=dtype, device=dst.device).expand(dst.shape)


def _zeros_refusal(dst: Any) -> Optional[str]:
    """Why torch cannot copy the zeros of :func:`_zeros_for` into ``dst``, or ``None``."""
    dtype = torch_dtype(dst)
    zeros = torch.float32 if dtype in _QUANTIZED else dtype
    return _copy_refusal(zeros, dtype, _devices(dst))


def _to_quantize_into(dst: torch.Tensor, src: torch.Tensor) -> Optional[torch.Tensor]:
    """``src`` (float32) laid out as torch quantizes it into ``dst``: in ``dst``'s memory
    format, which must be C order or channels-last; else ``None``."""
    for layout in (torch.contiguous_format, torch.channels_last):
        if dst.is_contiguous(memory_format=layout):
            return src.contiguous(memory_format=layout)
    return None


_INFERENCE = (
    "the destination is an inference tensor (made under torch.inference_mode()), which "
    "torch writes in place only in inference mode; load inside torch.inference_mode(), "
    "or into a clone()"
)

_OVERLAPPING = (
    "the destination's elements share memory (a zero or overlapping stride, as expand() "
    "and as_strided() give), which torch refuses to copy into; load into a clone()"
)


_NESTED = (
    "nested tensors (torch.nested) are not loaded: their shapes are not fixed numbers; "
    "load their values() instead, or use load_state_dict"
)

_MIXED_DTENSOR = (
    "torch copies between a DTensor and a plain tensor only as part of a DTensor "
    "operation: distribute_tensor() the plain one first, or load a full checkpoint into a "
    "sharded model with torch.distributed.checkpoint"
)


_OTHER_MESH = (
    "the source DTensor is on another device mesh than the destination, which torch "
    "cannot copy between: redistribute it onto the destination's mesh first"
)


def _is_dtensor(x: Any) -> bool:
    """Whether ``x`` is a DTensor (torch.distributed's, imported where one exists; before
    torch 2.4, from a private module)."""
    for name in ("torch.distributed.tensor", "torch.distributed._tensor"):
        dtensor = getattr(sys.modules.get(name), "DTensor", None)
        if dtensor is not None and isinstance(x, dtensor):
            return True
    return False


def overlaps_itself(tensor: torch.Tensor) -> bool:
    """Whether two elements of a strided tensor may share memory: a zero stride, or
    strides that interleave. Conservative as the core's check of arrays is, whose walk
    routes such tensors here: ``False`` guarantees every element has memory of its own."""
    if tensor.is_contiguous() or tensor.numel() == 0:
        return False
    dims = sorted((abs(stride), size) for size, stride in zip(tensor.shape, tensor.stride()))
    extent = 1  # in elements: the span of the dimensions sorted so far
    for stride, size in dims:
        if size == 1:
            continue
        if stride < extent:
            return True
        extent += stride * (size - 1)
    return False


def _sparse_refusal(src: torch.Tensor, dst: torch.Tensor) -> Optional[str]:
    """Why torch cannot copy ``src`` into ``dst``, sparse tensors of one layout and
    shape, or ``None``. A sparse COO tensor that holds elements keeps its numbers of
    sparse and dense dimensions; a compressed one (CSR, CSC, BSR, BSC) keeps its number
    of specified elements, its block size and its dense dimensions."""
    layout = _name_of(dst.layout)
    if dst.layout == torch.sparse_coo:
        dims = (src.sparse_dim(), src.dense_dim()), (dst.sparse_dim(), dst.dense_dim())
        if dims[0] == dims[1] or dst._nnz() == 0:
            return None
        return (
            f"cannot load a {layout} tensor of {dims[0][0]} sparse and {dims[0][1]} dense "
            f"dimensions into one of {dims[1][0]} and {dims[1][1]}"
        )
    if src._nnz() != dst._nnz():
        return (
            f"cannot load a {layout} tensor of {src._nnz()} specified elements into one "
            f"of {dst._nnz()}"
        )
    if src.values().shape != dst.values().shape:
        shapes = shape_text(src.values().shape), shape_text(dst.values().shape)
        return (
            "cannot load a {layout} tensor whose values have shape {} into one whose "
            "values have shape {} (another block size or dense dimensions)"
        ).format(*shapes, layout=layout)
    return None


class TorchCopies:
    """The leaves of one load that torch copies: planned and checked during the walk,
    copied only once the whole load has passed its checks."""

    def __init__(self, casting: str) -> None:
        self.casting = casting
        self.copies: List[Tuple[torch.Tensor, torch.Tensor]] = []
        # Destination memory already planned, for tied parameters: key -> first source.
        self.firsts: Dict[tuple, torch.Tensor] = {}
        self.ties: List[Tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        # What autograd must hear was written: the tensors behind the destinations.
        self.written: List[Any] = []
        # Lazy modules' parameters to materialize, by id: (parameter, first source).
        self.lazy: Dict[int, Tuple[Any, torch.Tensor]] = {}
        # Destinations copied into as they are, not detached, and their sources: sparse
        # and quantized tensors.
        self.into_tensors: List[Tuple[torch.Tensor, torch.Tensor]] = []
        # The path of each planned copy's destination, by the id of the tensor copied into.
        self.paths: Dict[int, str] = {}
        # Where each leaf's problems go among the walk's (how many it had found), by path.
        self.positions: Dict[str, int] = {}

    def add(self, dst: Any, src: Any, path: str, position: int = 0) -> Optional[Tuple[int, str]]:
        """Plans ``dst <- src`` (zeros where ``src`` is ``None``), met when the walk had
        found ``position`` problems; returns ``(kind, message)`` for a problem (kind 1 a
        shape, 2 anything else), else ``None``.

        A lazy module's uninitialized parameter takes the shape of its source (as
        ``load_state_dict`` does) once the load has passed its checks."""
        self.positions[path] = position
        if is_lazy(src):
            return (
                2,
                "the source is the uninitialized parameter of a lazy module: it holds no values",
            )
        for x in (dst, src):
            if isinstance(x, torch.Tensor) and x.is_nested:  # (which has no shape to compare)
                return 2, _NESTED
        lazy = is_lazy(dst)
        if lazy and src is None:
            return 2, "an uninitialized parameter of a lazy module has no shape to fill with zeros"
        if src is not None:
            if not lazy and tuple(dst.shape) != tuple(src.shape):
                src_size, dst_size = shape_text(src.shape), shape_text(dst.shape)
                return 1, f"Tried to load size {src_size} array into size {dst_size}"
            if isinstance(src, np.ndarray):
                src = _readable_by_torch(src)
            src_dtype, dst_dtype = torch_dtype(src), torch_dtype(dst)
            for array, dtype in ((src, src_dtype), (dst, dst_dtype)):
                if not isinstance(dtype, torch.dtype):
                    return 2, f"torch holds no {array.dtype} array, and it copies this leaf"
            if src_dtype != dst_dtype or dst_dtype not in _COPIED:
                refusal = self._dtype_refusal(src, dst, src_dtype, dst_dtype)
                if refusal is not None:
                    return 2, refusal
        elif not lazy and torch_dtype(dst) not in _COPIED:
            refusal = _zeros_refusal(dst)
            if refusal is not None:
                return 2, refusal
        for x, role in ((dst, "destination"), (src, "source")):
            if isinstance(x, torch.Tensor) and x.is_meta:
                return 2, "a tensor on the meta device holds no data to copy"
            if isinstance(x, torch.Tensor) and not (role == "source" and x._is_zerotensor()):
                refusal = memory_refusal(x, role)
                if refusal is not None:
                    return 2, refusal
        if src is not None and _is_dtensor(dst) != _is_dtensor(src):
            return 2, _MIXED_DTENSOR
        if src is not None and _is_dtensor(dst) and dst.device_mesh != src.device_mesh:
            return 2, _OTHER_MESH
        if not lazy and isinstance(dst, torch.Tensor) and dst.is_inference():
            if not torch.is_inference_mode_enabled():  # torch refuses to write it
                return 2, _INFERENCE
        try:
            if lazy:
                self._add_lazy(dst, as_tensor(src), path)
                return None
            dst_t = as_tensor(dst)
            src_t = _zeros_for(dst_t) if src is None else as_tensor(src)
        except (TypeError, ValueError, RuntimeError, NotImplementedError) as err:
            return 2, str(err)  # (a NumPy destination with negative strides, say)
        layout = dst_t.layout
        if layout != src_t.layout:
            layouts = _name_of(src_t.layout), _name_of(layout)
            return 2, "cannot load a {} tensor into a {} one".format(*layouts)
        strided = layout == torch.strided
        if strided and overlaps_itself(dst_t):
            # Asked of NumPy destinations too, which torch refuses to copy into as well.
            return 2, _OVERLAPPING
        if not strided:
            refusal = _sparse_refusal(src_t, dst_t)
            if refusal is not None:
                return 2, refusal
            # A sparse tensor's copy gives it new memory, so it is copied into the tensor
            # itself, not a detached one; nor can it be tied through its memory, only as
            # the same object.
            first = self.firsts.get(("sparse", id(dst)))
            if first is not None:
                self.ties.append((path, dst_t, first, src_t))
                return None
            self.firsts[("sparse", id(dst))] = src_t
            self.into_tensors.append((dst, src_t))
            self.paths[id(dst)] = path
            self.written.append(dst)
            return None
        quantized = dst_t.dtype in _QUANTIZED
        if quantized and not src_t.is_quantized:
            src_t = _to_quantize_into(dst_t, src_t)
            if src_t is None:
                return 2, "torch quantizes float32 only into a contiguous quantized tensor"
        key = memory_key(dst_t, dst)
        first = self.firsts.get(key)
        if first is None:
            self.firsts[key] = src_t
            if quantized:
                # Its copy sets its quantizer (scale, zero point): on the tensor itself,
                # since a detached one has a quantizer of its own.
                self.into_tensors.append((dst, src_t))
                self.paths[id(dst)] = path
            else:
                self.copies.append((dst_t, src_t))
                self.paths[id(dst_t)] = path
            self.written.append(_owner(dst))
        else:
            self.ties.append((path, dst_t, first, src_t))
        return None

    def _dtype_refusal(self, src: Any, dst: Any, src_dtype: Any, dst_dtype: Any) -> Optional[str]:
        """Why ``src``'s dtype cannot load into ``dst``'s: the casting rule, quantization,
        or a pair torch has no copy for. Asked during the walk, since torch would raise
        only while copying, after other leaves were written."""
        if src_dtype in _QUANTIZED or dst_dtype in _QUANTIZED:
            refusal = _quantized_refusal(src, dst, self.casting)
        elif src_dtype != dst_dtype:
            refusal = _cast_refusal(src_dtype, dst_dtype, self.casting)
        else:
            refusal = None
        if refusal is None and not (src_dtype in _COPIED and dst_dtype in _COPIED):
            refusal = _copy_refusal(src_dtype, dst_dtype, _devices(src, dst))
        return refusal

    def _add_lazy(self, param: Any, src: torch.Tensor, path: str) -> None:
        """Plans a checked lazy parameter: materialized at its first source's shape, or a
        tie to that source for every later one."""
        first = self.lazy.get(id(param))
        if first is None:
            self.lazy[id(param)] = (param, src)
            self.paths[id(param)] = path
        else:
            self.ties.append((path, param, first[1], src))

    def check_ties(self) -> List[Tuple[int, str, str]]:
        """``(position, path, message)`` of every tied parameter loaded with different
        values."""
        problems = []
        for path, dst, first, later in self.ties:
            if dst.dtype in _QUANTIZED:
                same = torch.equal(_copied_into_like(dst, first), _copied_into_like(dst, later))
            elif dst.layout != torch.strided:
                same = _same_values(first.to_dense(), later.to_dense(), dst.dtype)
            else:
                same = _same_values(first, later, dst.dtype)
            if not same:
                problems.append((self.positions[path], path, _MISMATCHED_TIE))
        return problems

    def host_destinations(
        self,
    ) -> List[Tuple[int, int, str, int, Tuple[int, ...], Tuple[int, ...], int]]:
        """``(index, position, path, address, shape, strides in bytes, itemsize)`` of
        each copy into host memory, for the core to find its own leaves tied to one."""
        found = []
        for index, (dst, _) in enumerate(self.copies):
            if dst.device.type == "cpu" and dst.layout == torch.strided and dst.data_ptr():
                size = dst.element_size()
                strides = tuple(stride * size for stride in dst.stride())
                where = (dst.data_ptr(), tuple(dst.shape), strides, size)
                path = self.paths[id(dst)]
                found.append((index, self.positions[path], path, *where))
        return found

    def tie_with_core(
        self, index: int, dst: np.ndarray, src: Optional[np.ndarray]
    ) -> Optional[str]:
        """Why copy ``index`` and a leaf the core copies into the same memory ``dst`` from
        ``src`` (``None`` for zeros) are a mismatched tie, or ``None``. Memory viewed as
        another dtype is no tie, and is refused: torch's copy would not keep walk order."""
        dst_t, later = self.copies[index]
        if torch_dtype(dst) != dst_t.dtype:
            return _UNORDERED
        if src is None:
            first = torch.zeros_like(dst_t)
        else:
            # What the core writes there: its own cast (float to integer saturates, where
            # torch's wraps), into a tensor's memory, as the destination is (where casts
            # NumPy would do are torch's, which rounds float64 to float16 otherwise).
            first = torch.empty(dst_t.shape, dtype=dst_t.dtype)
            value = as_numpy(first)
            _fastload.loadmodel([value], [src], None, True, "unsafe", 1, None, False)
        return None if _same_values(first, later, dst_t.dtype) else _MISMATCHED_TIE

    def written_span(self) -> Optional[Tuple[int, int]]:
        """The lowest and past-the-highest address the planned copies write (on any
        device: a span is only compared with other loads' spans), or ``None``."""
        spans = [
            _staging.span_of(dst)
            for dst, _ in self.copies + self.into_tensors
            # (A wrapper tensor, as DTensor is, has no memory of its own to reserve.)
            if dst.layout == torch.strided and dst.data_ptr()
        ]
        spans = [span for span in spans if span is not None]  # (no elements, no bytes)
        if not spans:
            return None
        return min(start for _, start, _ in spans), max(end for _, _, end in spans)

    def run(self, threads: int = 0) -> None:
        """Copies every planned leaf (large transfers between host and GPU through pinned
        buffers, on ``threads`` threads, 0 for the default), then waits for the GPUs.

        The checks cannot foresee a copy that torch itself fails (a tensor subclass whose
        ``copy_`` raises, a GPU out of memory): that raises ``RuntimeError`` naming the
        leaf (or the step: staging, or waiting for the GPU, which name none), and the
        leaves copied before it stay written."""
        # Where a failure happens: the path of the leaf torch is copying, else the step.
        where = _STAGING
        try:
            with torch.no_grad():
                for param, src in self.lazy.values():
                    where = self.paths[id(param)]
                    param.materialize(src.shape)
                    self.copies.append((param.detach(), src))
                    self.paths[id(self.copies[-1][0])] = where
                    self.written.append(param)
                where = _STAGING
                for dst, src in _staging.run(self.copies, threads):
                    where = self.paths[id(dst)]
                    upload = dst.is_cuda and src.device.type == "cpu" and src.is_pinned()
                    dst.copy_(src, non_blocking=upload)
                for dst, src in self.into_tensors:
                    where = self.paths[id(dst)]
                    dst.copy_(src)
            # A GPU reports a failed asynchronous copy only here, naming no tensor.
            where = "waiting for the GPU to finish the copies"
            copied = self.copies + self.into_tensors
            for device in {t.device for pair in copied for t in pair if t.is_cuda}:
                torch.cuda.synchronize(device)
        except Exception as err:
            raise RuntimeError(
                f"{where}: torch's copy failed after the checks had passed, so the leaves "
                f"copied before it stay written: {type(err).__name__}: {err}"
            ) from err
        finally:
            bump_versions(self.written)


def _same_values(first: torch.Tensor, later: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether two sources give the same bits once cast to ``dtype`` (so NaNs match),
    both cast where the first one is; the same memory, read the same way, needs no
    comparison."""
    if (
        first.device == later.device
        and first.data_ptr() == later.data_ptr() != 0
        and first.dtype == later.dtype
        and first.shape == later.shape
        and first.stride() == later.stride()
        and first.is_conj() == later.is_conj()
        and first.is_neg() == later.is_neg()
    ):
        return True
    a = first.to(dtype=dtype)
    b = later.to(device=first.device).to(dtype=dtype)
    return torch.equal(_bits(a), _bits(b))


def _copied_into_like(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """What a copy of ``src`` into the quantized ``dst`` would hold (its bits and
    quantizer, compared by ``torch.equal``), in a new tensor."""
    out = torch.empty_like(dst)
    out.copy_(src)
    return out


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``'s elements as integers of the same size, to compare them bit for bit."""
    tensor = tensor.resolve_conj().resolve_neg()
    if tensor.is_complex():
        tensor = torch.view_as_real(tensor)
    if tensor.is_floating_point():
        return tensor.view(_SAME_SIZE_INT[tensor.element_size()])
    return tensor


_SAME_SIZE_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _owner(x: Any) -> Any:
    """The tensor whose memory ``x`` (a tensor, or a NumPy view of one) is."""
    while isinstance(x, np.ndarray):
        x = x.base
    return x


def bump_versions(written: Any) -> None:
    """Tells autograd that these tensors were written in place (objects that are not
    tensors are skipped)."""
    plain = _PLAIN_TYPES  # asked first: `isinstance` of a `Parameter` runs Python code
    tensors = [t for t in written if type(t) in plain or isinstance(t, torch.Tensor)]
    if _BUMPS_MANY_AT_ONCE:
        if tensors:
            torch.autograd.graph.increment_version(tensors)
    else:
        for tensor in tensors:
            torch.autograd.graph.increment_version(tensor)


def _bumps_many_at_once() -> bool:
    """Whether ``increment_version`` takes a list of tensors; older torch releases take
    one tensor a call."""
    try:
        torch.autograd.graph.increment_version([])
    except (TypeError, RuntimeError):
        return False
    return True


_BUMPS_MANY_AT_ONCE = _bumps_many_at_once()
