"""The types of the public API's arguments, as annotations name them."""

import os
from typing import Any, Callable, Literal, Optional, SupportsIndex, Union

# NumPy's casting rules, by name.
Casting = Literal["no", "equiv", "safe", "same_kind", "unsafe"]

# A file's path: a string or an `os.PathLike` (a `pathlib.Path`).
PathLike = Union[str, os.PathLike[str]]

# `True` (a bar on stderr for large jobs), `False`/`None`, or a callable given
# `(bytes_done, bytes_total)`.
Progress = Union[bool, None, Callable[[int, int], Any]]

# A count of threads (any integer, a NumPy one too), or `None` for the default.
Threads = Optional[SupportsIndex]
