"""Bad input: one clear exception naming the path, and nothing written."""

from __future__ import annotations

import collections
import gc
import sys
import threading
import types
import warnings
from collections.abc import Mapping

import numpy as np
import pytest

import fastload
from fastload import ArgumentError, DimensionMismatch, LoadError, SkippedKeysWarning


def test_every_problem_is_listed_and_the_class_is_the_first_ones(snapshot):
    dst = {"a": np.zeros(2), "b": np.zeros(3), "c": {"x": np.zeros(1)}, "d": np.zeros(1)}
    src = {"a": np.zeros(5), "b": np.zeros(3, np.complex64), "c": {"y": np.ones(1)}, "d": True}
    snap = snapshot(dst)
    with pytest.raises(DimensionMismatch) as info:
        fastload.loadmodel(dst, src)
    paths = [p for p, _ in info.value.problems]
    assert paths == ["a", "b", "c", "d"]
    text = str(info.value)
    assert text.startswith("4 problems")
    for path in paths:
        assert f"\n  {path}: " in text
    snap.assert_unchanged()


def test_long_problem_lists_are_cut_in_the_message_but_complete_in_problems(snapshot):
    dst = [np.zeros(2) for _ in range(100)]
    snap = snapshot(dst)
    with pytest.raises(DimensionMismatch) as info:
        fastload.loadmodel(dst, [np.zeros(3) for _ in range(100)])
    assert len(info.value.problems) == 100
    assert str(info.value).endswith("... and 70 more")
    snap.assert_unchanged()


def test_exception_hierarchy():
    assert issubclass(LoadError, ValueError)
    assert issubclass(ArgumentError, LoadError) and issubclass(DimensionMismatch, LoadError)


def test_a_later_problem_leaves_earlier_leaves_unwritten(snapshot):
    dst = [np.zeros(1000) for _ in range(50)] + [np.zeros(2)]
    snap = snapshot(dst)
    with pytest.raises(DimensionMismatch):
        fastload.loadmodel(dst, [np.ones(1000) for _ in range(50)] + [np.ones(3)])
    snap.assert_unchanged()


def test_read_only_destination_is_refused(snapshot):
    w = np.zeros(3)
    w.flags.writeable = False
    ok = np.zeros(2)
    dst = {"ok": ok, "frozen": {"w": w}}
    snap = snapshot(dst)
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(dst, {"ok": np.ones(2), "frozen": {"w": np.ones(3)}})
    assert info.value.problems == [("frozen.w", "the destination array is read-only")]
    snap.assert_unchanged()


def test_false_into_read_only_destination_is_refused():
    w = np.ones(3)
    w.flags.writeable = False
    with pytest.raises(LoadError, match="read-only"):
        fastload.loadmodel([w], [False])


def test_a_cycle_in_both_trees_is_an_argument_error():
    dst = {"w": np.zeros(1)}
    dst["self"] = dst
    src = {"w": np.ones(1)}
    src["self"] = src
    with pytest.raises(ArgumentError) as info:
        fastload.loadmodel(dst, src)
    assert info.value.problems[0][0] == "self"
    assert "cycle" in info.value.problems[0][1]
    assert dst["w"][0] == 0


def test_a_cycle_in_one_tree_ends_where_the_other_does():
    dst = {"w": np.zeros(1)}
    dst["self"] = dst
    with pytest.raises(ArgumentError):
        fastload.loadmodel(dst, {"w": np.ones(1), "self": {"w": np.ones(1), "self": 3}})
    assert dst["w"][0] == 0


def test_state_of_a_cycle_is_an_argument_error():
    a = [np.zeros(1)]
    a.append(a)
    with pytest.raises(ArgumentError, match="cycle"):
        fastload.state(a)


@pytest.mark.parametrize(
    "resize, message",
    [(list.clear, "1: the list shrank while"), (lambda x: x.append(0), "the list grew while")],
)
def test_state_of_a_list_resized_while_it_is_read_is_an_argument_error(resize, message):
    class Resizer:
        def __init__(self, target):
            self.target = target

    layers = []
    layers.extend([Resizer(layers), np.zeros(2), np.zeros(3)])
    fastload.register(Resizer, children=lambda r: (resize(r.target), {})[1])
    with pytest.raises(ArgumentError, match=message):
        fastload.state(layers)


def test_a_list_shrunk_while_it_is_loaded_is_a_problem_not_a_crash(snapshot):
    class Shrinker:
        def __init__(self, target):
            self.target = target

    layers = []
    layers.extend([Shrinker(layers), np.zeros(2), np.zeros(3)])
    snap = snapshot({"1": layers[1], "2": layers[2]})
    fastload.register(Shrinker, children=lambda r: (r.target.pop(), {})[1])
    with pytest.raises(ArgumentError) as info:
        fastload.loadmodel(layers, [{}, np.ones(2), np.ones(3)])
    assert info.value.problems == [("<root>", "a list changed size while the trees were walked")]
    snap.assert_unchanged()


@pytest.mark.parametrize("side", ["dst", "src"])
@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("c"),  # shrinks
        lambda d: d.update(z=np.zeros(1)),  # grows
        lambda d: (d.pop("c"), d.update(z=np.zeros(3))),  # another key, same size
    ],
)
def test_a_dict_changed_while_it_is_loaded_is_a_problem_not_a_crash(side, change, snapshot):
    # Both dicts list their keys in the same order, so they are read side by side, in
    # place: a change made by code the walk runs must be caught, never read past.
    class Changer:
        def __init__(self, target):
            self.target = target

    dst = {"a": None, "b": np.zeros(2), "c": np.zeros(3)}
    src = {"a": {}, "b": np.ones(2), "c": np.ones(3)}
    target = dst if side == "dst" else src
    dst["a"] = Changer(target)
    snap = snapshot({"b": dst["b"], "c": dst["c"]})
    fastload.register(Changer, children=lambda r: (change(r.target), {})[1])
    with pytest.raises(ArgumentError) as info:
        fastload.loadmodel(dst, src)
    assert ("<root>", "a dict changed while the trees were walked") in info.value.problems
    snap.assert_unchanged()


def test_user_code_run_by_state_meets_only_whole_containers():
    # A children function may look at anything the garbage collector tracks, such as the
    # containers state() is building: none of them may have empty slots.
    class Peeker:
        pass

    first = np.zeros(1)
    seen = []

    def children(_):
        for referrer in gc.get_referrers(first):
            seen.append(repr(referrer))
        return {}

    fastload.register(Peeker, children=children)
    out = fastload.state([first, Peeker(), Peeker()])
    assert out[0] is first and out[1:] == [{}, {}]
    assert seen


def test_state_leaves_the_garbage_collector_as_it_found_it_even_when_it_fails():
    a = [np.zeros(1)]
    a.append(a)
    assert gc.isenabled()
    assert fastload.state({"w": a[0]})["w"] is a[0]
    assert gc.isenabled()
    with pytest.raises(ArgumentError):
        fastload.state(a)
    assert gc.isenabled()
    gc.disable()
    try:
        fastload.state({"w": a[0]})
        assert not gc.isenabled()
    finally:
        gc.enable()


def nest(depth, leaf):
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def test_nesting_deeper_than_the_recursion_limit_works():
    dst, src = nest(3000, np.zeros(1)), nest(3000, np.ones(1))
    fastload.loadmodel(dst, src)
    inner = dst
    for _ in range(3000):
        inner = inner[0]
    assert inner[0] == 1
    st = fastload.state(src)
    for _ in range(3000):
        assert type(st) is list and len(st) == 1
        st = st[0]
    assert st is inner_src(src)


def inner_src(tree):
    while isinstance(tree, list) and isinstance(tree[0], list):
        tree = tree[0]
    return tree[0]


def test_absurd_nesting_is_a_clear_error_not_a_crash():
    dst, src = nest(200_000, np.zeros(1)), nest(200_000, np.ones(1))
    with pytest.raises(ArgumentError, match="nested"):
        fastload.loadmodel(dst, src)
    with pytest.raises(ArgumentError, match="nested"):
        fastload.state(src)


def test_deep_nesting_on_a_small_thread_stack_is_an_error_not_a_crash(on_small_stack):
    def load():
        fastload.loadmodel(nest(5000, np.zeros(1)), nest(5000, np.ones(1)))
        return "ok"

    outcome = on_small_stack(load, ArgumentError)
    assert outcome == "ok" or "nested too deep" in str(outcome)


@pytest.mark.parametrize("kib", [128, 256])
def test_a_shallow_tree_loads_on_a_thread_with_a_tiny_stack(on_small_stack, kib):
    """As some platforms give every thread (128 KiB by default on musl)."""

    def load():
        def model(fill):
            return {"layers": [{"w": np.full(4, fill), "act": np.tanh} for _ in range(3)]}

        dst, root = model(0.0), np.zeros(2)
        fastload.loadmodel(dst, fastload.state(model(1.0)))
        fastload.loadmodel(root, np.ones(2))
        return dst["layers"][2]["w"].tolist() + root.tolist()

    assert on_small_stack(load, stack_size=kib * 1024) == [1.0] * 6


class Exploding:
    @property
    def weight(self):
        raise RuntimeError("boom")


class LyingMapping(Mapping):
    def __init__(self):
        self.calls = 0

    def __getitem__(self, key):
        raise KeyError(key)

    def __iter__(self):
        return iter(["a", "b"])

    def __len__(self):
        return 2


class RaisingKeys(Mapping):
    def __getitem__(self, key):
        return 1

    def __iter__(self):
        raise RuntimeError("no keys today")

    def __len__(self):
        return 1


def test_objects_that_raise_while_walked_give_a_clear_error(snapshot):
    fastload.register(Exploding, children=lambda x: {"weight": x.weight})
    dst = {"ok": np.zeros(1), "bad": Exploding(), "lying": LyingMapping(), "keys": RaisingKeys()}
    src = {"ok": np.ones(1), "bad": {"weight": np.ones(1)}, "lying": {}, "keys": {}}
    snap = snapshot(dst)
    with pytest.raises(ArgumentError) as info:
        fastload.loadmodel(dst, src)
    problems = dict(info.value.problems)
    assert "boom" in problems["bad"]
    assert "lying" in problems and "keys" in problems
    snap.assert_unchanged()


def test_a_raising_filter_is_reported_with_its_path(snapshot):
    dst = {"a": {"w": np.zeros(1)}}

    def bad_filter(x):
        raise ValueError("filter failed")

    snap = snapshot(dst)
    with pytest.raises(ArgumentError, match="filter failed"):
        fastload.loadmodel(dst, {"a": {"w": np.ones(1)}}, filter=bad_filter)
    snap.assert_unchanged()


def test_keyboard_interrupt_in_user_code_propagates_unchanged():
    def interrupt(x):
        raise KeyboardInterrupt

    dst = {"w": np.zeros(1)}
    with pytest.raises(KeyboardInterrupt):
        fastload.loadmodel(dst, {"w": np.ones(1)}, filter=interrupt)
    assert dst["w"][0] == 0


def test_unhashable_keys_in_a_custom_mapping_are_reported():
    class PairKeys(Mapping):
        def __getitem__(self, key):
            return np.zeros(1)

        def __iter__(self):
            return iter([["unhashable"]])

        def __len__(self):
            return 1

    with pytest.raises(ArgumentError):
        fastload.loadmodel({"m": {"x": np.zeros(1)}}, {"m": PairKeys()})


def test_registered_children_returning_nonsense_is_reported():
    class Odd:
        pass

    fastload.register(Odd, children=lambda x: 42)
    with pytest.raises(ArgumentError, match="expected a dict"):
        fastload.loadmodel({"o": Odd()}, {"o": {"w": np.ones(1)}})


def test_strides_reaching_outside_memory_are_refused_not_followed(snapshot):
    base = np.zeros(4)
    wild = np.lib.stride_tricks.as_strided(base, shape=(3,), strides=(2**62,))
    dst = {"ok": np.zeros(2), "wild": wild}
    snap = snapshot({"ok": dst["ok"], "base": base})
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(dst, {"ok": np.ones(2), "wild": np.ones(3)})
    assert info.value.problems == [("wild", "the array's strides reach outside the address space")]
    snap.assert_unchanged()


def test_contiguous_arrays_claiming_more_than_memory_are_refused_not_followed(snapshot):
    # C-contiguous (so the common leaf's path), as long as the address space.
    as_strided = np.lib.stride_tricks.as_strided
    length = 2**63 - 1
    wild_dst = as_strided(np.zeros(16, np.uint8), shape=(length,), strides=(1,), writeable=True)
    wild_src = as_strided(np.ones(16, np.uint8), shape=(length,), strides=(1,))
    dst = {"ok": np.zeros(2), "wild": wild_dst}
    snap = snapshot({"ok": dst["ok"]})
    for src in ({"ok": np.ones(2), "wild": wild_src}, {"ok": np.ones(2), "wild": wild_dst}):
        with pytest.raises(LoadError) as info:
            fastload.loadmodel(dst, src, threads=1)
        assert info.value.problems == [
            ("wild", "the array's strides reach outside the address space")
        ]
        snap.assert_unchanged()


class _ResizingKey:
    """A dict key whose hash or comparison, once armed, resizes an array (one planned
    earlier in the walk)."""

    def __init__(self, name):
        self.name, self.victim = name, None

    def _fire(self):
        if self.victim is not None:
            self.victim.resize(1, refcheck=False)
            self.victim = None

    def __hash__(self):
        self._fire()
        return hash(self.name)

    def __eq__(self, other):
        self._fire()
        return isinstance(other, _ResizingKey) and other.name == self.name


@pytest.mark.parametrize("side", ["dst", "src"])
def test_dict_keys_that_change_planned_arrays_are_caught(side):
    victim = np.zeros(1 << 16)
    quiet, hostile = _ResizingKey("z"), _ResizingKey("z")
    dst = {"x": {"a": victim}, "y": {hostile if side == "dst" else quiet: np.zeros(2)}}
    src = {"x": {"a": np.ones(1 << 16)}, "y": {hostile if side == "src" else quiet: np.ones(2)}}
    hostile.victim = victim  # armed only now that the dicts are built
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(dst, src)
    assert "changed while the trees were walked" in str(info.value)
    assert victim.shape == (1,) and victim[0] == 0


def test_casts_from_several_threads_leave_the_warning_filters_alone():
    import warnings

    before = list(warnings.filters)
    errors = []

    def load():
        try:
            for _ in range(50):
                dst = np.zeros(64, np.float32)
                fastload.loadmodel(dst, np.ones(64, np.complex128), casting="unsafe")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    assert warnings.filters == before


@pytest.mark.parametrize("side", ["dst", "src"])
@pytest.mark.parametrize("size", [3, 100_000], ids=["small", "large"])
def test_an_array_retyped_by_code_the_walk_runs_is_caught_not_written(side, size):
    # Same item size, same memory: only the dtype tells float64 bits from int64 values.
    dst = {"a": np.zeros(size), "n": {"s": "x"}}
    src = {"a": np.full(size, 1.5), "n": {"s": "y"}}
    victim = (dst if side == "dst" else src)["a"]

    def retype(child):
        if isinstance(child, str):
            victim.dtype = np.int64
        return True

    with pytest.raises(LoadError, match="changed while the trees were walked"):
        fastload.loadmodel(dst, src, filter=retype)
    assert not dst["a"].any()


class Sneaky:
    """A node whose children function resizes an array planned before it."""

    def __init__(self, victim):
        self.victim = victim
        self.w = np.zeros(2)


def sneaky_children(obj):
    obj.victim.resize(10, refcheck=False)  # frees the memory planned for the victim
    return {"w": obj.w}


def test_an_array_resized_by_code_the_walk_runs_is_caught_not_written():
    fastload.register(Sneaky, children=sneaky_children)
    victim = np.zeros(100_000)
    dst = {"a": victim, "b": Sneaky(victim)}
    src = {"a": np.ones(100_000), "b": {"w": np.ones(2)}}
    with pytest.raises(LoadError, match="changed while the trees were walked"):
        fastload.loadmodel(dst, src)
    assert victim.shape == (10,) and not victim.any()
    assert not dst["b"].w.any()


class Meddler:
    """A node whose children function changes an array planned before it."""

    def __init__(self, change):
        self.change = change
        self.w = np.zeros(2)


def meddler_children(obj):
    obj.change()
    return {"w": obj.w}


def _resize(a):
    a.resize(100_000, refcheck=False)  # frees the memory planned for it


def _reshape(a):
    _set(a, "shape", (3, 2))


def _freeze(a):
    a.flags.writeable = False


def _retype(a):
    _set(a, "dtype", np.int64)


def _set(a, name, value):
    """Changes an array in place as user code still may, though NumPy 2.5 deprecates it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        setattr(a, name, value)


@pytest.mark.parametrize("change", [_resize, _reshape, _freeze, _retype])
@pytest.mark.parametrize("side", ["dst", "src"])
def test_common_leaves_changed_by_code_the_walk_runs_are_caught_not_written(change, side):
    # Arrays after the first of their dtype take the walk's fastest path, whose plan keeps
    # only their bytes: a change must be caught there too.
    fastload.register(Meddler, children=meddler_children)
    dst_victim, src_victim = np.zeros((2, 3)), np.ones((2, 3))
    victim = dst_victim if side == "dst" else src_victim
    dst = {"first": np.zeros(2), "a": dst_victim, "b": Meddler(lambda: change(victim))}
    src = {"first": np.ones(2), "a": src_victim, "b": {"w": np.ones(2)}}
    if change is _freeze and side == "src":  # a read-only source is still a source
        fastload.loadmodel(dst, src)
        assert (dst["a"] == 1).all()
        return
    with pytest.raises(LoadError, match="changed while the trees were walked"):
        fastload.loadmodel(dst, src)
    assert not dst["first"].any() and not dst["b"].w.any()
    assert not dst_victim.view(np.uint8).any()


class ShrinkingRepr:
    """A key whose ``repr`` (run to name a path) frees the memory of an array planned
    before it."""

    def __init__(self, victim):
        self.victim = victim

    def __repr__(self):
        self.victim.resize(1, refcheck=False)
        return "ShrinkingRepr()"


class ShrinkingMapping(Mapping):
    """A mapping whose ``keys()`` frees the memory of an array planned before it."""

    def __init__(self, victim):
        self.victim = victim

    def __getitem__(self, key):
        return np.zeros(2)

    def __iter__(self):
        return iter(["w"])

    def __len__(self):
        return 1

    def keys(self):
        self.victim.resize(1, refcheck=False)
        return ["w"]


class ShrinkingDict(dict):
    def keys(self):
        self.victim.resize(1, refcheck=False)
        return super().keys()


class Plain:
    pass


def tied_under_key(victim):
    """A path is named for a tie check: the key's repr runs."""
    key, t = ShrinkingRepr(victim), np.zeros(2)
    return {key: [t, t]}, {key: [np.ones(2), np.ones(2)]}


def skipped_under_key(victim):
    """A path is named for keys skipped under strict=False: the key's repr runs."""
    key = ShrinkingRepr(victim)
    return {key: {"w": np.zeros(2)}}, {key: {"w": np.ones(2), "extra": np.ones(2)}}


def proxy_of_a_mapping(victim):
    """A mapping proxy reads the mapping it wraps, here the user's."""
    proxy = types.MappingProxyType(ShrinkingMapping(victim))
    return {"m": proxy}, {"m": {"w": np.ones(2)}}


def attributes_in_a_dict_subclass(victim):
    """An object whose ``__dict__`` is a dict subclass: its ``keys()`` is the user's."""
    obj = Plain()
    obj.__dict__ = ShrinkingDict(w=np.zeros(2))
    obj.__dict__.victim = victim  # (an attribute of the dict, not of the object)
    return {"m": obj}, {"m": {"w": np.ones(2)}}


def trees_of(model_class):
    """A destination and a source instance of ``model_class``, each holding an array."""
    dst, src = model_class(), model_class()
    dst.w, src.w = np.zeros(2), np.ones(2)
    return {"m": dst}, {"m": src}


def instance_of_a_metaclass_with_hooks(victim):
    """Telling a class's kind reads attributes of it, which its metaclass may compute."""

    class Meta(type):
        def __getattr__(cls, name):
            victim.resize(1, refcheck=False)
            raise AttributeError(name)

    class Model(metaclass=Meta):
        pass

    return trees_of(Model)


def object_with_slots_of_the_users(victim):
    """A ``__slots__`` that is a list of the user's is iterated to find the fields."""

    class Names(list):
        armed = False  # (not while the class is made, which iterates them too)

        def __iter__(self):
            if Names.armed:
                victim.resize(1, refcheck=False)
            return super().__iter__()

    class Model:
        __slots__ = Names(["w"])

    Names.armed = True

    return trees_of(Model)


def walked_under_a_profile_function(victim):
    """A profile function runs at each call of Python code the walk makes."""

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "node_kind":
            sys.setprofile(None)
            victim.resize(1, refcheck=False)

    sys.setprofile(profile)

    class Model:
        pass

    return trees_of(Model)


# A `sys.monitoring` tool id that Python names for no kind of tool.
MONITORING_TOOL = 4


def walked_under_a_monitoring_tool(victim):
    """A ``sys.monitoring`` tool's callbacks run at each call of Python code the walk makes."""
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None:
        pytest.skip("sys.monitoring came with Python 3.12")

    def started(code, offset):
        if code.co_name == "node_kind":
            monitoring.set_events(MONITORING_TOOL, 0)
            victim.resize(1, refcheck=False)

    monitoring.use_tool_id(MONITORING_TOOL, "fastload's tests")
    monitoring.register_callback(MONITORING_TOOL, monitoring.events.PY_START, started)
    monitoring.set_events(MONITORING_TOOL, monitoring.events.PY_START)

    class Model:
        pass

    return trees_of(Model)


def ordered_dict_with_a_key_of_the_users(victim):
    """Reading an OrderedDict's values hashes its keys, here an int subclass's own way."""

    class Key(int):
        armed = False  # (not while the dict is made, which hashes it too)

        def __hash__(self):
            if Key.armed:
                victim.resize(1, refcheck=False)
            return int.__hash__(self)

    dst = collections.OrderedDict([(Key(0), np.zeros(2))])
    Key.armed = True
    return {"m": dst}, {"m": [np.ones(2)]}


def slots_named_by_a_str_subclass(victim):
    class Name(str):
        armed = False  # (not while the class is made, which hashes it too)

        def __hash__(self):
            if Name.armed:
                victim.resize(1, refcheck=False)
            return str.__hash__(self)

        __eq__ = str.__eq__

    class Model:
        __slots__ = (Name("w"),)

    Name.armed = True

    return trees_of(Model)


def object_classified_past_a_registered_mapping(victim):
    """A class registered as a Mapping whose metaclass decides subclass checks itself:
    `issubclass(anything, Mapping)` asks it. (Registered with an abstract class of its
    own, which goes once the test drops it, not with Mapping for the whole session.)"""

    class Deciding(type):
        armed = False  # (not while registering, which asks it too)

        def __subclasscheck__(cls, sub):
            if Deciding.armed:
                victim.resize(1, refcheck=False)
            return False

    class Registered(metaclass=Deciding):
        pass

    class LocalMapping(Mapping):
        pass

    LocalMapping.register(Registered)
    Deciding.armed = True

    class Model:  # a class not met before, whose kind `issubclass` is asked about
        pass

    return trees_of(Model)


@pytest.mark.parametrize(
    "tree",
    [
        ordered_dict_with_a_key_of_the_users,
        slots_named_by_a_str_subclass,
        object_classified_past_a_registered_mapping,
        tied_under_key,
        skipped_under_key,
        proxy_of_a_mapping,
        attributes_in_a_dict_subclass,
        instance_of_a_metaclass_with_hooks,
        object_with_slots_of_the_users,
        walked_under_a_profile_function,
        walked_under_a_monitoring_tool,
    ],
)
def test_code_the_walk_runs_unasked_is_caught_not_written_into_freed_memory(tree):
    """Code of the user's that the walk runs without calling it by name (a key's repr,
    a wrapped mapping's keys, a metaclass's hooks) makes the walk check its planned
    arrays again."""
    victim = np.zeros(1 << 20)  # 8 MiB: its memory goes back to the system when freed
    try:
        dst_rest, src_rest = tree(victim)
        dst = {"w": victim, **dst_rest}  # planned first
        src = {"w": np.ones(1 << 20), **src_rest}
        with pytest.raises(LoadError, match="changed while the trees were walked"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SkippedKeysWarning)
                fastload.loadmodel(dst, src, strict=tree is not skipped_under_key)
    finally:
        sys.setprofile(None)
        if getattr(sys, "monitoring", None) and sys.monitoring.get_tool(MONITORING_TOOL):
            sys.monitoring.free_tool_id(MONITORING_TOOL)
        gc.collect()  # (the classes a tree made, with the hooks they hold)
    assert victim.shape == (1,) and not victim.any()


class Dispatching(np.ndarray):
    """An array whose NumPy functions run code of the user's, which here would free the
    memory of an array planned before it."""

    victim = None

    def __array_function__(self, func, types, args, kwargs):
        if Dispatching.victim is not None:
            Dispatching.victim.resize(1, refcheck=False)
        return super().__array_function__(func, types, args, kwargs)


@pytest.mark.parametrize("tied", [False, True])
def test_casts_numpy_does_run_no_code_of_an_array_subclass(tied):
    """float64 into float16 is cast by NumPy, before and during the copy: on plain views
    of the arrays, so a subclass's `__array_function__` never runs."""
    victim = np.zeros(1 << 20)
    Dispatching.victim = victim
    try:
        half = np.zeros(3, np.float16)
        source = np.arange(3.0).view(Dispatching)
        dst = {"w": victim, "a": half, "b": half if tied else np.zeros(3, np.float16)}
        fastload.loadmodel(dst, {"w": np.ones(1 << 20), "a": source, "b": source})
    finally:
        Dispatching.victim = None
    assert victim.shape == (1 << 20,) and victim.all()
    assert half.tolist() == [0.0, 1.0, 2.0] and dst["b"].tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("written_out", ["progress", "tie", "torch"])
def test_a_common_leaf_resized_is_caught_however_the_plan_is_copied(written_out):
    """A leaf after the first of its dtype is planned as a run of bytes only. A load
    that then writes its plan out in full (for a progress callable, a tie, a tensor met)
    must still compare the arrays with that run, not with themselves as they are now."""
    victim = np.zeros(1 << 20)
    shrinking = Plain()
    shrinking.__dict__ = ShrinkingDict(w=np.zeros(2))
    shrinking.__dict__.victim = victim
    dst = {"first": np.zeros(2), "a": victim, "m": shrinking}
    src = {"first": np.ones(2), "a": np.ones(1 << 20), "m": {"w": np.ones(2)}}
    options = {}
    if written_out == "progress":
        options["progress"] = lambda done, total: None
    elif written_out == "tie":
        tied = np.zeros(3)
        dst["t"], src["t"] = [tied, tied], [np.ones(3), np.ones(3)]
    else:
        torch = pytest.importorskip("torch")
        dst["t"], src["t"] = torch.zeros(3), torch.ones(3)
    with pytest.raises(LoadError, match="changed while the trees were walked"):
        fastload.loadmodel(dst, src, **options)
    assert victim.shape == (1,) and not victim.any() and not dst["first"].any()


def test_the_collector_is_paused_while_the_trees_are_walked():
    """No `__del__` or `gc.callbacks` of the user's runs midway, unasked."""
    enabled = []

    def keep(child):
        enabled.append(gc.isenabled())
        return True

    assert gc.isenabled()
    fastload.loadmodel({"a": {"w": np.zeros(2)}}, {"a": {"w": np.ones(2)}}, filter=keep)
    assert enabled and not any(enabled) and gc.isenabled()


def test_an_ordered_dicts_own_attributes_do_not_stand_for_its_methods():
    dst = collections.OrderedDict(w=np.zeros(2))
    dst.keys = lambda: ["other"]  # an attribute of the instance, not the class's method
    fastload.loadmodel(dst, {"w": np.ones(2)})
    assert dst["w"].tolist() == [1.0, 1.0]


def test_a_tied_parameter_reshaped_by_code_the_walk_runs_is_caught():
    # Both arrays of the first leaf reshaped alike still make one run of the same bytes,
    # but the tie found before compares sources of the old shape.
    fastload.register(Meddler, children=meddler_children)
    shared, first_src = np.zeros((2, 3)), np.ones((2, 3))

    def reshape():
        _set(shared, "shape", (3, 2))
        _set(first_src, "shape", (3, 2))

    dst = {"first": np.zeros(2), "a": shared, "b": shared, "z": Meddler(reshape)}
    src = {"first": np.ones(2), "a": first_src, "b": np.ones((2, 3)), "z": {"w": np.ones(2)}}
    with pytest.raises(LoadError, match="changed while the trees were walked"):
        fastload.loadmodel(dst, src)
    assert not shared.any() and not dst["first"].any()


def test_a_tied_source_freed_by_code_the_walk_runs_is_not_read():
    # The tie is checked after the walk, by reading its later source: one freed meanwhile
    # must not be read (its memory is returned to the system), only reported.
    fastload.register(Meddler, children=meddler_children)
    n = 1 << 20
    shared, later = np.zeros(n), np.ones(n)
    dst = {"a": shared, "c": shared, "z": Meddler(lambda: later.resize(1, refcheck=False))}
    src = {"a": np.ones(n), "c": later, "z": {"w": np.ones(2)}}
    with pytest.raises(LoadError, match="changed while the trees were walked"):
        fastload.loadmodel(dst, src)
    assert not shared.any()


def test_only_types_whose_children_run_python_code_trigger_the_recheck():
    from collections import OrderedDict
    from dataclasses import dataclass

    from fastload._tree import node_kind

    class Plain:
        pass

    @dataclass
    class Fields:
        w: object

    class Computed:
        __slots__ = ("_w",)

        @property
        def w(self):
            return self._w

    class Guarded:
        def __getattribute__(self, name):
            return object.__getattribute__(self, name)

    def runs_code(tp):
        return node_kind(tp)[2]

    class Namespace(types.SimpleNamespace):
        pass

    class GuardedNamespace(types.SimpleNamespace):
        def __getattribute__(self, name):
            return super().__getattribute__(name)

    assert not runs_code(Plain) and not runs_code(Fields) and not runs_code(OrderedDict)
    assert not runs_code(types.SimpleNamespace) and not runs_code(Namespace)
    assert runs_code(Guarded) and runs_code(GuardedNamespace)
    fastload.register(Computed, children=lambda c: {"w": c.w})
    assert runs_code(Computed)
