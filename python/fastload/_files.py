"""Checkpoint files: ``save`` and ``load`` of safetensors files, single or sharded.

A file holds the arrays of ``state(x)`` under their dotted paths, each tied array once.
The rest of the state (numbers, strings, ``None``, ``()``, flags) and the tie table go into
the file's metadata under ``fastload.state`` and ``fastload.ties``, so nothing is lost.
Files are mapped into memory by the Rust core; arrays read from them are read-only views
of the map, so ``loadmodel(dst, path)`` copies straight from the file into ``dst``.
"""

from __future__ import annotations

import bisect
import errno
import json
import os
import re
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Collection, Dict, List, Optional, Tuple, Union

import numpy as np

from . import _fastload
from ._flat import flatten_all, looks_flat, nested_for, node_in_flat_state, unflatten
from ._progress import ProgressFn, reporting
from ._types import PathLike, Progress
from .errors import LoadError

STATE_KEY = "fastload.state"
TIES_KEY = "fastload.ties"
SAVE_ID_KEY = "fastload.save_id"
INDEX_SUFFIX = ".index.json"

# The longest header safetensors reads (its MAX_HEADER_SIZE): a save refuses to write one
# longer, which no reader would open.
MAX_HEADER_BYTES = 100_000_000
# The name a safetensors header gives its metadata, which no tensor can have.
_METADATA_NAME = "__metadata__"

# safetensors dtype names and NumPy's; the ml_dtypes ones are looked up when met.
_NUMPY = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "F64": "float64",
    "I64": "int64",
    "U64": "uint64",
    "C64": "complex64",
}
_ML_DTYPES = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}


class MissingPackage(TypeError):
    """A dtype that NumPy holds only with a package that is not installed."""


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a safetensors dtype name."""
    if name in _NUMPY:
        return np.dtype(_NUMPY[name])
    if name in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError:
            raise MissingPackage(f"dtype {name} needs the ml_dtypes package") from None
        found = getattr(ml_dtypes, _ML_DTYPES[name], None)
        if found is not None:
            return np.dtype(found)
    raise TypeError(f"dtype {name} has no NumPy equivalent")


def safetensors_dtype(dtype: np.dtype) -> str:
    """The safetensors name of a NumPy dtype (native byte order)."""
    for table in (_NUMPY, _ML_DTYPES):
        for key, name in table.items():
            if dtype.name == name:
                return key
    raise TypeError(f"safetensors cannot hold dtype {dtype}")


def is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


# ---- saving ----------------------------------------------------------------


def save(
    path: PathLike,
    x: Any,
    *,
    metadata: Optional[Mapping[str, str]] = None,
    max_shard_size: Optional[int] = None,
    progress: Progress = None,
) -> None:
    """Write ``state(x)`` to ``path`` as a safetensors file (see ``fastload.save``)."""
    # A sharded checkpoint's files are looked up beside its index, as given (a link in a
    # cache folder of links, say): its path is not resolved.
    target = _save_target(path, follow_links=max_shard_size is None)
    with reporting(progress, "fastload: saving") as report:
        _save(target, x, metadata, max_shard_size, report)


def _save_target(path: PathLike, follow_links: bool) -> Path:
    """The file a save writes for ``path``, as ``open(path, "wb")`` would write it: through
    symbolic links (if ``follow_links``), and refused where that is no regular file (a
    folder, a device, a pipe), which renaming a new file over it would replace."""
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"path must be a str or os.PathLike[str], got {type(text).__name__}")
    if text.endswith((os.sep, "/", f"{os.sep}.", "/.")) or text in (".", ".."):
        raise IsADirectoryError(f"{text}: names a folder; save writes a file")
    target = Path(os.path.realpath(text) if follow_links else text)
    if target.is_symlink():
        if follow_links:  # a link `realpath` left: one of a loop of links
            raise OSError(errno.ELOOP, f"{text}: too many levels of symbolic links (a loop)")
        return target  # (not followed: the rename replaces the link)
    if target.is_dir():
        raise IsADirectoryError(f"{text}: is a folder; save writes a file")
    if target.exists() and not target.is_file():
        raise OSError(f"{text}: is not a regular file (a device or a pipe); save writes one")
    if not target.parent.is_dir():
        # The nearest part of the path that exists says which it is.
        found = next((p for p in target.parents if os.path.lexists(p)), None)
        if found is not None and not found.is_dir():
            raise NotADirectoryError(f"{text}: {found} is not a folder")
        raise FileNotFoundError(f"{text}: the folder {target.parent} does not exist")
    return target


def _save(
    path: Path,
    x: Any,
    metadata: Optional[Mapping[str, str]],
    max_shard_size: Optional[int],
    report: Optional[ProgressFn],
) -> None:
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("metadata must map strings to strings")
        for k, v in metadata.items():
            _check_utf8(k, "a metadata key")
            _check_utf8(v, f"the metadata value of {k!r}")
        reserved = [k for k in metadata if k.startswith("fastload.")]
        if reserved:
            raise ValueError(f"metadata keys starting with 'fastload.' are reserved: {reserved}")
    if looks_flat(x):  # a `state_dict`: its keys are the paths already
        node = node_in_flat_state(x)
        if node is not None:
            raise ValueError(
                f"{node!r} holds a {type(x[node]).__name__}: a flat state (dotted keys, as "
                "a state_dict has) is saved under its keys only when it holds leaves only"
            )
        x = unflatten(x)
    flat = flatten_all(x)
    arrays, rest, ties = _split_state(flat)
    # Widest alignment first, as safetensors lays files out: after the header (padded to
    # 8 bytes) every array then starts aligned, as NumPy and torch views of it need.
    arrays.sort(key=lambda entry: -entry[2].dtype.alignment)
    info = dict(metadata or {})
    info[STATE_KEY] = json.dumps(rest)
    info[TIES_KEY] = json.dumps(ties)
    if max_shard_size is None:
        if path.name.endswith(INDEX_SUFFIX):
            raise ValueError(f"{path} names a shard index; pass max_shard_size to shard")
        _fastload.write_safetensors(path, arrays, info, report, MAX_HEADER_BYTES)
        return
    _save_sharded(path, arrays, info, max_shard_size, report)


def _split_state(flat: Dict[str, Any]) -> Tuple[List, Dict[str, Any], Dict[str, str]]:
    """The arrays to store (each memory once), the encoded rest, and the tie table."""
    arrays: List[Tuple[str, str, np.ndarray]] = []
    rest: Dict[str, Any] = {}
    ties: Dict[str, str] = {}
    seen: Dict[tuple, str] = {}
    for key, value in flat.items():
        leaf = _array_leaf(key, value)
        if leaf is None:
            rest[key] = _encode(key, value)
            continue
        identity, values = leaf
        if identity in seen:
            ties[key] = seen[identity]
            continue
        seen[identity] = key
        arrays.append(_stored(key, values()))
    return arrays, rest, ties


# The identity of an array leaf (leaves with the same one are a tie), and how to get its
# values as a NumPy array.
ArrayLeaf = Tuple[tuple, Callable[[], np.ndarray]]


def _array_leaf(key: str, value: Any) -> Optional[ArrayLeaf]:
    """The identity and values of an array or tensor leaf; ``None`` for other leaves."""
    if isinstance(value, np.ndarray):
        return array_identity(value), lambda: value
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return _tensor_leaf(key, value)
    return None


def _tensor_leaf(key: str, value: Any) -> ArrayLeaf:
    import torch  # already imported: `value` is a tensor

    from . import _torch

    if _torch.is_lazy(value):
        raise TypeError(f"{key}: an uninitialized parameter of a lazy module holds no values")
    if value.is_nested:
        raise TypeError(
            f"{key}: a nested tensor cannot be saved, as safetensors holds tensors of one "
            "shape; save its values() and offsets() instead"
        )
    if value.layout != torch.strided:
        kind = "sparse tensor" if "sparse" in str(value.layout) else "tensor"
        raise TypeError(
            f"{key}: a {kind} (layout {value.layout}) cannot be saved, as safetensors holds "
            "dense tensors only; make it dense first (tensor.to_dense())"
        )
    if value.is_meta:
        raise TypeError(f"{key}: a tensor on the meta device holds no values")
    tensor = value.detach()
    if tensor._is_zerotensor():
        tensor = tensor.clone()  # zeros in memory, which torch keeps none for
    refusal = _torch.memory_refusal(tensor)
    if refusal is not None:
        raise TypeError(f"{key}: {refusal}")
    view = _torch.as_numpy(tensor)
    if view is not None:
        return array_identity(view), lambda: view
    # A conjugate or negative view, or a tensor off the CPU: its values are a temporary
    # copy, freed once stored, whose address the next one may reuse. Its identity is
    # the tensor's own.
    return _tensor_identity(tensor), lambda: _copied_to_cpu(key, tensor)


def _tensor_identity(tensor: Any) -> tuple:
    """Tensors with this identity are views of the same memory with the same values."""
    where = str(tensor.device), tensor.data_ptr(), tuple(tensor.shape), tensor.stride()
    return (*where, str(tensor.dtype), tensor.is_conj(), tensor.is_neg())


def _copied_to_cpu(key: str, tensor: Any) -> np.ndarray:
    from . import _torch

    view = _torch.as_numpy(tensor.cpu().resolve_conj().resolve_neg())
    if view is None and tensor.data_ptr() == 0 and tensor.numel() > 0:
        raise TypeError(
            f"{key}: a {type(tensor).__name__} holds no memory of its own (a wrapper tensor, "
            "as a DTensor is): save the plain tensor it stands for (say, its full_tensor())"
        )
    if view is None and _torch.needs_ml_dtypes(tensor.dtype):
        raise TypeError(f"{key}: saving a {tensor.dtype} tensor needs the ml_dtypes package")
    if view is None:
        raise TypeError(f"{key}: safetensors cannot hold a tensor of dtype {tensor.dtype}")
    return view


def array_identity(array: np.ndarray) -> tuple:
    """Arrays with this identity are the same parameter (a tie)."""
    address = array.__array_interface__["data"][0]
    # The dtype itself: `dtype.str` is `<V1` for every float8 type of ml_dtypes.
    return address, array.shape, array.strides, array.dtype


def _check_utf8(text: str, what: str) -> None:
    """Refuses a string a file cannot hold: safetensors headers are UTF-8, and a lone
    surrogate (from a file name read with ``surrogateescape``, say) is none."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{what} cannot be stored in a file: {text!r} holds a lone surrogate, which "
            "UTF-8 has no code for"
        ) from None


def _stored(key: str, array: np.ndarray) -> Tuple[str, str, np.ndarray]:
    """An array as a file stores it: C-contiguous, little-endian, with its dtype name."""
    if key == _METADATA_NAME:
        raise ValueError(
            f"key {key!r} names an array, and safetensors keeps that name for the metadata "
            "of a file; rename it"
        )
    _check_utf8(key, f"key {key!r}")
    # (np.ascontiguousarray would make a 0-d array 1-d.)
    contiguous = array if array.flags.c_contiguous else array.copy(order="C")
    if contiguous.dtype.byteorder == ">":
        contiguous = contiguous.astype(contiguous.dtype.newbyteorder("="))
    try:
        return key, safetensors_dtype(contiguous.dtype), contiguous
    except TypeError as err:
        raise TypeError(f"{key}: {err}") from None


def _encode(key: str, value: Any) -> List[Any]:
    """A plain leaf as a JSON ``[type, value]`` pair."""
    if value is None:
        return ["none", None]
    if isinstance(value, (bool, np.bool_)):
        return ["bool", bool(value)]
    if isinstance(value, str):
        return ["str", str.__str__(value)]  # (np.str_'s own __str__ drops trailing NULs)
    if isinstance(value, bytes):
        return ["bytes", value.hex()]
    # Asked before `float`: np.float64 is one, whose repr names NumPy.
    if isinstance(value, np.generic):
        return _encode_numpy(key, value)
    if isinstance(value, int):
        return ["int", int(value)]
    if isinstance(value, float):
        return ["float", repr(float(value))]
    if isinstance(value, complex):
        return ["complex", [repr(float(value.real)), repr(float(value.imag))]]
    if isinstance(value, tuple) and not value:
        return ["empty", None]
    if isinstance(value, list) and not value:
        return ["empty list", None]
    if isinstance(value, dict) and not value:
        return ["empty dict", None]
    raise TypeError(f"{key}: cannot store a {type(value).__name__} in a checkpoint")


# The kinds of NumPy scalar that `_encode` stores: bools, numbers, text.
_SCALAR_KINDS = "biufcSU"


def _encode_numpy(key: str, value: np.generic) -> List[Any]:
    """A NumPy scalar as its dtype and the Python number it equals (an ``ml_dtypes`` one
    as its safetensors dtype name). Scalars that no Python number holds exactly (long
    doubles) or that are not numbers (dates, records) are refused: ``load`` could not give
    them back."""
    for name, ml_name in _ML_DTYPES.items():
        if value.dtype.name == ml_name and type(value).__module__.startswith("ml_dtypes"):
            return ["numpy", name, ["float", repr(float(value))]]
    item = value.item()
    if value.dtype.kind not in _SCALAR_KINDS or type(item) not in (int, float, complex):
        raise TypeError(
            f"{key}: cannot store a NumPy scalar of dtype {value.dtype} in a checkpoint"
        )
    return ["numpy", value.dtype.str, _encode(key, item)]


def _decode(pair: List[Any]) -> Any:
    kind, value = pair[0], pair[1]
    if kind == "numpy":
        # The number is checked first: a file is as valid without ml_dtypes as with it.
        inner = pair[2]
        if inner[0] == "numpy":
            raise ValueError("a NumPy scalar holds a Python number, not another NumPy scalar")
        if value in _ML_DTYPES and inner[0] != "float":
            raise ValueError(f"a {value} scalar holds a float, not a {inner[0]}")
        number = _decode(inner)
        dtype = numpy_dtype(value) if value in _ML_DTYPES else np.dtype(value)
        if dtype.kind not in _SCALAR_KINDS and value not in _ML_DTYPES:
            raise ValueError(f"a NumPy scalar of dtype {dtype} is not stored by save")
        return dtype.type(number)
    return {
        "none": lambda v: None,
        "bool": bool,
        "int": int,
        "float": float,
        "str": str,
        "bytes": bytes.fromhex,
        "complex": lambda v: complex(float(v[0]), float(v[1])),
        "empty": lambda v: (),
        "empty list": lambda v: [],
        "empty dict": lambda v: {},
    }[kind](value)


def _save_sharded(
    index: Path,
    arrays: List,
    info: Dict[str, str],
    max_shard_size: int,
    report: Optional[ProgressFn],
) -> None:
    if isinstance(max_shard_size, bool) or not isinstance(max_shard_size, int):
        raise TypeError(f"max_shard_size must be an int, got {max_shard_size!r}")
    if max_shard_size < 1:
        raise ValueError(f"max_shard_size must be positive, got {max_shard_size}")
    if not index.name.endswith(INDEX_SUFFIX):
        raise ValueError(f"a sharded checkpoint is named by its index, *{INDEX_SUFFIX}")
    if "total_size" in info:
        raise ValueError("metadata key 'total_size' is the index's own: a sharded save writes it")
    stem = index.name[: -len(INDEX_SUFFIX)].removesuffix(".safetensors")
    old_shards = _shards_of(index, stem)
    # No arrays, no shards: the index holds the whole state (a shard it names no array of
    # would be no file of this checkpoint's).
    shards: List[List] = [[]] if arrays else []
    size = 0
    for entry in arrays:
        nbytes = entry[2].nbytes
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    _refuse_others(index, set(names) - old_shards)
    # Every shard carries the id of its save, so that a load can tell shards of another
    # (say, interrupted) save from this one's.
    save_id = uuid.uuid4().hex
    total = sum(entry[2].nbytes for entry in arrays)
    body = {
        "metadata": dict(info, total_size=str(total), **{SAVE_ID_KEY: save_id}),
        "weight_map": {key: name for name, shard in zip(names, shards) for key, _, _ in shard},
    }
    # The shards and the index are written under temporary names and renamed over the old
    # ones only once all of them are, in one call that Ctrl-C does not cut short: a save
    # that fails or is interrupted before leaves the old checkpoint whole. The index is
    # renamed last. The core appends each temporary file to `temporaries` as it keeps it.
    temporaries: List[Path] = []
    finals = [index.parent / name for name in names] + [index]
    try:
        done = 0
        for final, shard in zip(finals, shards):
            nbytes = sum(entry[2].nbytes for entry in shard)
            shard_info = {"format": "np", SAVE_ID_KEY: save_id}
            report_shard = _shard_report(report, done, nbytes, total)
            _fastload.write_safetensors(
                final, shard, shard_info, report_shard, MAX_HEADER_BYTES, temporaries
            )
            done += nbytes
        _fastload.write_raw(index, json.dumps(body, indent=2).encode(), temporaries)
        _fastload.rename_all(list(zip(temporaries, finals)))
    except BaseException:
        for temporary in temporaries:
            Path(temporary).unlink(missing_ok=True)
        raise
    _remove_stale(index, old_shards - set(names), save_id)


def _refuse_others(index: Path, names: set) -> None:
    """Refuses to write shards over files the old checkpoint at ``index`` does not name:
    another checkpoint's shards, as ``y.index.json`` and ``y.safetensors.index.json`` name
    theirs alike."""
    for name in sorted(names):
        path = index.parent / name
        if path.is_file() or path.is_symlink():
            raise FileExistsError(
                f"{path}: exists and is no shard of the checkpoint at {index} (another "
                f"checkpoint's, say), so the save would overwrite it: remove it, or save "
                f"under another name"
            )


def _remove_stale(index: Path, stale: set, save_id: str) -> None:
    """Removes the old checkpoint's shards that the new index does not name, once the new
    one is in place: only while the index is still this save's (a save beside it may have
    put its own in place since), and as far as they can be (the save itself is done)."""
    try:
        if json.loads(index.read_text(encoding="utf-8"))["metadata"][SAVE_ID_KEY] != save_id:
            return
    except (OSError, ValueError, KeyError, TypeError):
        return
    for name in stale:
        try:
            (index.parent / name).unlink(missing_ok=True)
        except OSError:
            pass  # a folder in its place, say: not the save's to remove


def _shards_of(index: Path, stem: str) -> set:
    """The shards of the checkpoint whose index is at ``index``, if any: those named as a
    sharded save names them (``stem-00001-of-00004.safetensors``); nothing if the index
    cannot be read."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = set(weight_map.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return set()
    pattern = re.compile(re.escape(stem) + r"-\d{5}-of-\d{5}\.safetensors")
    return {name for name in names if isinstance(name, str) and pattern.fullmatch(name)}


def _shard_report(
    report: Optional[ProgressFn], before: int, nbytes: int, total: int
) -> Optional[ProgressFn]:
    """A shard's progress, as part of the whole save's: ``total`` counts the tensors'
    bytes, a shard's own report its header's too, which comes first."""
    if report is None:
        return None

    def shard_report(done: int, shard_total: int) -> None:
        header = shard_total - nbytes
        report(before + max(done - header, 0), total)

    return shard_report


# ---- loading -----------------------------------------------------------------


def read_flat(path: PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """The arrays of a file or a sharded checkpoint under their dotted keys, in file order,
    and its metadata. Every file is opened and checked before this returns."""
    path = Path(os.fspath(path))
    if path.name.endswith(INDEX_SUFFIX):
        return _read_sharded(path)
    arrays, metadata = _fastload.read_safetensors(path)
    return dict(arrays), dict(metadata or {})


def _read_sharded(index: Path) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    if index.exists() and not index.is_file():
        raise _file_error(index, "not a regular file")  # a FIFO would block the read
    try:
        body = json.loads(index.read_text(encoding="utf-8"), object_pairs_hook=_without_repeats)
        if not isinstance(body, dict):
            raise TypeError("not a JSON object")
        weight_map = body["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
        if not all(isinstance(shard, str) for shard in weight_map.values()):
            raise TypeError("weight_map does not map tensor names to file names")
        metadata = {str(k): str(v) for k, v in dict(body.get("metadata") or {}).items()}
    except OSError as err:  # as a missing single file is worded
        raise _file_error(index, f"{err.strerror} (os error {err.errno})") from None
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        raise _file_error(index, f"not a shard index: {err}") from None
    arrays: Dict[str, np.ndarray] = {}
    for shard in dict.fromkeys(weight_map.values()):
        if not _is_file_name(shard):
            raise _file_error(index, f"shard {shard!r} is not a file name in the same folder")
        found, shard_info = _fastload.read_safetensors(index.parent / shard)
        expected = metadata.get(SAVE_ID_KEY)
        if expected is not None and (shard_info or {}).get(SAVE_ID_KEY) != expected:
            raise _file_error(index, f"shard {shard} was written by another save")
        for key, array in found:
            # Every tensor in the one shard the index names for it: one elsewhere too
            # would make the checkpoint's value depend on the reader.
            named = weight_map.get(key)
            if named != shard:
                where = "does not list" if named is None else f"puts in shard {named}"
                reason = f"shard {shard} holds tensor {key!r}, which the index {where}"
                raise _file_error(index, reason)
            arrays[key] = array
    missing = [key for key in weight_map if key not in arrays]
    if missing:
        raise _file_error(index, f"tensors {missing[:10]} are not in the shards it names")
    return {key: arrays[key] for key in weight_map}, metadata


def _is_file_name(name: str) -> bool:
    """Whether ``name`` names a file in a folder: not a path of several parts, nor text
    the file system cannot hold (a lone surrogate escape in the JSON)."""
    try:
        os.fsencode(name)
    except UnicodeEncodeError:
        return False
    return Path(name).name == name and name not in ("", ".", "..")


def _without_repeats(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """A JSON object's entries as a dict, refusing a key listed twice (which readers
    would resolve differently)."""
    entries: Dict[str, Any] = {}
    for key, value in pairs:
        if key in entries:
            raise ValueError(f"{key!r} is listed twice")
        entries[key] = value
    return entries


def _file_error(path: Path, reason: str) -> LoadError:
    return LoadError(f"1 problem; nothing was loaded:\n  {path}: {reason}", [(str(path), reason)])


def load(path: PathLike, *, copy: bool = False) -> Any:
    """The nested state stored at ``path`` (see ``fastload.load``)."""
    return read_checked(path, copy)[2]


def read_checked(
    path: PathLike, copy: bool = False
) -> Tuple[Dict[str, np.ndarray], Dict[str, str], Any]:
    """The arrays of a checkpoint, its tie table and its nested state, or the
    ``LoadError`` of ``load`` for a file that does not hold a state."""
    arrays, metadata = read_flat(path)
    if copy:
        arrays = {key: np.array(a) for key, a in arrays.items()}
    ties = read_ties(path, metadata)
    flat = _tied(path, arrays, ties)
    values = _stored_values(path, metadata, arrays, flat)
    return arrays, ties, _nested(path, {**flat, **values}, values)


def _stored_values(
    path: PathLike,
    metadata: Dict[str, str],
    arrays: Dict[str, Any],
    flat: Dict[str, Any],
    need_values: bool = True,
) -> Dict[str, Any]:
    """The rest of the state that ``save`` kept in the metadata (numbers, strings, ``()``),
    by key, or the ``LoadError`` of a file whose metadata for it is invalid. ``flat``
    holds the keys of the arrays, and of the names tied to them. Without ``need_values``,
    a value whose dtype needs a package not installed is ``None`` rather than refused
    (its key is still one of the file's names)."""
    values = {}
    for key, pair in _metadata_json(path, metadata, STATE_KEY).items():
        if key in flat:
            what = "a tensor" if key in arrays else "tied to a tensor"
            raise _metadata_error(path, f"{STATE_KEY} holds a value for {key!r}, which is {what}")
        try:
            values[key] = _decode(pair)
        except MissingPackage as err:
            if need_values:
                raise _file_error(Path(os.fspath(path)), f"stored value {key!r}: {err}") from None
            values[key] = None
        except (ValueError, KeyError, TypeError, IndexError, OverflowError) as err:
            raise _metadata_error(path, err) from None
    return values


def _nested(path: PathLike, flat: Dict[str, Any], values: Collection[str] = ()) -> Any:
    """A checkpoint's entries nested by their dotted names (``values`` naming those stored
    in its metadata), or the ``LoadError`` of a file whose names are no paths of one tree."""
    try:
        return unflatten(flat)
    except ValueError as err:
        _check_keys(path, flat, values)
        raise _file_error(Path(os.fspath(path)), str(err)) from None


def source_for(dst: Any, path: PathLike) -> Any:
    """What ``loadmodel(dst, path)`` loads from: the file's arrays (ties as shared arrays),
    nested, completed with the parts of ``dst`` that hold no arrays."""
    arrays, metadata = read_flat(path)
    flat = _tied(path, arrays, read_ties(path, metadata))
    # Checked, not used: a file `load` refuses is refused. The destination's own values
    # stand in for these, so a value only a missing package could read is no problem.
    values = _stored_values(path, metadata, arrays, flat, need_values=False)
    _check_keys(path, {**flat, **values}, values)
    try:
        return nested_for(dst, flat)
    except LoadError:
        raise
    except ValueError:
        # The file's names are no paths of one tree (refused, naming the file), or the
        # destination's do not fit them (a key holding a dot, a tied array at a path the
        # file uses for a node): the file's own tree is loaded, and the walk then says
        # where the destination differs from it.
        return _nested(path, flat)


def _check_keys(path: PathLike, flat: Dict[str, Any], values: Collection[str] = ()) -> None:
    """Refuses a file whose keys cannot be the paths of one tree: an empty part (``""``,
    ``"a..b"``), a key that is also the prefix of others (``"a"`` and ``"a.b"``), or one
    that is not text. The safetensors format allows any names; such a file is valid, but
    not a model's state. ``values`` names the keys of values stored in its metadata."""

    def what(key: str) -> str:
        return "stored value" if key in values else "tensor"

    names = sorted(flat)
    for at, key in enumerate(names):
        if not key.isascii() and not _is_text(key):
            reason = f"name {key!r} is not text: it holds a lone surrogate escape"
        elif not key or ".." in key or key[0] == "." or key[-1] == ".":
            reason = f"{what(key)} {key!r} has an empty part in its dotted name"
        else:
            # Names below `key` sort after it, possibly behind others such as "key-2".
            below = bisect.bisect_left(names, key + ".", at + 1)
            if below == len(names) or not names[below].startswith(key + "."):
                continue
            lower = names[below]
            reason = f"{what(lower)} {lower!r} is below {key!r}, which is a {what(key)} itself"
        raise _file_error(Path(os.fspath(path)), reason)


def _is_text(name: str) -> bool:
    """Whether ``name`` is text that UTF-8 can hold (JSON can escape lone surrogates)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _tied(path: PathLike, arrays: Dict[str, Any], ties: Dict[str, str]) -> Dict[str, Any]:
    """``arrays`` and each tied key, holding its first key's array."""
    flat: Dict[str, Any] = dict(arrays)
    for key, first in ties.items():
        if key in arrays:
            reason = f"{TIES_KEY} ties {key!r} to {first!r}, yet {key!r} is a tensor itself"
            raise _metadata_error(path, reason)
        if first not in arrays:
            raise _metadata_error(path, KeyError(first))
        flat[key] = arrays[first]
    return flat


def read_ties(path: PathLike, metadata: Dict[str, str]) -> Dict[str, str]:
    """The tie table of a checkpoint's metadata: each tied key and its first key."""
    ties = _metadata_json(path, metadata, TIES_KEY)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in ties.items()):
        raise _metadata_error(path, TypeError(f"{TIES_KEY} does not map names to names"))
    return ties


def _metadata_json(path: PathLike, metadata: Dict[str, str], key: str) -> Dict[str, Any]:
    """The JSON object stored under ``key`` (an empty one if absent)."""
    try:
        value = json.loads(metadata.get(key, "{}"))
    except (ValueError, RecursionError) as err:
        raise _metadata_error(path, err) from None
    if not isinstance(value, dict):
        raise _metadata_error(path, TypeError(f"{key} is not a JSON object"))
    return value


def _metadata_error(path: PathLike, err: Union[Exception, str]) -> LoadError:
    reason = err if isinstance(err, str) else repr(err)
    return _file_error(Path(os.fspath(path)), f"its fastload metadata is invalid: {reason}")
