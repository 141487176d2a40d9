"""Dtype casts: the native kernels and NumPy's fallback give NumPy's (and ml_dtypes') bits."""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest

import fastload

NATIVE = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    ml_dtypes.bfloat16,
]
OTHER = [np.complex64, np.complex128, ml_dtypes.float8_e4m3fn, np.dtype(">f4"), np.dtype(">i8")]


def sample(dtype, n=4099, seed=0):
    """Values that exercise rounding, overflow, signs, NaN and infinities."""
    rng = np.random.default_rng(seed)
    base = np.concatenate(
        [
            rng.normal(0, 1e3, n // 3),
            rng.normal(0, 1, n // 3),
            rng.integers(-(2**40), 2**40, n - 2 * (n // 3)).astype(np.float64),
            [0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.5, 65504.0, 65520.0, 1e-8, np.nan, np.inf, -np.inf],
        ]
    )
    with np.errstate(all="ignore"):
        if np.dtype(dtype).kind in "iub":
            info_min = -(2**7) if np.dtype(dtype).kind == "i" else 0
            return rng.integers(info_min, 127, base.size).astype(dtype)
        return base.astype(dtype)


def expected(dst_dtype, src):
    out = np.empty(src.shape, dtype=dst_dtype)
    with np.errstate(all="ignore"):
        np.copyto(out, src, casting="unsafe")
    return out


def same_bits(a, b):
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize(
    "src_dtype,dst_dtype",
    [
        (s, d)
        for s, d in itertools.product(NATIVE, NATIVE)
        # float -> int under "unsafe" is platform-defined in NumPy for out-of-range values
        if not (np.dtype(s).kind == "f" or s is ml_dtypes.bfloat16) or np.dtype(d).kind not in "iu"
    ],
)
def test_native_casts_match_numpy_bit_for_bit(src_dtype, dst_dtype):
    src = sample(src_dtype)
    dst = np.zeros(src.shape, dtype=dst_dtype)
    fastload.loadmodel(dst, src, casting="unsafe")
    assert same_bits(dst, expected(dst_dtype, src))


def test_float_to_int_in_range_values_match_numpy():
    src = np.linspace(-100.7, 100.7, 1001)
    for dtype in (np.int8, np.int32, np.int64, np.uint8):
        dst = np.zeros(src.shape, dtype=dtype)
        values = np.abs(src) if np.dtype(dtype).kind == "u" else src
        fastload.loadmodel(dst, values, casting="unsafe")
        assert same_bits(dst, expected(dtype, values))


def test_large_integers_into_half_floats_round_like_numpy():
    src = np.array([2**24 + 1, 2**53 + 1, 65519, 65520, -(2**31), 2**62], dtype=np.int64)
    for dtype in (np.float16, ml_dtypes.bfloat16):
        dst = np.zeros(src.shape, dtype=dtype)
        fastload.loadmodel(dst, src, casting="unsafe")
        assert same_bits(dst, expected(dtype, src))


@pytest.mark.parametrize("dtype", OTHER, ids=str)
def test_casts_numpy_performs_match_numpy(dtype):
    src = sample(np.float64)
    dst = np.zeros(src.shape, dtype=dtype)
    fastload.loadmodel(dst, src, casting="unsafe")
    assert same_bits(dst, expected(dtype, src))
    back = np.zeros(src.shape, dtype=np.float64)
    fastload.loadmodel(back, dst, casting="unsafe")
    assert same_bits(back, expected(np.float64, dst))


def test_strided_casting_copy_matches_numpy():
    src = sample(np.float64)[:240].reshape(6, 8, 5)[::2, ::-3, 1:].transpose(2, 0, 1)
    assert src.shape == (4, 3, 3) and not src.flags.c_contiguous
    base = np.zeros((12, 40), dtype=np.float32)
    # Rows 3 apart, columns running backwards two at a time, a middle axis of whole rows.
    dst = np.lib.stride_tricks.as_strided(
        base[:, ::-1], shape=(4, 3, 3), strides=(3 * 160, -8, 160)
    )
    assert not dst.flags.c_contiguous and not dst.flags.f_contiguous
    fastload.loadmodel(dst, src)
    assert same_bits(np.ascontiguousarray(dst), expected(np.float32, src))
    # Nothing outside the view was written.
    assert np.count_nonzero(base) == np.count_nonzero(src)


def test_f64_to_bfloat16_rounds_as_ml_dtypes_does():
    # 1 + 2^-8 + 2^-30 lies just above a bfloat16 halfway point: rounded once it goes up,
    # rounded through float32 it lands on the halfway point and then goes to even. ml_dtypes
    # releases differ on which; the installed one decides.
    src = np.array([1 + 2**-8 + 2**-30, 1 + 2**-8 - 2**-30, 3.0e38, -1e-40])
    dst = np.zeros(src.shape, dtype=ml_dtypes.bfloat16)
    fastload.loadmodel(dst, src)
    assert same_bits(dst, src.astype(ml_dtypes.bfloat16))


@pytest.mark.parametrize(
    "rule,src,dst,allowed",
    [
        ("same_kind", np.float64, np.float32, True),
        ("same_kind", np.float64, np.int32, False),
        ("safe", np.float64, np.float32, False),
        ("safe", np.int16, np.float32, True),
        ("no", np.float32, np.float64, False),
        ("equiv", np.dtype("<f4"), np.dtype(">f4"), True),
        ("unsafe", np.complex128, np.float32, True),
        ("same_kind", np.float32, ml_dtypes.bfloat16, True),
    ],
)
def test_casting_rule_is_numpys(rule, src, dst, allowed, snapshot):
    source = np.arange(6).astype(src)
    target = np.zeros(6, dtype=dst)
    assert np.can_cast(source.dtype, target.dtype, rule) == allowed
    if allowed:
        fastload.loadmodel(target, source, casting=rule)
        assert same_bits(target, expected(dst, source))
    else:
        snap = snapshot(target)
        with pytest.raises(fastload.LoadError) as info:
            fastload.loadmodel({"w": target}, {"w": source}, casting=rule)
        assert type(info.value) is fastload.LoadError
        assert info.value.problems[0][0] == "w"
        assert "cannot cast" in info.value.problems[0][1]
        snap.assert_unchanged()


FLOATS_NUMPY_CALLS_UNSAFE = [
    (ml_dtypes.bfloat16, np.float16),
    (ml_dtypes.float8_e4m3fn, np.float16),
    (ml_dtypes.bfloat16, ml_dtypes.float8_e5m2),
]


@pytest.mark.parametrize("src,dst", FLOATS_NUMPY_CALLS_UNSAFE)
def test_floats_of_ml_dtypes_cast_to_other_floats_under_same_kind(src, dst):
    # NumPy finds these casts unsafe, as it does not count ml_dtypes' types as floats.
    source = np.array([0.5, -3.0, 1e-3, 448.0, np.nan, np.inf]).astype(src)
    target = np.zeros(source.shape, dtype=dst)
    fastload.loadmodel(target, source)
    assert same_bits(target, source.astype(dst))


@pytest.mark.parametrize("src,dst", FLOATS_NUMPY_CALLS_UNSAFE)
def test_floats_of_ml_dtypes_keep_numpys_rules_across_kinds(src, dst, snapshot):
    target = np.zeros(3, dtype=np.int32)
    snap = snapshot(target)
    with pytest.raises(fastload.LoadError, match="under casting='same_kind'|same_kind"):
        fastload.loadmodel({"w": target}, {"w": np.ones(3, dtype=src)})
    snap.assert_unchanged()
    with pytest.raises(fastload.LoadError, match="cannot cast"):
        fastload.loadmodel(np.zeros(3, dtype=dst), np.ones(3, dtype=src), casting="safe")


def test_floats_without_a_cast_between_them_are_refused_before_anything_is_written():
    e8m0 = getattr(ml_dtypes, "float8_e8m0fnu", None)
    if e8m0 is None or np.can_cast(ml_dtypes.float8_e4m3fn, e8m0, "unsafe"):
        pytest.skip("this ml_dtypes has no float8_e8m0fnu, or casts float8_e4m3fn to it")
    memory = np.zeros(6, dtype=e8m0)
    dst = {"w": np.zeros(4, np.float32), "a": memory[:4], "b": memory[2:]}
    src = {"w": np.ones(4, np.float32), "a": np.ones(4), "b": np.ones(4, ml_dtypes.float8_e4m3fn)}
    with pytest.raises(fastload.LoadError, match="b: cannot cast float8_e4m3fn to float8_e8m0fnu"):
        fastload.loadmodel(dst, src)
    assert not dst["w"].any() and memory.view(np.uint8).tolist() == [0] * 6


def test_a_complex_number_is_true_where_either_part_is_not_zero():
    dst = np.zeros(3, dtype=bool)
    fastload.loadmodel(dst, np.array([1j, 0, 2]), casting="unsafe")
    assert dst.tolist() == [True, False, True]


def test_unknown_casting_rule_is_a_value_error():
    with pytest.raises(ValueError, match="casting"):
        fastload.loadmodel(np.zeros(1), np.zeros(1), casting="sometimes")


NAN_BITS = {
    np.dtype(np.float16): [0x7C01, 0xFC09, 0x7E00, 0xFE00, 0x7DFF, 0x7C00, 0x3C01],
    np.dtype(ml_dtypes.bfloat16): [0x7F81, 0xFFC1, 0x7FC0, 0xFFFF, 0x7F80, 0x3F81],
    np.dtype(np.float32): [0x7F800001, 0xFF812345, 0x7FC00000, 0xFFC00000, 0x7FBFFFFF, 0x3F808001],
    np.dtype(np.float64): [
        0x7FF0000000000001,
        0xFFF8000000000000,
        0x7FF4000000000000,
        0x7FFFFFFFFFFFFFFF,
        0x3FF0000000000001,
    ],
}


@pytest.mark.parametrize("src_dtype", list(NAN_BITS), ids=str)
@pytest.mark.parametrize(
    "dst_dtype", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64], ids=str
)
def test_nan_payloads_and_signs_match_numpy_and_ml_dtypes(src_dtype, dst_dtype):
    bits = NAN_BITS[src_dtype]
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[src_dtype.itemsize]
    src = np.array(bits, dtype=uint).view(src_dtype)
    dst = np.zeros(src.shape, dtype=dst_dtype)
    fastload.loadmodel(dst, src, casting="unsafe")
    assert same_bits(dst, expected(dst_dtype, src))


@pytest.mark.parametrize(
    "src_dtype,dst_dtype",
    [
        (np.float32, np.float16),
        (np.float32, ml_dtypes.bfloat16),
        (np.float64, np.float32),
    ],
    ids=str,
)
def test_large_casts_written_past_the_caches_match_numpy(src_dtype, dst_dtype):
    # Loads writing over 32 MiB store past the caches; destinations start off a cache
    # line and sizes leave a tail, and the values include NaN payloads and subnormals.
    n = (33 << 20) // np.dtype(dst_dtype).itemsize + 7
    uint = {4: np.uint32, 8: np.uint64}[np.dtype(src_dtype).itemsize]
    rng = np.random.default_rng(3)
    src = rng.integers(0, np.iinfo(uint).max, n, dtype=uint, endpoint=True).view(src_dtype)
    for offset in (0, 3):
        buffer = np.zeros(n + offset, dtype=dst_dtype)
        dst = buffer[offset:]
        fastload.loadmodel([dst], [src], casting="unsafe")
        assert same_bits(dst, expected(dst_dtype, src))
        assert not buffer[:offset].view(np.uint8).any()
