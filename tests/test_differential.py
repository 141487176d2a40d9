"""``fastload.loadmodel`` against the plain-Python reference in ``reference.py``.

Random trees of dicts, lists, tuples, arrays and plain data are loaded by both; they must
raise the same exception class, or both succeed with bit-identical destinations. A
rejected load must leave the destination bit-for-bit unchanged.

Set ``FASTLOAD_HYPOTHESIS_PROFILE=long`` for a much longer, randomised run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastload

try:
    from .reference import reference_loadmodel, tie_key
except ImportError:
    from reference import reference_loadmodel, tie_key

try:
    import ml_dtypes

    BFLOAT16 = [np.dtype(ml_dtypes.bfloat16)]
except ImportError:  # pragma: no cover - ml_dtypes is a test dependency
    BFLOAT16 = []

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
PROFILES = {
    "default": settings(
        max_examples=200, deadline=None, derandomize=True, suppress_health_check=_HEALTH
    ),
    "long": settings(
        max_examples=20_000, deadline=None, derandomize=False, suppress_health_check=_HEALTH
    ),
}
PROFILE = PROFILES[os.environ.get("FASTLOAD_HYPOTHESIS_PROFILE", "default")]

# --------------------------------------------------------------------------- values

F32, F64, I32, F16, BOOL = (np.dtype(t) for t in ("float32", "float64", "int32", "float16", "bool"))
BASE_DTYPES = [F32, F64, I32, F16, BOOL]
DST_DTYPES = [F32, F32, F64, I32, F16, BOOL, *BFLOAT16, np.dtype("U3"), np.dtype(object)]
SRC_DTYPES = [*BASE_DTYPES, np.dtype(">f4"), np.dtype(">i4"), *BFLOAT16]

FLOATS = [0.0, 1.0, -1.0, 0.5, -2.5, 0.1, 1 / 3, 1e-5, 1e-30, 65504.0, 65520.0, 7e4, 3e38]
FLOATS += [16777217.0, 1 + 2**-11 + 2**-40, math.nan, math.inf, -math.inf]
TAME_FLOATS = [0.0, 1.0, -1.0, 0.5, -2.5, 7.0, 100.0]  # exact under any float -> int cast
INTS = [0, 1, -1, 2, 7, 255, 2049, 65519, 65520, 16777217, 2**31 - 1, -(2**31)]
STRINGS = ["", "a", "xyz", "é"]
OBJECTS = [1, "a", None]


class Obj:
    """A plain object: keyed by its attributes."""

    def __init__(self, **attrs):
        self.__dict__.update(attrs)


@functools.cache
def dataclass_of(fields):
    """A dataclass with these fields, one class per field tuple."""
    return dataclasses.make_dataclass("Layer_" + "_".join(fields), fields)


def keyed_children(x):
    """The children of a dict, plain object or dataclass, as a dict."""
    if dataclasses.is_dataclass(x):
        return {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    return dict(vars(x)) if isinstance(x, Obj) else x


SCALARS = [0, 1, 2.5, -1.0, None, "relu", b"x", 1 + 2j, np.float32(0.5), np.int64(3), math.sin]

KEYS = ["a", "b", "c", "w", "bias", "μ", "σ²", "layer_1"]
SHAPES = st.lists(st.sampled_from([1, 2, 3, 4, 1, 2, 3, 0]), max_size=3).map(tuple)


def make_array(rng, shape, dtype, tame=False):
    if dtype.kind == "b":
        pool = [False, True]
    elif dtype.kind in "iu":
        pool = INTS
    elif dtype.kind == "U":
        pool = STRINGS
    elif dtype.kind == "O":
        pool = OBJECTS
    else:
        pool = TAME_FLOATS if tame else FLOATS
    picks = rng.integers(0, len(pool), size=int(np.prod(shape, dtype=np.int64)))
    out = np.empty(shape, dtype)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        flat = out.reshape(-1)
        for i, p in enumerate(picks):
            flat[i] = pool[p]
    return out


def drop_strings(x):
    return not isinstance(x, str)


def drop_bool_arrays(x):
    return not (isinstance(x, np.ndarray) and x.dtype == BOOL)


def drop_tuples(x):
    return not isinstance(x, tuple)


# --------------------------------------------------------------------------- trees


class _Case:
    """State shared while one case is drawn.

    Cases the SPEC leaves open are not drawn: sequences of different lengths (or index
    mappings with missing keys) under ``strict=False``, a leaf in ``src`` where ``dst``
    has a node when a filter is given, and ``-0.0`` where a tie meets a ``False`` source.
    """

    def __init__(self, draw):
        self.draw = draw
        self.rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        self.strict = draw(st.sampled_from([True, True, True, False]))
        self.filter = None
        if self.strict:
            self.filter = draw(
                st.sampled_from([None] * 5 + [drop_strings, drop_bool_arrays, drop_tuples])
            )
        self.casting = draw(
            st.sampled_from(["same_kind"] * 3 + ["unsafe", "unsafe", "safe", "no", "equiv"])
        )
        self.threads = draw(st.sampled_from([None, 1, 2, 4]))
        self.budget = draw(st.sampled_from([0, 0, 1, 2]))  # how many perturbations
        self.read_only = draw(st.integers(0, 7)) == 0  # whether some dst arrays are read-only
        self.dst_arrays = []
        self.src_arrays = []
        self.first_source = {}  # tie key of a dst array -> the source drawn first for it
        self.aliasing = False  # whether some source shares memory with dst

    def perturb(self):
        if self.budget and self.draw(st.integers(0, 7)) == 0:
            self.budget -= 1
            return True
        return False

    # ---- destination

    def dst(self, depth=0):
        kinds = ["array"] * 5 + ["scalar", "bool", "empty"]
        if depth < 3:
            kinds += ["dict"] * 4 + ["list", "tuple", "object", "dataclass"]
        if depth == 0:  # mostly a node with several children, sometimes a lone leaf
            kinds = ["dict"] * 8 + ["list", "tuple"] * 2 + ["array", "scalar"]
        size = 2 if depth == 0 else 0
        kind = self.draw(st.sampled_from(kinds))
        if kind == "array":
            return self.dst_array()
        if kind == "scalar":
            return self.draw(st.sampled_from(SCALARS))
        if kind == "bool":
            return self.draw(st.sampled_from([False, False, np.False_, True]))
        if kind == "empty":
            return self.empty_node()
        if kind in ("dict", "object", "dataclass"):
            keys = self.draw(
                st.lists(st.sampled_from(KEYS), unique=True, min_size=size, max_size=5)
            )
            node = {k: self.dst(depth + 1) for k in keys}
            if kind == "dataclass" and all(k.isidentifier() for k in node):
                return dataclass_of(tuple(node))(**node)
            if kind in ("object", "dataclass"):
                return Obj(**node)
            return node
        items = [self.dst(depth + 1) for _ in range(self.draw(st.integers(size, 4)))]
        return items if kind == "list" else tuple(items)

    def empty_node(self):
        return {"tuple": (), "list": [], "dict": {}}[
            self.draw(st.sampled_from(["tuple", "list", "dict"]))
        ]

    def dst_array(self):
        how = self.draw(
            st.sampled_from(
                ["fresh"] * 6 + ["strided"] + ["same", "view"] * 2 + ["T", "rev", "head"]
            )
        )
        viewable = [a for a in self.dst_arrays if a.size and a.dtype != object]
        if how in ("same", "view", "T", "rev", "head") and viewable:
            a = self.draw(st.sampled_from(viewable))
            if how == "same":
                return a  # tied: the same object
            if how == "view":
                out = a.view()  # tied: same pointer, shape, strides and dtype
            elif how == "T":
                out = a.T  # overlapping, not tied (unless 0-d or 1-d)
            else:
                out = (a[::-1] if how == "rev" else a[:1]) if a.ndim else a.view()
            self.dst_arrays.append(out)
            return out
        dtype = self.draw(st.sampled_from(DST_DTYPES))
        shape = self.draw(SHAPES)
        if how == "strided" and shape and dtype.kind != "O":
            out = make_array(self.rng, (*shape[:-1], 2 * shape[-1]), dtype)[..., ::2]
        else:
            out = make_array(self.rng, shape, dtype)
        if dtype.kind != "O" and self.read_only and self.draw(st.integers(0, 9)) == 0:
            out.flags.writeable = False
        self.dst_arrays.append(out)
        return out

    # ---- source

    def src(self, dst):
        if isinstance(dst, np.ndarray) and dst.dtype.kind != "O":
            return self.src_array(dst)
        if isinstance(dst, Obj) or dataclasses.is_dataclass(dst):
            out = self.src(keyed_children(dst))
            if isinstance(out, dict) and self.draw(st.booleans()):
                return Obj(**out)  # an object loads from an object as from a dict
            return out
        if isinstance(dst, dict):
            out = {k: self.src(v) for k, v in dst.items()}  # drawn in walk order (ties)
            order = self.draw(st.permutations(list(out)))
            out = {k: out[k] for k in order}
            if self.perturb():
                if out and self.draw(st.booleans()):
                    del out[self.draw(st.sampled_from(list(out)))]
                else:
                    out["zz"] = (
                        self.draw(st.sampled_from([1, None]))
                        if self.draw(st.booleans())
                        else np.ones(2)
                    )
            return self.maybe_leaf(out)
        if isinstance(dst, (list, tuple)):
            items = [self.src(v) for v in dst]
            if self.strict and self.perturb():
                if items and self.draw(st.booleans()):
                    items.pop()
                else:
                    items.append(np.zeros(1))
            form = self.draw(st.sampled_from(["same"] * 4 + ["other", "str_keys", "int_keys"]))
            if form in ("str_keys", "int_keys"):
                keys = [str(i) if form == "str_keys" else i for i in range(len(items))]
                order = self.draw(st.permutations(range(len(items))))
                return self.maybe_leaf({keys[i]: items[i] for i in order})
            if (form == "other") == isinstance(dst, tuple):
                return self.maybe_leaf(list(items))
            return self.maybe_leaf(tuple(items))
        # a plain leaf, an empty node or an object array
        if isinstance(dst, np.ndarray):
            choice = self.draw(st.sampled_from(["object", "object", "numeric"]))
            if choice == "object":
                return make_array(self.rng, dst.shape, dst.dtype)
            return make_array(self.rng, dst.shape, F32)
        is_false = (type(dst) is bool or isinstance(dst, np.bool_)) and not dst
        choices = ["scalar", "scalar", "empty", "node", "array"] + ["array"] * 2 * is_false
        choice = self.draw(st.sampled_from([*choices, "false"]))
        if choice == "node":  # a leaf in dst ignores a node in src, as it ignores a leaf
            return self.draw(st.sampled_from([{"a": 1}, [np.ones(2)], (np.ones(2), 3)]))
        if choice == "scalar":
            return self.draw(st.sampled_from(SCALARS))
        if choice == "empty":
            return self.empty_node()
        if choice == "false":
            return False
        return make_array(self.rng, self.draw(SHAPES), self.draw(st.sampled_from(BASE_DTYPES)))

    def maybe_leaf(self, node):
        """Sometimes put a leaf where dst has a node (only without a filter: see SPEC)."""
        if self.filter is None and self.perturb():
            return self.draw(st.sampled_from([3, "x", np.ones(2)]))
        return node

    def src_array(self, dst):
        key = tie_key(dst)
        first = self.first_source.get(key, None)
        if key in self.first_source:
            choice = self.draw(st.sampled_from(["same", "copy", "cast", "false", "fresh"]))
        else:
            choice = self.draw(st.sampled_from(["fresh"] * 8 + ["false", "alias", "src_tie"]))
        out = None
        if choice in ("same", "copy", "cast"):
            if not isinstance(first, np.ndarray) or first.shape != dst.shape:
                out = np.zeros(dst.shape, dst.dtype)
            elif choice == "same":
                out = first
            elif choice == "copy":
                out = first.copy()
            else:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    try:
                        out = first.astype(dst.dtype)
                    except (TypeError, ValueError):  # e.g. a string source for a float tie
                        out = first.copy()
        elif choice == "false":
            out = self.draw(st.sampled_from([False, np.False_]))
        elif choice == "alias":
            same = [a for a in self.dst_arrays if a.dtype.kind != "O" and a.shape == dst.shape]
            same += [a.T for a in self.dst_arrays if a.dtype.kind != "O" and a.T.shape == dst.shape]
            if same:
                out = self.draw(st.sampled_from(same))
                self.aliasing = True
        elif choice == "src_tie":
            same = [a for a in self.src_arrays if a.shape == dst.shape]
            if same:
                out = self.draw(st.sampled_from(same))
        if out is None:
            out = self.fresh_source(dst)
        self.first_source.setdefault(key, out)
        if self.perturb():
            out = self.draw(
                st.sampled_from(
                    ["shape", "shape", True, 3, "x", (), {"a": 1}]
                    if self.filter is None
                    else ["shape", "shape", True, 3, "x", ()]
                )
            )
            if isinstance(out, str) and out == "shape":
                out = make_array(self.rng, (*dst.shape, 2), F32)
        if isinstance(out, np.ndarray):
            self.src_arrays.append(out)
        return out

    def fresh_source(self, dst):
        if self.draw(st.integers(0, 9)) < 6:
            dtype = dst.dtype
        else:
            dtype = self.draw(st.sampled_from(SRC_DTYPES))
        tame = dtype.kind in "fV" and dst.dtype.kind in "biu"
        layout = self.draw(st.sampled_from(["c", "c", "c", "f", "strided"]))
        if layout == "strided" and dst.shape:
            return make_array(self.rng, (*dst.shape[:-1], 3 * dst.shape[-1]), dtype, tame)[..., ::3]
        out = make_array(self.rng, dst.shape, dtype, tame)
        return np.asfortranarray(out) if layout == "f" else out


@st.composite
def cases(draw):
    case = _Case(draw)
    dst = case.dst()
    src = case.src(dst)
    if isinstance(src, str):
        src = 3  # a string source is a checkpoint's path: tested in test_files.py
    options = {"filter": case.filter, "strict": case.strict, "casting": case.casting}
    return dst, src, options, case.threads, case.aliasing


# --------------------------------------------------------------------------- helpers


def clone_tree(tree, memo=None):
    """Deep-copy a tree, keeping ties and shared memory: arrays that were the same object
    stay one object, and views of one buffer become views of one new buffer."""
    memo = {} if memo is None else memo
    if id(tree) in memo:
        return memo[id(tree)][0]
    if isinstance(tree, np.ndarray):
        out = _clone_array(tree, memo)
    elif isinstance(tree, dict):
        out = {k: clone_tree(v, memo) for k, v in tree.items()}
    elif isinstance(tree, list):
        out = [clone_tree(v, memo) for v in tree]
    elif isinstance(tree, tuple):
        out = tuple(clone_tree(v, memo) for v in tree)
    elif isinstance(tree, Obj):
        out = Obj(**{k: clone_tree(v, memo) for k, v in vars(tree).items()})
    elif dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        out = type(tree)(**{k: clone_tree(v, memo) for k, v in keyed_children(tree).items()})
    else:
        return tree
    memo[id(tree)] = (out, tree)  # keep the original alive so that its id stays unique
    return out


def _clone_array(x, memo):
    if x.dtype.kind == "O" or x.size == 0:
        out = x.copy()
    else:
        root = x
        while isinstance(root.base, np.ndarray):
            root = root.base
        memory = root if root.flags.c_contiguous else root.T  # same bytes, C order
        assert memory.flags.c_contiguous
        key = ("buffer", id(root))
        if key not in memo:
            memo[key] = (memory.copy(), root)
        buffer = memo[key][0]
        offset = x.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        out = np.ndarray(x.shape, x.dtype, buffer=buffer, offset=offset, strides=x.strides)
    if not x.flags.writeable:
        out.flags.writeable = False
    return out


def _walk(x, path=""):
    yield path, x
    if isinstance(x, Obj) or (dataclasses.is_dataclass(x) and not isinstance(x, type)):
        items = list(keyed_children(x).items())
    elif isinstance(x, dict):
        items = list(x.items())
    elif isinstance(x, (list, tuple)):
        items = list(enumerate(x))
    else:
        return
    for key, child in items:
        yield from _walk(child, f"{path}.{key}")


def _content(x):
    if not isinstance(x, np.ndarray):
        return None
    if x.dtype.kind == "O":
        return (x.shape, "O", x.tolist())
    return (x.shape, x.dtype, x.tobytes())


def snapshot(tree):
    return [(path, obj, _content(obj)) for path, obj in _walk(tree)]


def assert_unchanged(tree, before, what="dst"):
    after = snapshot(tree)
    assert [p for p, _, _ in after] == [p for p, _, _ in before], f"{what} changed shape"
    for (path, obj, content), (_, old, old_content) in zip(after, before):
        assert obj is old, f"{what}{path} was replaced"
        assert content == old_content, f"{what}{path} was written"


def assert_same_objects(tree, before):
    after = list(_walk(tree))
    assert [p for p, _ in after] == [p for p, _, _ in before]
    for (path, obj), (_, old, _) in zip(after, before):
        assert obj is old, f"dst{path} was replaced"


def assert_bitwise_equal(got, expected):
    pairs = list(zip(_walk(got), _walk(expected)))
    assert len(pairs) == len(list(_walk(expected)))
    for (path, a), (_, b) in pairs:
        assert type(a) is type(b), path
        if isinstance(a, np.ndarray):
            assert _content(a) == _content(b), f"dst{path}: {a!r} != {b!r}"
        elif not isinstance(a, (dict, list, tuple, Obj)) and not dataclasses.is_dataclass(a):
            assert a is b, path


def run_both(dst, src, threads=None, **options):
    """Load with fastload and with the reference on clones; compare; return the outcome."""
    dst_a, src_a = clone_tree((dst, src))
    dst_b, src_b = clone_tree((dst, src))
    before = snapshot(dst_a)
    src_before = snapshot(src_a)
    try:
        reference_loadmodel(dst_b, src_b, **options)
        expected = None
    except fastload.LoadError as exc:
        expected = exc
    if expected is None:
        assert fastload.loadmodel(dst_a, src_a, threads=threads, **options) is dst_a
        assert_same_objects(dst_a, before)
        assert_bitwise_equal(dst_a, dst_b)
    else:
        with pytest.raises(fastload.LoadError) as info:
            fastload.loadmodel(dst_a, src_a, threads=threads, **options)
        got = info.value
        assert type(got) is type(expected), f"got {got!r}, expected {expected!r}"
        assert_unchanged(dst_a, before)
        assert isinstance(got.problems, list) and got.problems
        assert all(len(p) == 2 and all(isinstance(s, str) for s in p) for p in got.problems)
        first_path, first_message = expected.problems[0]
        if options.get("filter") is None and first_path != "<root>" and "tied" not in first_message:
            assert first_path in {path for path, _ in got.problems}, (
                got.problems,
                expected.problems,
            )
    return src_a, src_before, expected


# --------------------------------------------------------------------------- properties


@PROFILE
@given(case=cases())
def test_loadmodel_matches_reference(case):
    dst, src, options, threads, aliasing = case
    src_a, src_before, _ = run_both(dst, src, threads=threads, **options)
    if not aliasing:
        assert_unchanged(src_a, src_before, what="src")


def _expected_state(x):
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, dict):
        return {k: _expected_state(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_expected_state(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_expected_state(v) for v in x)
    if callable(x):
        return ()
    return x


def _assert_state_equal(got, expected, path=""):
    assert type(got) is type(expected), (path, got, expected)
    if isinstance(expected, np.ndarray):
        assert got is expected, path
    elif isinstance(expected, dict):
        assert list(got) == list(expected), path
        for k in expected:
            _assert_state_equal(got[k], expected[k], f"{path}.{k}")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected)):
            _assert_state_equal(g, e, f"{path}.{i}")
    else:
        assert got == expected, path


_state_leaves = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.binary(max_size=2),
    st.none(),
    st.booleans(),
    st.complex_numbers(allow_nan=False, max_magnitude=10),
    st.sampled_from([math.sin, len, lambda x: x, np.float32(1.5), np.bool_(True)]),
    st.builds(lambda shape, dtype: np.zeros(shape, dtype), SHAPES, st.sampled_from(BASE_DTYPES)),
)


def _state_nodes(kids):
    return st.one_of(
        st.lists(kids, max_size=3),
        st.lists(kids, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from(KEYS), kids, max_size=3),
    )


_state_trees = st.recursive(_state_leaves, _state_nodes, max_leaves=12)


@PROFILE
@given(tree=_state_trees)
def test_state_keeps_plain_trees_and_arrays(tree):
    _assert_state_equal(fastload.state(tree), _expected_state(tree))


# --------------------------------------------------------------------------- large cases
# Leaves big enough to be split into chunks and copied on several threads.

N = 1 << 22


def _rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("threads", [None, 1, 3])
def test_large_contiguous_and_casting_leaves_match_reference(threads):
    rng = _rng()
    dst = {
        "f32": np.zeros(N, F32),
        "cast": np.zeros((1024, N // 1024), F32),
        "f16": np.zeros(N // 4, F16),
        "int": np.zeros(N // 4, I32),
    }
    src = {
        "f32": rng.standard_normal(N).astype(F32),
        "cast": rng.standard_normal((1024, N // 1024)),
        "f16": rng.standard_normal(N // 4) * 1e4,
        "int": rng.integers(-1000, 1000, N // 4).astype(np.int64),
    }
    run_both(dst, src, threads=threads)
    run_both(dst, src, threads=threads, casting="unsafe")


def test_large_strided_destination_and_fortran_source_match_reference():
    rng = _rng()
    base = np.zeros((2048, 4096), F32)
    dst = [base[:, ::2], base[::-1, 1::2]]
    src = [
        np.asfortranarray(rng.standard_normal((2048, 2048))),
        rng.standard_normal((2048, 2048)).astype(F32),
    ]
    run_both(dst, src)


@pytest.mark.parametrize("threads", [None, 1])
def test_large_overlapping_destinations_are_written_in_walk_order(threads):
    rng = _rng()
    a = rng.standard_normal(N).astype(F32)
    dst = [a[1:], a[:-1], a[::-1]]
    src = [np.full(N - 1, 1, F32), rng.standard_normal(N - 1).astype(F32), a]
    run_both(dst, src, threads=threads)


@pytest.mark.parametrize("threads", [None, 1])
def test_large_swap_of_two_destinations_copies_leaf_by_leaf(threads):
    rng = _rng()
    a = rng.standard_normal(N).astype(F32)
    b = rng.standard_normal(N).astype(F32)
    # walk order: a <- b, then b <- a (which now holds b's values): both end as old b
    run_both({"a": a, "b": b}, {"a": b, "b": a}, threads=threads)
    dst = {"a": a, "b": b}
    expected = b.copy()
    fastload.loadmodel(dst, {"a": b, "b": a}, threads=threads)
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(b, expected)


def test_large_tie_with_one_mismatched_element_is_rejected_unchanged():
    rng = _rng()
    w = rng.standard_normal(N).astype(F32)
    s1 = rng.standard_normal(N)
    s2 = s1.astype(F32)
    run_both([w, w.view()], [s1, s2])  # equal once cast: accepted
    s3 = s2.copy()
    s3[-1] = np.nextafter(s3[-1], np.float32(np.inf))
    _, _, expected = run_both([w, w], [s1, s3])
    assert type(expected) is fastload.LoadError


def test_large_bfloat16_destination_from_float32_matches_reference():
    if not BFLOAT16:
        pytest.skip("ml_dtypes is not installed")
    rng = _rng()
    run_both({"w": np.zeros(N, BFLOAT16[0])}, {"w": rng.standard_normal(N).astype(F32)})


def test_float64_to_float16_rounds_once_like_numpy():
    x = 1 + 2**-11 + 2**-40  # rounding through float32 first would give 1.0
    dst = np.zeros(3, F16)
    fastload.loadmodel(dst, np.array([x, 65519.0, 65520.0]))
    with np.errstate(over="ignore"):
        expected = np.array([x, 65519.0, 65520.0]).astype(F16)
    assert dst.tobytes() == expected.tobytes()
    assert dst[0] != 1.0 and dst[2] == np.inf


@pytest.mark.parametrize("high", [0x3F80, 0x3F81, 0xBEE9], ids=hex)
def test_float32_to_bfloat16_rounds_like_ml_dtypes(high):
    if not BFLOAT16:
        pytest.skip("ml_dtypes is not installed")
    # every float32 whose top 16 bits are `high`: halfway cases, sticky bits, ties to even
    src = ((np.uint32(high) << 16) | np.arange(1 << 16, dtype=np.uint32)).view(F32)
    dst = np.zeros(src.shape, BFLOAT16[0])
    fastload.loadmodel(dst, src)
    expected = src.astype(BFLOAT16[0])
    bad = np.flatnonzero(dst.view(np.uint16) != expected.view(np.uint16))
    assert bad.size == 0, [hex(int(src.view(np.uint32)[i])) for i in bad[:8]]
