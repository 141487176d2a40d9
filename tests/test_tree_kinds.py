"""SPEC sections 1 and 3: the child view of every kind of object, and state."""

from __future__ import annotations

import dataclasses
import functools
import types
from collections import OrderedDict, namedtuple
from typing import NamedTuple

import numpy as np
import pytest

import fastload


@dataclasses.dataclass
class Linear:
    weight: np.ndarray
    bias: object
    act: object = np.tanh


Point = namedtuple("Point", ["x", "y"])


class Typed(NamedTuple):
    w: np.ndarray
    scale: float


class Slotted:
    __slots__ = ("w", "__hidden", "unset")

    def __init__(self, w):
        self.w = w
        self.__hidden = np.zeros(1)


class Plain:
    def __init__(self, w):
        self.w = w
        self.name = "plain"


@pytest.mark.parametrize(
    "obj,expected",
    [
        (np.zeros(2), None),
        (True, None),
        (3, None),
        (2.5, None),
        (1j, None),
        ("s", None),
        (b"b", None),
        (None, None),
        (np.float32(1), None),
        (np.tanh, None),
        (len, None),
        (lambda x: x, None),
        (Plain, None),
        (types, None),
        ([1, 2], (1, 2)),
        ((1,), (1,)),
        ({"a": 1}, {"a": 1}),
        (OrderedDict(b=1, a=2), {"b": 1, "a": 2}),
        (types.MappingProxyType({"k": 1}), {"k": 1}),
        (Point(1, 2), {"x": 1, "y": 2}),
        (Typed(1, 2.0), {"w": 1, "scale": 2.0}),
        (Linear(1, False), {"weight": 1, "bias": False, "act": np.tanh}),
        (Plain(1), {"w": 1, "name": "plain"}),
    ],
    ids=repr,
)
def test_children_of_each_kind(obj, expected):
    got = fastload.children(obj)
    if expected is None:
        assert got is None
    else:
        assert got == expected and type(got) is type(expected)


def test_slots_children_are_the_set_slots_with_mangled_names():
    got = fastload.children(Slotted(5))
    assert set(got) == {"w", "_Slotted__hidden"}


class SlottedBase:
    __slots__ = ("weight", "unset")


class WithDict(SlottedBase):
    def __init__(self, value):
        self.weight = np.full(3, value)
        self.act = "relu"


def test_an_object_with_slots_and_a_dict_is_keyed_by_both(snapshot):
    assert list(fastload.children(WithDict(0.0))) == ["weight", "act"]
    model = WithDict(0.0)
    fastload.loadmodel(model, WithDict(1.0))
    np.testing.assert_array_equal(model.weight, 1.0)
    assert list(fastload.state(model)) == ["weight", "act"]
    before = snapshot(model)
    with pytest.raises(fastload.ArgumentError, match=r"missing keys \['weight'\]"):
        fastload.loadmodel(model, {"act": "relu"})
    before.assert_unchanged()


@pytest.mark.parametrize(
    "cls", [list, tuple, dict, bool, int, float, complex, str, bytes, type(None), np.ndarray]
)
@pytest.mark.parametrize("register", ["register", "register_leaf"])
def test_types_whose_walk_is_fixed_cannot_be_registered(cls, register):
    arguments = (cls, lambda x: None) if register == "register" else (cls,)
    with pytest.raises(TypeError, match="cannot change how") as info:
        getattr(fastload, register)(*arguments)
    # Only a class that may be subclassed is named as the way out.
    assert ("register a subclass" in str(info.value)) == (cls not in (bool, type(None), np.ndarray))
    with pytest.raises(TypeError, match="NumPy arrays of every class"):
        getattr(fastload, register)(*((np.matrix,) + arguments[1:]))


def test_register_and_register_leaf():
    class Block:
        def __init__(self):
            self.w = np.zeros(2)
            self.cache = {"junk": np.zeros(9)}

    class SubBlock(Block):
        pass

    fastload.register(Block, children=lambda b: {"w": b.w})
    assert set(fastload.children(SubBlock())) == {"w"}
    b = Block()
    fastload.loadmodel(b, {"w": np.ones(2)})
    np.testing.assert_array_equal(b.w, 1)
    fastload.register_leaf(Block)
    assert fastload.children(Block()) is None
    with pytest.raises(TypeError):
        fastload.register("Block", children=lambda b: None)
    with pytest.raises(TypeError):
        fastload.register(Block, children=3)


def test_loadmodel_through_every_kind_of_node():
    model = {
        "lin": Linear(np.zeros((2, 2)), np.zeros(2)),
        "pt": Point(np.zeros(1), np.zeros(1)),
        "nt": Typed(np.zeros(3), 1.0),
        "slots": Slotted(np.zeros(2)),
        "obj": Plain(np.zeros(1)),
        "od": OrderedDict(a=np.zeros(1)),
    }
    src = {
        "lin": {"weight": np.ones((2, 2)), "bias": np.ones(2), "act": None},
        "pt": {"x": np.ones(1), "y": np.ones(1)},
        "nt": {"w": np.ones(3), "scale": 9.0},
        "slots": {"w": np.ones(2), "_Slotted__hidden": np.ones(1)},
        "obj": {"w": np.ones(1), "name": "other"},
        "od": {"a": np.ones(1)},
    }
    fastload.loadmodel(model, src)
    for array in (
        model["lin"].weight,
        model["pt"].x,
        model["nt"].w,
        model["slots"].w,
        model["obj"].w,
        model["od"]["a"],
    ):
        assert np.all(array == 1)
    assert model["nt"].scale == 1.0 and model["obj"].name == "plain"


def test_state_converts_nodes_and_keeps_arrays_and_data():
    w = np.zeros(2)
    model = [Linear(w, False), Point(w, 3), (np.tanh, "s", None, np.float32(2), 1j, b"x")]
    st = fastload.state(model)
    assert st[0] == {"weight": w, "bias": False, "act": ()}
    assert st[0]["weight"] is w and st[1]["x"] is w and st[1]["y"] == 3
    assert st[2] == ((), "s", None, np.float32(2), 1j, b"x")
    assert type(st) is list and type(st[2]) is tuple


def test_state_of_plain_data_is_itself():
    data = {"a": [1, 2.5, (None, "x")], "b": {"c": True}, 3: b"y"}
    assert fastload.state(data) == data


def test_state_of_a_dict_or_attributes_is_a_new_dict_in_the_same_order():
    w, v = np.zeros(2), np.ones(3)
    inner = {"w": w}
    plain = Plain(v)
    plain.act, plain.rate, plain.sub = np.tanh, 0.5, {"v": v, "f": len}
    tree = {"z": w, "a": inner, 3: "three", "m": plain, "none": None, "obj": plain}
    st = fastload.state(tree)
    assert list(st) == ["z", "a", 3, "m", "none", "obj"]
    assert st["z"] is w and st["a"] == {"w": w} and st["a"] is not inner
    assert st["m"] == {"w": v, "name": "plain", "act": (), "rate": 0.5, "sub": {"v": v, "f": ()}}
    assert list(st["m"]) == ["w", "name", "act", "rate", "sub"] and st["m"]["w"] is v
    assert st["obj"] is st["m"] and type(st) is dict and type(st["m"]) is dict
    # The state is the caller's: changing it leaves the model as it was.
    st["a"]["w"] = None
    st["m"]["extra"] = 1
    assert inner["w"] is w and not hasattr(plain, "extra") and plain.act is np.tanh


def test_state_reads_a_dict_once_whatever_user_code_does_to_it_meanwhile():
    class Clearing:
        pass

    w = np.zeros(2)
    tree = {"a": Clearing(), "b": w, "c": {"x": w}}
    owner = Plain(w)
    owner.c = Clearing()

    def children(_):
        tree.clear()
        vars(owner).clear()
        return {"k": w}

    fastload.register(Clearing, children=children)
    assert fastload.state(tree) == {"a": {"k": w}, "b": w, "c": {"x": w}}
    owner.w, owner.name, owner.c = w, "plain", Clearing()
    assert fastload.state(owner) == {"w": w, "name": "plain", "c": {"k": w}}


def test_state_keeps_shared_arrays_and_nodes_shared():
    shared = Plain(np.zeros(2))
    st = fastload.state({"a": shared, "b": shared})
    assert st["a"] is st["b"]
    assert st["a"]["w"] is shared.w


def test_loadmodel_from_the_state_of_another_model():
    a = [Linear(np.zeros((2, 3)), np.zeros(2)), Linear(np.zeros((3, 3)), False)]
    b = [Linear(np.ones((2, 3)), np.full(2, 2.0)), Linear(np.full((3, 3), 3.0), False)]
    fastload.loadmodel(a, fastload.state(b))
    np.testing.assert_array_equal(a[0].bias, 2)
    np.testing.assert_array_equal(a[1].weight, 3)
    assert a[1].bias is False


def test_an_exception_of_a_children_function_in_state_names_its_path():
    class Broken:
        pass

    def children(_):
        raise ValueError("no children today")

    fastload.register(Broken, children)
    with pytest.raises(fastload.ArgumentError) as info:
        fastload.state({"layers": [np.zeros(2), Broken()]})
    assert info.value.problems == [
        ("layers.1", "cannot walk this node: ValueError: no children today")
    ]


class Unlistable:
    """An object whose attributes cannot be read (a proxy, say)."""

    @property
    def __dict__(self):
        raise RuntimeError("no attributes here")


@pytest.mark.parametrize("dst_leaf", [0.5, len], ids=["number", "function"])
def test_any_source_loads_into_a_leaf_that_is_not_an_array_unread(dst_leaf):
    dst = {"act": dst_leaf, "w": np.zeros(2)}
    fastload.loadmodel(dst, {"act": Unlistable(), "w": np.ones(2)})
    assert dst["act"] is dst_leaf and dst["w"].tolist() == [1.0, 1.0]


def test_a_state_that_cannot_be_taken_says_so():
    tree = {}
    tree["x"] = tree
    with pytest.raises(fastload.ArgumentError) as info:
        fastload.state(tree)
    assert str(info.value).startswith("1 problem; no state was taken:")
    assert info.value.problems[0][0] == "x"


def test_a_state_that_cannot_be_taken_lists_every_node_in_the_way():
    tree = {"a": [Unlistable(), np.zeros(1)], "b": {}, "c": Unlistable()}
    tree["b"]["loop"] = tree
    with pytest.raises(fastload.ArgumentError) as info:
        fastload.state(tree)
    assert str(info.value).startswith("3 problems; no state was taken:")
    assert [path for path, _ in info.value.problems] == ["a.0", "b.loop", "c"]


def _library_values():
    import datetime
    import fractions
    import io
    import logging
    import pathlib
    import random
    import re
    import uuid

    cached = functools.lru_cache()(lambda x: x)
    return [
        pathlib.Path("/data"), logging.getLogger("fastload.test"), cached, np.vectorize(abs),
        random.Random(0), fractions.Fraction(1, 2), uuid.UUID(int=1), datetime.date(2020, 1, 1),
        re.compile("a"), io.BytesIO(), staticmethod(abs),
    ]  # fmt: skip


@pytest.mark.parametrize("value", _library_values(), ids=lambda v: type(v).__name__)
def test_values_of_the_standard_library_are_leaves_not_their_internals(value):
    # A cached path, a logger's manager of every logger, an lru_cache's cache: none is a
    # parameter, and their attributes differ between equal values.
    assert fastload.children(value) is None
    w = np.zeros(2)
    fastload.loadmodel({"w": w, "x": value}, {"w": np.ones(2), "x": ()})
    assert w.tolist() == [1.0, 1.0]
    assert fastload.flatten({"w": w, "x": value}) == {"w": w}


def test_a_slot_of_a_class_named_only_with_underscores_is_not_mangled():
    class _:
        __slots__ = ("__w",)

        def __init__(self, value):
            self.__w = np.full(2, value)

    dst = _(0.0)
    fastload.loadmodel(dst, _(1.0))
    assert fastload.children(dst)["__w"].tolist() == [1.0, 1.0]


def test_a_class_of_the_users_that_derives_from_a_library_value_is_walked_as_usual():
    import random

    class Sampler(random.Random):
        def __init__(self, value):
            super().__init__(0)
            self.w = np.full(3, value)

    dst = Sampler(0.0)
    fastload.loadmodel(dst, Sampler(1.0))
    assert dst.w.tolist() == [1.0] * 3
