"""Hostile inputs: objects that raise, lie or change while the walk reads them.

Each case builds ``(dst, src)``, or ``(dst, src, options)`` for ``loadmodel``'s keyword
arguments, or ``(dst, src, options, watched)`` with the arrays to check when ``dst``'s own
cannot be read safely. ``loadmodel(dst, src)`` must end in a ``LoadError`` (or succeed
where ``test_hostile`` says so) with ``dst`` unchanged, and never crash.
``test_hostile.py`` runs every case in a fresh interpreter, so that a crash is caught.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def arrays(value: float = 0.0):
    return {"w": np.full((3, 3), value), "b": np.full(3, value)}


class RaisingGetattr:
    def __init__(self):
        object.__getattribute__(self, "__dict__")["w"] = np.zeros(3)

    def __getattribute__(self, name):
        raise RuntimeError(f"no attribute for you: {name}")


class LyingKeys(Mapping):
    """Its keys are ``listed``, whatever ``__getitem__`` has: by default, one it does not."""

    def __init__(self, listed=("w", "ghost")):
        self.data, self.listed = {"w": np.ones(3)}, listed

    def __getitem__(self, k):
        return self.data[k]

    def __iter__(self):
        return iter(self.listed)

    def __len__(self):
        return len(self.listed)


class KeysNotIterable(Mapping):
    def __getitem__(self, k):
        raise KeyError(k)

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def keys(self):
        return 42


class GrowingMapping(Mapping):
    """Each read adds a key: its size changes during the walk."""

    def __init__(self):
        self.data = {"w": np.ones(3)}

    def __getitem__(self, k):
        self.data[f"k{len(self.data)}"] = np.ones(3)
        return self.data[k]

    def __iter__(self):
        return iter(list(self.data))

    def __len__(self):
        return len(self.data)


class RaisingIter(list):
    def __iter__(self):
        raise RuntimeError("cannot iterate")


class LyingLen(list):
    def __len__(self):
        return 1000


class BadHash(str):
    """Hashable once (to go into its dict), then never again."""

    hashed = False

    def __hash__(self):
        if BadHash.hashed:
            raise RuntimeError("no hash")
        BadHash.hashed = True
        return str.__hash__(self)


class Resizer:
    """A property that resizes an array the walk planned before it."""

    def __init__(self, victim):
        self.victim = victim

    @property
    def later(self):
        self.victim.resize(10**6, refcheck=False)
        return np.zeros(3)


class Freer:
    """Its registered children function drops the tree's only reference to an array
    planned before it."""

    def __init__(self, holder):
        self.holder = holder

    def children(self):
        self.holder.clear()
        import gc

        gc.collect()
        return {"later": np.zeros(3)}


class RaisingArrayAttr(np.ndarray):
    def __getattribute__(self, name):
        if name in ("shape", "dtype", "strides", "__array_interface__"):
            raise RuntimeError("no")
        return super().__getattribute__(name)


class RaisingBool:
    def __bool__(self):
        raise RuntimeError("no truth")


class MutatingFilter:
    def __init__(self, tree):
        self.tree = tree

    def __call__(self, child):
        self.tree.clear()
        return True


def case_raising_getattr():
    return {"m": RaisingGetattr()}, {"m": {"w": np.ones(3)}}


def case_lying_keys_src():
    return {"w": np.zeros(3), "ghost": np.zeros(3)}, LyingKeys()


def case_lying_keys_dst():
    return LyingKeys(), {"w": np.zeros(3), "ghost": np.zeros(3)}


def case_keys_not_iterable():
    return {"m": KeysNotIterable()}, {"m": {}}


def case_growing_mapping():
    return GrowingMapping(), {"w": np.zeros(3)}


def case_raising_iter():
    return RaisingIter([np.zeros(3)]), [np.ones(3)]


def case_lying_len():
    return LyingLen([np.zeros(3)]), [np.ones(3)]


def case_bad_hash_key():
    return {BadHash("w"): np.zeros(3)}, {"w": np.ones(3)}


def case_self_reference():
    a = {"w": np.zeros(3)}
    a["self"] = a
    b = {"w": np.ones(3)}
    b["self"] = b
    return a, b


def case_mutual_reference():
    a, b = {"w": np.zeros(3)}, {"w": np.zeros(3)}
    a["other"], b["other"] = b, a
    c, d = {"w": np.ones(3)}, {"w": np.ones(3)}
    c["other"], d["other"] = d, c
    return a, c


def case_deep_nesting():
    dst, src = np.zeros(3), np.ones(3)
    for _ in range(200_000):
        dst, src = [dst], [src]
    return dst, src


class Chain:
    """Reads ``value`` through ``depth`` nested property calls, each on the C stack."""

    def __init__(self, depth, value):
        self.depth, self.end = depth, value

    @property
    def value(self):
        return Chain(self.depth - 1, self.end).value if self.depth else self.end


class CallingMapping(Mapping):
    """Each read nests 150 calls through Python properties: stack a walk must leave."""

    def __init__(self, child):
        self.child = child

    def __getitem__(self, k):
        return {"c": Chain(150, self.child).value}[k]

    def __iter__(self):
        return iter(["c"])

    def __len__(self):
        return 1


def case_deep_mapping_whose_reads_nest_python_calls():
    leaf = dst = np.zeros(3)
    src = np.ones(3)
    for _ in range(10_000):
        dst, src = CallingMapping(dst), CallingMapping(src)
    return dst, src, {}, [leaf]


def case_resized_by_property():
    victim = np.zeros(3)
    return {"a": victim, "b": Resizer(victim)}, {"a": np.ones(3), "b": {"later": np.ones(3)}}


def case_freed_by_children_function():
    import fastload

    fastload.register(Freer, Freer.children)
    holder = {"x": np.zeros(1000)}
    dst = {"a": holder, "b": Freer(holder)}
    return dst, {"a": {"x": np.ones(1000)}, "b": {"later": np.ones(3)}}, {}, []


def case_raising_array_attributes():
    return {"w": np.zeros(3).view(RaisingArrayAttr)}, {"w": np.ones(3)}


def case_raising_bool_source():
    return {"w": np.zeros(3)}, {"w": RaisingBool()}


def case_self_overlapping_destination():
    base = np.zeros(3)
    dst = np.lib.stride_tricks.as_strided(base, shape=(4,), strides=(0,), writeable=True)
    return {"w": dst}, {"w": np.arange(4.0)}


def case_strides_outside_memory():
    base = np.zeros(3)
    dst = np.lib.stride_tricks.as_strided(base, shape=(3,), strides=(2**62,), writeable=True)
    return {"w": dst}, {"w": np.ones(3)}, {}, [base]


def case_object_dtype_fields():
    dst = np.zeros(2, dtype=[("a", "f8"), ("o", "O")])
    return {"w": dst}, {"w": np.ones(2)}


def case_generator_children():
    import fastload

    class Gen:
        pass

    fastload.register(Gen, lambda g: (x for x in [np.zeros(3)]))
    return {"g": Gen()}, {"g": [np.ones(3)]}


def case_huge_shape_mismatch():
    return {"w": np.zeros((2, 3))}, {"w": np.broadcast_to(np.ones(1), (2**40,))}


class ClearingKey:
    """A key whose ``__eq__`` empties the destination dict it is looked up for."""

    def __init__(self, name, victim):
        self.name, self.victim = name, victim

    def __hash__(self):
        return hash(self.name)

    def __eq__(self, other):
        self.victim.clear()
        return isinstance(other, ClearingKey) and other.name == self.name


def case_key_eq_clears_the_destination_dict():
    dst = {}
    watched = [np.zeros(3), np.zeros(3)]
    dst.update({ClearingKey("a", dst): watched[0], ClearingKey("b", dst): watched[1]})
    src = {ClearingKey("a", dst): np.ones(3), ClearingKey("b", dst): np.ones(3)}
    return dst, src, {}, watched


def case_mapping_lists_a_key_twice():
    return {"w": np.zeros(3)}, LyingKeys(listed=("w", "w"))


def case_read_only_destination():
    dst = np.zeros(3)
    dst.flags.writeable = False
    return {"w": dst}, {"w": np.ones(3)}


def case_mutating_filter():
    dst = {"a": arrays(), "b": arrays()}
    return dst, {"a": arrays(1.0), "b": arrays(1.0)}, {"filter": MutatingFilter(dst)}


def case_missing_file():
    return {"w": np.zeros(3)}, "/nonexistent/model.safetensors"


def case_truncated_file():
    import os
    import tempfile

    import fastload

    path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    fastload.save(path, {"w": np.ones(1000)})
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)
    return {"w": np.zeros(1000)}, path


CASES = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}
