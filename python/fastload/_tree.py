"""The child view of Python objects, and the registry that extends it.

``dict``, ``list``, ``tuple``, NumPy arrays and Python scalars are recognised inside the
Rust core. Every other type is classified here, once per type and call, by ``node_kind``.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import enum
import functools
import inspect
import sys
import types
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

# Codes shared with src/py/kinds.rs.
OPAQUE, DATA, BOOL, MAPPING, ATTRIBUTES, FIELDS, NAMEDTUPLE, SEQUENCE = range(8)
CUSTOM, TENSOR, MODULE = range(8, 11)

ChildrenFn = Callable[[Any], Any]

_children_fns: Dict[type, ChildrenFn] = {}
_leaf_types: set = set()

_DATA_TYPES = (bool, int, float, complex, str, bytes, type(None), np.generic)
_OPAQUE_TYPES = (
    type,  # classes
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ModuleType,
    functools.partial,
    np.ufunc,
    np.vectorize,
    enum.Enum,
    staticmethod,
    classmethod,
    property,
    functools.partialmethod,
)

# Values of the standard library that hold no parameters, whose attributes are their
# implementation (a cache, a lock, a manager of every logger): leaves, as functions are.
# Named by module, and looked up only in modules already imported.
_LIBRARY_VALUES = (
    ("pathlib", "PurePath"),
    ("logging", "Logger"),
    ("logging", "LoggerAdapter"),
    ("functools", "_lru_cache_wrapper"),
    ("random", "Random"),
    ("fractions", "Fraction"),
    ("decimal", "Decimal"),
    ("uuid", "UUID"),
    ("io", "IOBase"),
    ("datetime", "date"),
    ("datetime", "time"),
    ("datetime", "timedelta"),
    ("datetime", "tzinfo"),
    ("re", "Pattern"),
)


# The modules that define them (and their subclasses of their own, as `PosixPath`), by
# their top-level name: a class of the user's that derives from one is walked as usual.
_LIBRARY_MODULES = frozenset(
    ["pathlib", "logging", "functools", "random", "fractions", "uuid", "re", "_sre"]
    + ["decimal", "_decimal", "_pydecimal", "io", "_io", "_pyio"]
    + ["datetime", "_datetime", "_pydatetime", "zoneinfo", "_zoneinfo"]
)


def _is_library_value(tp: type) -> bool:
    if tp.__module__.partition(".")[0] not in _LIBRARY_MODULES:
        return False
    for module, name in _LIBRARY_VALUES:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(tp, cls):
            return True
    return False


def register(cls: type, children: ChildrenFn) -> None:
    """Make instances of ``cls`` (and its subclasses) nodes whose children ``children`` gives.

    ``children(obj)`` returns a dict (a keyed node), a list or tuple (a sequence node) or
    ``None`` (a leaf). Registering replaces any earlier registration of ``cls``.

    >>> import fastload
    >>> class Pair:
    ...     def __init__(self, a, b):
    ...         self.a, self.b, self.cache = a, b, {}
    >>> fastload.register(Pair, children=lambda p: {"a": p.a, "b": p.b})
    >>> fastload.children(Pair(1, 2))
    {'a': 1, 'b': 2}
    """
    _check_registrable(cls, "register")
    if not callable(children):
        raise TypeError(f"children must be callable, got {children!r}")
    _leaf_types.discard(cls)
    _children_fns[cls] = children


def register_leaf(cls: type) -> None:
    """Make instances of ``cls`` (and its subclasses) plain leaves, never walked into.

    >>> import fastload
    >>> class Config:
    ...     def __init__(self):
    ...         self.lr = 0.1
    >>> fastload.register_leaf(Config)
    >>> fastload.children(Config()) is None
    True
    """
    _check_registrable(cls, "register_leaf")
    _children_fns.pop(cls, None)
    _leaf_types.add(cls)


# Types the walk knows before it looks at what is registered: exactly these (their
# subclasses may be registered), and arrays of any class.
_BUILT_IN_KINDS = (dict, list, tuple, bool, int, float, complex, str, bytes, type(None))


def _check_registrable(cls: Any, function: str) -> None:
    """Refuses what ``register`` and ``register_leaf`` could not honour."""
    if not isinstance(cls, type):
        raise TypeError(f"{function}() needs a class, got {cls!r}")
    if cls in _BUILT_IN_KINDS:
        # (`bool` and `NoneType` have no subclasses.)
        hint = f"; register a subclass of {cls.__name__} instead" if _subclassable(cls) else ""
        raise TypeError(
            f"{function}() cannot change how a {cls.__name__} is walked, which is fixed{hint}"
        )
    if issubclass(cls, np.ndarray):
        raise TypeError(
            f"{function}() cannot change how a {cls.__name__} is walked: NumPy arrays of "
            "every class are array leaves"
        )


def _subclassable(cls: type) -> bool:
    return bool(cls.__flags__ & _BASETYPE)


# The type flag of classes that may be subclassed (`Py_TPFLAGS_BASETYPE`).
_BASETYPE = 1 << 10


def _slot_names(tp: type) -> Tuple[str, ...]:
    names = []
    for base in reversed(tp.__mro__):
        slots = base.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        for slot in slots:
            if slot in ("__dict__", "__weakref__"):
                continue
            owner = base.__name__.lstrip("_")
            if slot.startswith("__") and not slot.endswith("__") and owner:
                slot = f"_{owner}{slot}"  # name mangling (none in a class named "_")
            if slot not in names:
                names.append(slot)
    return tuple(names)


def node_kind(tp: type) -> Tuple[int, Optional[object], bool]:
    """How instances of ``tp`` are walked: a code above, its payload, and whether telling
    that, or reading their children, may run Python code of the user's (which could change
    arrays already planned, so the load checks them again before copying)."""
    code, payload = _kind(tp)
    runs_code = _classifying_runs_user_code(tp) or _runs_user_code(tp, code, payload)
    return code, payload, runs_code


# Modules whose metaclasses and abstract base classes run no code of the user's.
_OWN_HOOKS = frozenset({"abc", "builtins", "collections", "enum", "numpy", "torch", "typing"})


def _classifying_runs_user_code(tp: type) -> bool:
    """Whether telling ``tp``'s kind may have run code of the user's: its metaclass's
    attribute hooks, a ``__subclasshook__`` of a Mapping subclass (which ``issubclass(tp,
    Mapping)`` asks), or iterating a ``__slots__`` that is no string, tuple or list."""
    if _package(type(tp)) not in _OWN_HOOKS:
        return True
    for base in tp.__mro__:
        if any(type(name) is not str for name in base.__dict__):
            return True  # an attribute lookup may meet that key, and run its `__eq__`
        slots = base.__dict__.get("__slots__", ())
        if type(slots) not in (str, tuple, list):
            return True
        if type(slots) is not str and any(type(name) is not str for name in slots):
            return True  # (a `str` subclass hashes its own way when looked up)
    return Mapping not in tp.__mro__ and _user_mapping_hooks()


def _package(cls: type) -> str:
    """The top-level package a class was defined in; ``""`` for one that says none."""
    module = _TYPE_MODULE.__get__(cls)  # (type's own: a metaclass's hooks do not run)
    return module.partition(".")[0] if type(module) is str else ""


_TYPE_MODULE = type.__dict__["__module__"]


def _user_mapping_hooks() -> bool:
    """Whether a Mapping subclass of the user's, or a class registered as one, decides
    subclass checks itself (``issubclass`` asks each of them)."""
    seen, todo = set(), [Mapping]
    while todo:
        cls = todo.pop()
        for sub in [*type.__subclasses__(cls), *_registered(cls)]:
            if id(sub) in seen:  # (by id: a metaclass may hash classes its own way)
                continue
            seen.add(id(sub))
            # Asked first, since it computes their attributes: a class of `type` (a
            # registered built-in) answers by its bases alone; ABCMeta asks hooks.
            if type(sub) is type:
                continue
            if type(sub) is not abc.ABCMeta:
                return True
            todo.append(sub)
            if "__subclasshook__" in sub.__dict__ and _package(sub) not in _OWN_ABCS:
                return True
    return False


# Modules whose abstract classes' `__subclasshook__`s run no code of the user's.
_OWN_ABCS = _OWN_HOOKS | {"_collections_abc"}


def _registered(cls: type) -> List[type]:
    """The classes registered with the abstract class ``cls`` (``cls.register``)."""
    if _get_dump is None:  # the pure-Python implementation keeps its registry on the class
        refs = getattr(cls, "_abc_registry", ())
    else:
        refs = _get_dump(cls)[0] if isinstance(cls, abc.ABCMeta) else ()
    return [c for c in (ref() for ref in refs) if c is not None]


try:  # the C implementation's view of its registry, imported once: it is asked per class
    from _abc import _get_dump
except ImportError:
    _get_dump = None


def _kind(tp: type) -> Tuple[int, Optional[object]]:
    for base in tp.__mro__:
        if base in _children_fns:
            return CUSTOM, _children_fns[base]
        if base in _leaf_types:
            return OPAQUE, None
    torch_kind = _torch_kind(tp)
    if torch_kind is not None:
        return torch_kind
    if issubclass(tp, np.bool_):
        return BOOL, None
    if issubclass(tp, _DATA_TYPES):
        return DATA, None
    if issubclass(tp, _OPAQUE_TYPES) or _is_library_value(tp):
        return OPAQUE, None
    if issubclass(tp, Mapping):
        return MAPPING, None
    if issubclass(tp, tuple) and isinstance(getattr(tp, "_fields", None), tuple):
        return NAMEDTUPLE, tuple(tp._fields)
    if dataclasses.is_dataclass(tp):
        return FIELDS, tuple(f.name for f in dataclasses.fields(tp))
    if issubclass(tp, (list, tuple)):
        return SEQUENCE, None
    slots = _slot_names(tp)
    if getattr(tp, "__dictoffset__", 0) != 0:
        if slots:
            # Slots and a `__dict__` (a class without `__slots__` below one with them):
            # read by a function, as the core reads one or the other.
            return CUSTOM, functools.partial(_slots_and_attributes, slots)
        return ATTRIBUTES, None
    if slots:
        return FIELDS, slots
    return OPAQUE, None


def _slots_and_attributes(slots: Tuple[str, ...], obj: Any) -> Dict[str, Any]:
    """The set slots of ``obj``, then its attributes (``vars(obj)``)."""
    children = {}
    for name in slots:
        try:
            children[name] = getattr(obj, name)
        except AttributeError:
            pass  # a slot not set
    for name, value in vars(obj).items():
        children.setdefault(name, value)
    return children


def _torch_kind(tp: type) -> Optional[Tuple[int, Optional[object]]]:
    """Tensors are array leaves and modules keyed nodes. Only a type of an already
    imported torch can be one, so torch is never imported here."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "Tensor"):
        return None
    if issubclass(tp, torch.Tensor):
        return TENSOR, None
    nn = getattr(torch, "nn", None)
    if nn is not None and issubclass(tp, nn.Module):
        from . import _torch

        if _torch.saves_its_own_layout(tp):
            return CUSTOM, _torch.own_layout_children
        # Read by the Rust core from the module's own dicts, with this as the fallback.
        return MODULE, _torch.module_children
    return None


# Attribute lookups that run no Python code: object's, and that of built-in types that
# give themselves the same lookup under their own name.
_PLAIN_GETATTRIBUTE = (object.__getattribute__, types.SimpleNamespace.__getattribute__)

# (Not `types.MappingProxyType`: a proxy reads whatever mapping it wraps, maybe the user's.)
_C_MAPPINGS = (dict, collections.OrderedDict, collections.defaultdict)


def _runs_user_code(tp: type, code: int, payload: Optional[object]) -> bool:
    if code == CUSTOM:
        return True
    if code == TENSOR:  # a subclass's methods, or `__torch_function__`, are its own
        return _package(tp) != "torch"  # (torch's own, as DTensor and Parameter, are not)
    if code == MODULE:  # its `__dict__` is read, maybe through hooks of its own
        plain = tp.__getattribute__ is object.__getattribute__
        return not plain or not isinstance(
            inspect.getattr_static(tp, "__dict__", None), _SLOT_TYPES
        )
    if code == MAPPING:
        return tp not in _C_MAPPINGS
    if code == SEQUENCE:
        return tp.__iter__ not in (list.__iter__, tuple.__iter__)
    if code in (ATTRIBUTES, FIELDS):
        if not any(tp.__getattribute__ is plain for plain in _PLAIN_GETATTRIBUTE):
            return True
        if code == ATTRIBUTES:
            # The attributes are read through `__dict__`, which may itself be computed.
            return not isinstance(inspect.getattr_static(tp, "__dict__", None), _SLOT_TYPES)
        if getattr(tp, "__getattr__", None) is not None:
            return True  # what `getattr` calls for a field that is not set
        return any(_is_computed(tp, name) for name in payload)
    return False


# How an object's own `__dict__` and slots are read: descriptors of C, which run no code.
_SLOT_TYPES = (types.GetSetDescriptorType, types.MemberDescriptorType)


def _is_computed(tp: type, name: str) -> bool:
    """Whether reading attribute ``name`` runs code: a property or another data descriptor
    written in Python (slots' member descriptors are not)."""
    for base in tp.__mro__:
        if name in base.__dict__:
            attr = base.__dict__[name]
            # (Asked of its class: `hasattr` could run the attribute's own `__getattr__`.)
            has_get = any("__get__" in vars(k) for k in type(attr).__mro__)
            return has_get and not isinstance(attr, types.MemberDescriptorType)
    return False
