"""The Rust extension module behind fastload (use the functions of ``fastload``)."""

from os import PathLike
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, final

MAX_DEPTH: int

def loadmodel(
    dst: Any,
    src: Any,
    filter: Optional[Callable[[Any], bool]],
    strict: bool,
    casting: str,
    threads: int,
    progress: Optional[Callable[[int, int], object]],
    reserve: bool = True,
) -> List[Tuple[str, List[Any], List[Any]]]: ...
def state(x: Any) -> Any: ...
def children(x: Any) -> Any: ...
def default_threads() -> int: ...
def keys_text(keys: List[Any]) -> str: ...

@final
class MappedFile: ...

def read_safetensors(
    path: PathLike[str] | str,
) -> Tuple[List[Tuple[str, Any]], Optional[Dict[str, str]]]: ...
def write_safetensors(
    path: PathLike[str] | str,
    tensors: List[Tuple[str, str, Any]],
    metadata: Optional[Dict[str, str]],
    progress: Optional[Callable[[int, int], object]],
    max_header: int,
    rename: bool = True,
) -> Optional[Path]: ...
def write_raw(path: PathLike[str] | str, bytes: bytes, rename: bool = True) -> Optional[Path]: ...
def flatten(state: Any, sep: str, everything: bool = False) -> Dict[str, Any]: ...
def unflatten(flat: Any, sep: str) -> Dict[str, Any]: ...
def nest_flat(dst_state: Any, flat: Any, array_types: Any) -> Dict[str, Any]: ...
