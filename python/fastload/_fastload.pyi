"""The Rust extension module behind fastload (use the functions of ``fastload``)."""

from typing import Any, Callable, Optional

MAX_DEPTH: int

def loadmodel(
    dst: Any,
    src: Any,
    filter: Optional[Callable[[Any], bool]],
    strict: bool,
    casting: str,
    threads: int,
) -> None: ...
def state(x: Any) -> Any: ...
def children(x: Any) -> Any: ...
def default_threads() -> int: ...
