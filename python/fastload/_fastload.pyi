"""The Rust extension module behind fastload (use the functions of ``fastload``)."""

from os import PathLike
from typing import Any, Callable, Dict, List, Optional, Tuple

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
) -> None: ...
def state(x: Any) -> Any: ...
def children(x: Any) -> Any: ...
def default_threads() -> int: ...

class MappedFile: ...

def read_safetensors(
    path: PathLike[str] | str,
) -> Tuple[List[Tuple[str, Any]], Optional[Dict[str, str]]]: ...
def write_safetensors(
    path: PathLike[str] | str,
    tensors: List[Tuple[str, str, Any]],
    metadata: Optional[Dict[str, str]],
    progress: Optional[Callable[[int, int], object]],
) -> None: ...
def write_raw(path: PathLike[str] | str, bytes: bytes) -> None: ...
