"""Ties (one parameter reached twice) and overlapping memory give walk-order results."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import fastload
import fastload.demo
from fastload import LoadError


def test_tied_parameter_stays_one_object_and_takes_its_value():
    emb = np.zeros((4, 3), np.float32)
    model = {"wte": emb, "head": {"weight": emb}}
    value = np.arange(12, dtype=np.float32).reshape(4, 3)
    fastload.loadmodel(model, {"wte": value, "head": {"weight": value.copy()}})
    assert model["wte"] is model["head"]["weight"] is emb
    np.testing.assert_array_equal(emb, value)


def test_identical_views_are_one_tied_parameter():
    base = np.zeros(6)
    model = [base[:], base.view()]
    with pytest.raises(LoadError, match="tied destination parameters"):
        fastload.loadmodel(model, [np.ones(6), np.full(6, 2.0)])
    np.testing.assert_array_equal(base, 0)
    fastload.loadmodel(model, [np.ones(6), np.ones(6)])
    np.testing.assert_array_equal(base, 1)


def test_mismatched_tie_sources_are_refused_with_the_later_path(snapshot):
    emb = np.zeros(3)
    model = {"a": emb, "b": {"c": emb}}
    snap = snapshot(model)
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(model, {"a": np.ones(3), "b": {"c": np.array([1.0, 1.0, 2.0])}})
    assert type(info.value) is LoadError
    assert info.value.problems == [
        ("b.c", "tied destination parameters with untied and mismatched sources")
    ]
    snap.assert_unchanged()


def test_tie_sources_compare_bit_for_bit_after_the_cast():
    emb = np.zeros(3, np.float32)
    src64 = np.array([0.1, np.nan, -0.0])
    # float64 -> float32 rounding makes these equal; NaN equals NaN bit for bit.
    fastload.loadmodel([emb, emb], [src64, src64.astype(np.float32)])
    assert np.isnan(emb[1]) and np.signbit(emb[2])
    with pytest.raises(LoadError):
        fastload.loadmodel([emb, emb], [np.zeros(3), np.array([0.0, 0.0, -0.0])])


def test_false_source_on_a_tie_must_agree_with_zeros():
    emb = np.ones(3)
    fastload.loadmodel([emb, emb], [np.zeros(3), False])
    np.testing.assert_array_equal(emb, 0)
    fastload.loadmodel([emb, emb], [False, np.zeros(3)])
    emb[:] = 5
    with pytest.raises(LoadError):
        fastload.loadmodel([emb, emb], [np.ones(3), False])
    np.testing.assert_array_equal(emb, 5)


def test_a_later_tie_source_that_is_the_first_buffer_needs_no_comparison():
    emb = np.zeros(3)
    src = np.array([np.nan, 1.0, 2.0])
    fastload.loadmodel({"a": emb, "b": emb}, {"a": src, "b": src})
    np.testing.assert_array_equal(emb, src)


@pytest.mark.parametrize("later", ["agrees once written", "differs once written"])
def test_a_tie_source_that_an_earlier_leaf_writes_is_refused_not_compared_early(later, snapshot):
    """Leaf by leaf, ``t2`` reads ``p`` once ``p`` is written: compared before anything is
    written, its old value would be what decides. Refused either way, nothing written."""
    p, t = np.zeros(3), np.zeros(3)
    dst = {"p": p, "t1": t, "t2": t}
    first = np.ones(3) if later == "agrees once written" else np.zeros(3)
    before = snapshot(dst)
    with pytest.raises(LoadError, match="t2: a source of this tied parameter shares memory"):
        fastload.loadmodel(dst, {"p": np.ones(3), "t1": first, "t2": p})
    before.assert_unchanged()
    # Read by both sources after `p` is written, and not between: no comparison needed.
    fastload.loadmodel(dst, {"p": np.ones(3), "t1": p, "t2": p})
    assert t.tolist() == [1.0, 1.0, 1.0]


def test_a_load_from_its_own_memory_through_other_objects_changes_nothing():
    w = np.arange(6, dtype=np.float32)
    dst = {"a": w, "b": w}
    again = np.frombuffer(w.data, np.float32)  # the same bytes, another object
    fastload.loadmodel(dst, {"a": again, "b": w.view()})
    fastload.loadmodel(dst, {"a": again, "b": np.frombuffer(w.data, np.float32)})
    assert w.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_ties_through_numpy_performed_casts():
    emb = np.zeros(3, np.complex64)
    fastload.loadmodel([emb, emb], [np.arange(3.0), np.arange(3, dtype=np.complex128)])
    np.testing.assert_array_equal(emb, [0, 1, 2])
    with pytest.raises(LoadError, match="tied"):
        fastload.loadmodel([emb, emb], [np.arange(3.0), np.ones(3, np.complex128)])


def sequential_reference(pairs):
    """Copy leaf by leaf in walk order, as numpy.copyto would."""
    for d, s in pairs:
        np.copyto(d, s)


@pytest.mark.parametrize(
    "make",
    [
        # overlapping destinations
        lambda a: [(a[0:6], np.arange(6.0)), (a[3:9], np.arange(10.0, 16.0))],
        # a source reading a destination written earlier
        lambda a: [(a[0:4], np.arange(4.0) + 1), (a[4:8], a[0:4])],
        # a source reading a destination written later
        lambda a: [(a[4:8], a[0:4]), (a[0:4], np.arange(4.0) + 1)],
        # a source shifted over its own destination
        lambda a: [(a[1:9], a[0:8])],
        # interleaved views
        lambda a: [(a[0:10:2], a[1:10:2]), (a[1:10:2], np.arange(5.0))],
        # reversed onto itself
        lambda a: [(a[::-1], a)],
    ],
    ids=["dst-dst", "src-after-dst", "src-before-dst", "shifted", "interleaved", "reversed"],
)
@pytest.mark.parametrize("threads", [1, 4])
def test_overlapping_memory_gives_the_walk_order_result(make, threads):
    a = np.arange(10.0) * 7
    b = a.copy()
    fastload.loadmodel([d for d, _ in make(a)], [s for _, s in make(a)], threads=threads)
    sequential_reference(make(b))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "src_dtype,dst_dtype,src_at,dst_at",
    [
        # Casts NumPy performs, between dtypes of different sizes or byte orders.
        (np.float64, np.float16, 0, 40),
        (np.float64, ml_dtypes.bfloat16, 0, 40),
        (np.int64, np.float16, 0, 40),
        (np.complex64, np.float32, 0, 40),
        (np.float32, np.dtype(">f8"), 0, 0),
        (np.float32, np.complex64, 0, 0),
        # The same layouts cast by the core's kernels.
        (np.float32, np.float16, 0, 40),
        (np.float32, np.float64, 0, 0),
    ],
)
@pytest.mark.parametrize("threads", [1, None])
@pytest.mark.filterwarnings("ignore:Casting complex values to real")  # (the reference's)
def test_a_source_overlapping_its_own_cast_destination_is_read_in_full_first(
    src_dtype, dst_dtype, src_at, dst_at, threads
):
    def views(buffer):
        raw = buffer.view(np.uint8)
        n = 1000
        src = raw[src_at : src_at + n * np.dtype(src_dtype).itemsize].view(src_dtype)
        return raw[dst_at : dst_at + n * np.dtype(dst_dtype).itemsize].view(dst_dtype), src

    initial = np.random.default_rng(0).standard_normal(4000).astype(np.float32)
    ours, theirs = initial.copy(), initial.copy()
    dst, src = views(ours)
    with np.errstate(all="ignore"):
        fastload.loadmodel(dst, src, casting="unsafe", threads=threads)
        expected, source = views(theirs)
        np.copyto(expected, source.copy(), casting="unsafe")
    assert ours.tobytes() == theirs.tobytes()


def test_large_overlapping_load_is_deterministic():
    # Big enough for the parallel path; dst leaves overlap, so they must run in order.
    n = 1 << 21
    results = []
    for _ in range(3):
        a = np.zeros(n + 1000, np.float32)
        dsts = [a[:n], a[1000:]]
        srcs = [np.full(n, 1.0, np.float32), np.full(n, 2.0, np.float32)]
        fastload.loadmodel(dsts, srcs, threads=4)
        results.append(a.copy())
    assert all(np.array_equal(results[0], r) for r in results)
    assert results[0][0] == 1 and results[0][1000] == 2 and results[0][-1] == 2


def test_loading_a_model_into_itself_changes_nothing():
    model = {"w": np.arange(5.0), "layers": [np.ones((2, 2)), np.tanh]}
    before = {"w": model["w"].copy(), "l": model["layers"][0].copy()}
    assert fastload.loadmodel(model, model) is model
    np.testing.assert_array_equal(model["w"], before["w"])
    np.testing.assert_array_equal(model["layers"][0], before["l"])


def test_zero_stride_destination_is_refused_as_read_only(snapshot):
    dst = np.broadcast_to(np.zeros(1), (4,))
    with pytest.raises(LoadError, match="read-only"):
        fastload.loadmodel({"w": dst}, {"w": np.ones(4)})


@pytest.mark.parametrize(
    "alias",
    [
        lambda a: np.lib.stride_tricks.as_strided(a[2:], shape=(4,), strides=(8,)),
        lambda a: np.asarray(memoryview(a))[2:6],
        lambda a: np.frombuffer(a, dtype=a.dtype)[2:6],
        lambda a: np.ndarray((4,), a.dtype, buffer=a, offset=16),
    ],
    ids=["as_strided", "memoryview", "frombuffer", "ndarray-buffer"],
)
def test_memory_shared_through_other_objects_is_still_ordered(alias):
    # The second destination aliases a[2:6] through an object other than a view of `a`.
    a = np.arange(10.0) * 7
    b = a.copy()
    fastload.loadmodel([a[0:4], alias(a)], [np.arange(4.0) + 1, a[0:4]], threads=1)
    np.copyto(b[0:4], np.arange(4.0) + 1)
    np.copyto(b[2:6], b[0:4].copy())
    np.testing.assert_array_equal(a, b)


def test_views_with_other_strides_are_other_parameters_copied_in_walk_order():
    # Same address and shape but other strides: not a tie (SPEC), so both copies happen,
    # in walk order, and the second one stands.
    w = np.zeros(4)
    a, b = w.reshape(1, 4), np.lib.stride_tricks.as_strided(w, shape=(1, 4), strides=(0, 8))
    assert a.strides != b.strides
    fastload.loadmodel([a, b], [np.ones((1, 4)), np.full((1, 4), 2.0)])
    np.testing.assert_array_equal(w, 2)


def test_dates_of_different_units_over_one_buffer_are_not_a_tie():
    a = np.zeros(4, "i8")
    seconds, millis = a.view("M8[s]"), a.view("M8[ms]")
    fastload.loadmodel([seconds, millis], [np.arange(4).astype("M8[s]"), np.full(4, 7, "M8[ms]")])
    np.testing.assert_array_equal(a, 7)  # two parameters, copied in walk order


def test_large_tied_sources_that_are_equal_copies_load_and_one_differing_element_is_refused():
    # Several comparison chunks of a float32 embedding, as a checkpoint with the tied
    # matrix stored twice holds it; any one element that differs refuses the whole load.
    n = 1_000_003
    emb, other = np.zeros(n, np.float32), np.zeros(4, np.float32)
    first = np.arange(n, dtype=np.float32)
    model = {"wte": emb, "lm_head": emb, "other": other}
    fastload.loadmodel(model, {"wte": first, "lm_head": first.copy(), "other": np.ones(4)})
    np.testing.assert_array_equal(emb, first)
    for at in (0, n // 2, n - 1):
        emb[:], other[:] = 0, 0
        later = first.copy()
        later[at] += 1
        with pytest.raises(LoadError, match="mismatched sources"):
            fastload.loadmodel(model, {"wte": first, "lm_head": later, "other": np.ones(4)})
        assert not emb.any() and not other.any()


class Holder:
    pass


class Plain:
    """A plain object (no test registers a children function for it, as some do Holder)."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


def shared_list():
    inner = [np.zeros(3), np.zeros(3)]
    return [inner, inner], [[np.zeros(3), np.ones(3)], [np.zeros(3), np.full(3, 2.0)]]


def shared_dict():
    inner = {"a": np.zeros(3), "b": np.zeros(3)}
    src = {"x": {"a": np.zeros(3), "b": np.ones(3)}, "y": {"a": np.zeros(3), "b": np.full(3, 2.0)}}
    return {"x": inner, "y": inner}, src


# In each tree, a first array of the dtype takes the walk's general path, which learns the
# dtype; the arrays after it are the ones that may skip the tie table.


def shared_attributes():
    first, second = Plain(v=np.zeros(1), w=np.zeros(3)), Plain()
    second.__dict__ = first.__dict__
    one, two = {"v": np.ones(1), "w": np.ones(3)}, {"v": np.ones(1), "w": np.full(3, 2.0)}
    return [first, second], [one, two]


def handed_back_by_user_code():
    tree = [np.zeros(1), np.zeros(3), Holder()]
    fastload.register(Holder, lambda holder: [tree[1]])
    return tree, [np.ones(1), np.ones(3), [np.full(3, 2.0)]]


def root_reached_again():
    class Back:  # (Holder may have a children function registered by another test)
        pass

    dst = [np.zeros(1), np.zeros(3), Back()]
    dst[2].root = dst  # another source there: no cycle, with strict=False below
    src = [np.ones(1), np.ones(3), {"root": [np.ones(1), np.full(3, 2.0), {}]}]
    return dst, src


def handed_back_by_getattr():
    class Slotted:
        __slots__ = ("w",)

        def __getattr__(self, name):  # what `getattr` runs for the slot, which is not set
            return tree[1]

    tree = [np.zeros(1), np.zeros(3), Slotted()]
    return tree, [np.ones(1), np.ones(3), {"w": np.full(3, 2.0)}]


def shared_by_a_computed_dict():
    shared = {"w": np.zeros(3)}

    class Computed:
        @property
        def __dict__(self):
            return shared

    return [np.zeros(1), Computed(), Computed()], [
        np.ones(1),
        {"w": np.ones(3)},
        {"w": np.full(3, 2.0)},
    ]


def with_object_sources(make):
    """``make``'s trees, each dict of the source an object with those attributes."""

    def objects(tree):
        if isinstance(tree, dict):
            return Plain(**{key: objects(value) for key, value in tree.items()})
        if isinstance(tree, list):
            return [objects(value) for value in tree]
        return tree

    def made():
        dst, src = make()
        return dst, objects(src)

    made.__name__ = f"{make.__name__}_from_objects"
    return made


def shared_object():
    inner = Plain(a=np.zeros(1), b=np.zeros(3))
    src = [{"a": np.ones(1), "b": np.ones(3)}, {"a": np.ones(1), "b": np.full(3, 2.0)}]
    return [inner, inner], src


REACHED_TWICE = [
    shared_list,
    shared_dict,
    shared_attributes,
    shared_object,
    handed_back_by_user_code,
    root_reached_again,
    handed_back_by_getattr,
    shared_by_a_computed_dict,
]


@pytest.mark.parametrize(
    "make",
    REACHED_TWICE + [with_object_sources(make) for make in REACHED_TWICE],
    ids=lambda make: make.__name__,
)
def test_arrays_only_the_tree_holds_are_still_tied_when_reached_twice(make):
    # Each array below is referenced by one container only (no snapshot may hold it); the
    # container, or the array through code of the user's, is reached twice. Sources are
    # dicts, or objects with those attributes, which take the objects' path of the walk.
    dst, src = make()
    with pytest.raises(LoadError, match="tied destination parameters"):
        fastload.loadmodel(dst, src, strict=False)
    assert all_zeros(dst, set())


def all_zeros(tree, seen) -> bool:
    """Whether every array of ``tree`` (which may contain itself) is still all zeros."""
    if id(tree) in seen:
        return True
    seen.add(id(tree))
    if isinstance(tree, np.ndarray):
        return not tree.any()
    if isinstance(tree, list):
        return all(all_zeros(x, seen) for x in tree)
    if isinstance(tree, dict):
        return all(all_zeros(x, seen) for x in tree.values())
    return all_zeros(getattr(tree, "__dict__", {}), seen)


def test_a_view_that_user_code_hands_back_is_ordered_after_the_array():
    tree = [np.zeros(1), np.zeros(3), Holder()]
    fastload.register(Holder, lambda holder: [tree[1][:2]])
    fastload.loadmodel(tree, [np.ones(1), np.ones(3), [np.full(2, 2.0)]])
    assert tree[1].tolist() == [2.0, 2.0, 1.0]


def test_a_children_function_runs_once_a_load_next_to_arrays_only_the_tree_holds():
    calls = []
    tree = [np.zeros(1), np.zeros(3), Holder()]
    fastload.register(Holder, lambda holder: calls.append(1) or [tree[1]])
    fastload.loadmodel(tree, [np.ones(1), np.ones(3), [np.ones(3)]])  # a tie, equal sources
    assert len(calls) == 1 and tree[1].tolist() == [1.0] * 3


def test_views_with_equal_record_dtypes_made_apart_are_one_tie(snapshot):
    record = np.dtype([("a", "<f4")])
    rec = np.zeros(2, record)
    view = rec.view(np.dtype([("a", "<f4")]))  # an equal dtype, another dtype object
    before = snapshot([rec])
    with pytest.raises(fastload.LoadError, match="tied destination parameters"):
        fastload.loadmodel([rec, view], [np.ones(2, record), np.full(2, 2, record)])
    before.assert_unchanged()
    fastload.loadmodel([rec, view], [np.ones(2, record), np.ones(2, record)])
    assert rec["a"].tolist() == [1.0, 1.0]
