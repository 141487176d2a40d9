//! x86 kernels for the float16 and bfloat16 conversions of `convert`, and float64 ->
//! float32: AVX-512 where the processor has it, AVX2/F16C otherwise.
//!
//! Each converts a whole slice in one pass (a cast is bound by memory, and a second pass
//! over the data costs a third of the speed). Float16 kernels convert NaNs with the
//! processor's payload rule and report whether they met one, so that the caller can give
//! those elements NumPy's bits; bfloat16 kernels give ml_dtypes' bits directly.
//!
//! The bulk of each kernel stores whole cache lines. In a large load (`stream`) it stores
//! past the caches, reads source pages in the order streaming copies do (four side by
//! side on Intel processors) and fetches its reads ahead: a cast reads two or four bytes
//! for each one it writes, and with one stream of reads and the hardware prefetcher alone
//! it moved 22 GB/s for float32 -> float16 on two cores of an Intel Xeon, where a copy
//! moves 33 (see [`cover`]). On an AMD EPYC without AVX-512, the AVX2 kernels' streaming
//! took bfloat16 and float64 casts of the gpt2 tree from 0.6x to 1.0x the copy limit.
//! The caller fences after.

use super::half_bits;
use super::stream::{fetch_next_block, page_by_page, PAGE};
use half::{bf16, f16};
use std::arch::x86_64::*;
use std::ops::Range;

/// float32 -> float16, thirty-two at a time, rounding to nearest-even. Returns whether a
/// NaN was among the elements converted.
#[target_feature(enable = "avx512f")]
pub unsafe fn f32_to_f16_avx512(src: &[f32], dst: &mut [f16], stream: bool) -> bool {
    let n = src.len().min(dst.len());
    let mut nan: u16 = 0;
    let (from, to) = (src.as_ptr(), dst.as_mut_ptr());
    // Runs shorter than a step (small arrays): sixteen at a time through a buffer.
    let mut short_nan: u16 = 0;
    let short = |r: Range<usize>| {
        for start in r.clone().step_by(16) {
            let len = (r.end - start).min(16);
            let mut out = [0u16; 16];
            // SAFETY: the mask loads only the `len` elements from `start`, inside `src`;
            // `len` elements are copied out, inside `dst`.
            unsafe {
                let x = _mm512_maskz_loadu_ps(((1u32 << len) - 1) as u16, from.add(start));
                short_nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
                let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
                _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, h);
                std::ptr::copy_nonoverlapping(out.as_ptr(), to.add(start) as *mut u16, len);
            }
        }
    };
    cover::<f32, f16>(to, n, 32, stream, short, |i, store| {
        // SAFETY: `i + 32 <= n`, within both slices; `store` fits `dst + i`.
        unsafe {
            let at = from.add(i);
            fetch_ahead(at as *const u8, stream);
            let (x, y) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)));
            nan |=
                _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(y, y);
            let lo = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
            let hi = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(y);
            store_line(to.add(i) as *mut __m512i, join(lo, hi), store);
        }
    });
    (nan | short_nan) != 0
}

/// float32 -> float16, thirty-two at a time (eight a step for short runs), rounding to
/// nearest-even. Returns whether a NaN was among the elements converted in bulk (the last
/// few of a short run are converted exactly).
#[target_feature(enable = "avx,f16c")]
pub unsafe fn f32_to_f16_avx(src: &[f32], dst: &mut [f16], stream: bool) -> bool {
    let n = src.len().min(dst.len());
    let (from, to) = (src.as_ptr(), dst.as_mut_ptr());
    let mut nan = _mm256_setzero_ps();
    // Eight floats at `at` to float16, noting NaNs.
    let mut eight = |at: *const f32| {
        // SAFETY: the callers below read eight elements inside `src`.
        let x = unsafe { _mm256_loadu_ps(at) };
        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
        _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x)
    };
    let mut short_nan = false;
    let short = |r: Range<usize>| {
        let whole = r.start + r.len() / 8 * 8;
        for i in (r.start..whole).step_by(8) {
            // SAFETY: `i + 8 <= n`, within both slices; unaligned loads and stores.
            unsafe {
                let x = _mm256_loadu_ps(from.add(i));
                short_nan |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x)) != 0;
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
                _mm_storeu_si128(to.add(i) as *mut __m128i, h);
            }
        }
        convert_tail(
            &src[whole..r.end],
            &mut dst[whole..r.end],
            half_bits::f16_from_f32,
        );
    };
    cover::<f32, f16>(to, n, 32, stream, short, |i, store| {
        // SAFETY: `i + 32 <= n`, within both slices; `store` fits `dst + i`.
        unsafe {
            let at = from.add(i);
            fetch_ahead(at as *const u8, stream);
            let lo = _mm256_set_m128i(eight(at.add(8)), eight(at));
            let hi = _mm256_set_m128i(eight(at.add(24)), eight(at.add(16)));
            store_halves(to.add(i) as *mut __m256i, lo, hi, store);
        }
    });
    short_nan || _mm256_movemask_ps(nan) != 0
}

/// float32 -> bfloat16 as ml_dtypes rounds it (see `half_bits::bf16_from_f32`),
/// thirty-two at a time.
#[target_feature(enable = "avx512f")]
pub unsafe fn f32_to_bf16_avx512(src: &[f32], dst: &mut [bf16], stream: bool) {
    let n = src.len().min(dst.len());
    let (from, to) = (src.as_ptr(), dst.as_mut_ptr());
    let scalar =
        |r: Range<usize>| convert_tail(&src[r.clone()], &mut dst[r], half_bits::bf16_from_f32);
    cover::<f32, bf16>(to, n, 32, stream, scalar, |i, store| {
        // SAFETY: `i + 32 <= n`, within both slices; `store` fits `dst + i`.
        unsafe {
            let at = from.add(i);
            fetch_ahead(at as *const u8, stream);
            let lo = bf16_bits(_mm512_loadu_si512(at as *const __m512i));
            let hi = bf16_bits(_mm512_loadu_si512(at.add(16) as *const __m512i));
            store_line(to.add(i) as *mut __m512i, join(lo, hi), store);
        }
    });
}

/// Sixteen float32 bit patterns rounded to bfloat16 bits as ml_dtypes rounds them.
#[target_feature(enable = "avx512f")]
fn bf16_bits(x: __m512i) -> __m256i {
    let high = _mm512_srli_epi32::<16>(x);
    let lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
    let bias = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb);
    let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(x, bias));
    let magnitude = _mm512_and_si512(x, _mm512_set1_epi32(0x7fff_ffff));
    let nan = _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7f80_0000));
    let quiet_nan = _mm512_or_si512(
        _mm512_and_si512(high, _mm512_set1_epi32(0x8000)),
        _mm512_set1_epi32(0x7fc0),
    );
    // Each result is below 2^16: truncating to 16 bits keeps it whole.
    _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet_nan))
}

/// float64 -> float32, rounding to nearest-even as a C cast does (NaNs quieted, their
/// payloads' top bits kept), sixteen at a time.
#[target_feature(enable = "avx512f")]
pub unsafe fn f64_to_f32_avx512(src: &[f64], dst: &mut [f32], stream: bool) {
    let n = src.len().min(dst.len());
    let (from, to) = (src.as_ptr(), dst.as_mut_ptr());
    let scalar = |r: Range<usize>| convert_tail(&src[r.clone()], &mut dst[r], |x| x as f32);
    cover::<f64, f32>(to, n, 16, stream, scalar, |i, store| {
        // SAFETY: `i + 16 <= n`, within both slices; `store` fits `dst + i`.
        unsafe {
            let at = from.add(i);
            fetch_ahead(at as *const u8, stream);
            let lo = _mm256_castps_si256(_mm512_cvtpd_ps(_mm512_loadu_pd(at)));
            let hi = _mm256_castps_si256(_mm512_cvtpd_ps(_mm512_loadu_pd(at.add(8))));
            store_line(to.add(i) as *mut __m512i, join(lo, hi), store);
        }
    });
}

/// Bytes in a cache line.
const LINE: usize = 64;

/// How a step stores its line of the destination.
#[derive(Clone, Copy)]
enum Store {
    /// On a line boundary, through the caches.
    Cached,
    /// On a line boundary, past the caches.
    Streamed,
    /// Anywhere: a step at either end of a destination that starts or ends off a line.
    Unaligned,
}

/// Converts elements `0..n` written to `dst` by calling `convert(i, store)` for steps of
/// `step` elements (one destination line each), or `scalar` for fewer than `step`.
///
/// The steps between the destination's first and last line boundaries store whole
/// lines; a step at each end, where the destination starts or ends off a line,
/// overlaps them, converting a few elements twice to the same value. When streaming, the
/// source is read in the order streaming copies read it (`stream::page_by_page`): on an
/// Intel Xeon, several open DRAM pages, and a prefetcher stream each, read faster than
/// one (measured: float32 -> float16 on two cores moved 28 GB/s reading one page at a
/// time, 36 GB/s four at a time, where a copy moves 33).
#[inline(always)]
fn cover<S, D>(
    dst: *const D,
    n: usize,
    step: usize,
    stream: bool,
    scalar: impl FnOnce(Range<usize>),
    mut convert: impl FnMut(usize, Store),
) {
    if n < step {
        return scalar(0..n);
    }
    // Elements before the first line boundary (`dst` is aligned to its elements, so this
    // is below `step`); worked out here, as `align_offset` may decline to.
    let head = (LINE - dst as usize % LINE) % LINE / std::mem::size_of::<D>();
    debug_assert!(head < step);
    if head > 0 {
        convert(0, Store::Unaligned);
    }
    let whole = head + (n - head) / step * step;
    if stream {
        let page = PAGE / std::mem::size_of::<S>();
        page_by_page(head..whole, page, step, |i| convert(i, Store::Streamed));
    } else {
        for i in (head..whole).step_by(step) {
            convert(i, Store::Cached);
        }
    }
    if whole < n {
        convert(n - step, Store::Unaligned);
    }
}

/// Asks for the two lines a step reads from `from`, a block of pages ahead, when streaming.
#[inline(always)]
fn fetch_ahead(from: *const u8, stream: bool) {
    if stream {
        fetch_next_block(from, 2);
    }
}

/// Two halves of a line, in order.
#[target_feature(enable = "avx512f")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Stores one line's worth of bytes at `to`, as `store` says.
///
/// # Safety
/// `to` is valid for writes of 64 bytes, and on a line boundary unless `Unaligned`.
#[target_feature(enable = "avx512f")]
unsafe fn store_line(to: *mut __m512i, line: __m512i, store: Store) {
    // SAFETY: per this function's contract.
    unsafe {
        match store {
            Store::Cached => _mm512_store_si512(to, line),
            Store::Streamed => _mm512_stream_si512(to, line),
            Store::Unaligned => _mm512_storeu_si512(to, line),
        }
    }
}

/// Stores one line's worth of bytes at `to` in two halves, as `store` says.
///
/// # Safety
/// `to` is valid for writes of 64 bytes, and on a line boundary unless `Unaligned`.
#[target_feature(enable = "avx")]
unsafe fn store_halves(to: *mut __m256i, lo: __m256i, hi: __m256i, store: Store) {
    // SAFETY: per this function's contract.
    unsafe {
        match store {
            Store::Cached => {
                _mm256_store_si256(to, lo);
                _mm256_store_si256(to.add(1), hi);
            }
            Store::Streamed => {
                _mm256_stream_si256(to, lo);
                _mm256_stream_si256(to.add(1), hi);
            }
            Store::Unaligned => {
                _mm256_storeu_si256(to, lo);
                _mm256_storeu_si256(to.add(1), hi);
            }
        }
    }
}

/// float32 -> bfloat16 as ml_dtypes rounds it, thirty-two at a time.
#[target_feature(enable = "avx2")]
pub unsafe fn f32_to_bf16_avx2(src: &[f32], dst: &mut [bf16], stream: bool) {
    let n = src.len().min(dst.len());
    let (from, to) = (src.as_ptr(), dst.as_mut_ptr());
    let scalar =
        |r: Range<usize>| convert_tail(&src[r.clone()], &mut dst[r], half_bits::bf16_from_f32);
    // Eight floats at `at` to bfloat16 bits.
    let eight = |at: *const f32| {
        // SAFETY: the caller below reads eight elements inside `src`.
        let x = unsafe { _mm256_loadu_si256(at as *const __m256i) };
        let high = _mm256_srli_epi32::<16>(x);
        let bias = _mm256_add_epi32(
            _mm256_set1_epi32(0x7fff),
            _mm256_and_si256(high, _mm256_set1_epi32(1)),
        );
        let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(x, bias));
        let magnitude = _mm256_and_si256(x, _mm256_set1_epi32(0x7fff_ffff));
        let nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f80_0000));
        let quiet_nan = _mm256_or_si256(
            _mm256_and_si256(high, _mm256_set1_epi32(0x8000)),
            _mm256_set1_epi32(0x7fc0),
        );
        let bits = _mm256_blendv_epi8(rounded, quiet_nan, nan);
        // Pack the eight 32-bit results (each below 2^16) into 16 bits, in order.
        let packed = _mm256_packus_epi32(bits, bits);
        _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(packed))
    };
    cover::<f32, bf16>(to, n, 32, stream, scalar, |i, store| {
        // SAFETY: `i + 32 <= n`, within both slices; `store` fits `dst + i`.
        unsafe {
            let at = from.add(i);
            fetch_ahead(at as *const u8, stream);
            let lo = _mm256_set_m128i(eight(at.add(8)), eight(at));
            let hi = _mm256_set_m128i(eight(at.add(24)), eight(at.add(16)));
            store_halves(to.add(i) as *mut __m256i, lo, hi, store);
        }
    });
}

/// float64 -> float32, rounding to nearest-even as a C cast does, sixteen at a time.
#[target_feature(enable = "avx")]
pub unsafe fn f64_to_f32_avx(src: &[f64], dst: &mut [f32], stream: bool) {
    let n = src.len().min(dst.len());
    let (from, to) = (src.as_ptr(), dst.as_mut_ptr());
    let scalar = |r: Range<usize>| convert_tail(&src[r.clone()], &mut dst[r], |x| x as f32);
    // SAFETY: the caller below reads four elements inside `src`.
    let four = |at: *const f64| _mm_castps_si128(_mm256_cvtpd_ps(unsafe { _mm256_loadu_pd(at) }));
    cover::<f64, f32>(to, n, 16, stream, scalar, |i, store| {
        // SAFETY: `i + 16 <= n`, within both slices; `store` fits `dst + i`.
        unsafe {
            let at = from.add(i);
            fetch_ahead(at as *const u8, stream);
            let lo = _mm256_set_m128i(four(at.add(4)), four(at));
            let hi = _mm256_set_m128i(four(at.add(12)), four(at.add(8)));
            store_halves(to.add(i) as *mut __m256i, lo, hi, store);
        }
    });
}

#[inline(always)]
fn convert_tail<S: Copy, D>(src: &[S], dst: &mut [D], convert: impl Fn(S) -> D) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = convert(*s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stream::fence;

    /// Every kind of float32 (normals, subnormals, infinities, NaNs with payloads), in a
    /// length that leaves a head and a tail for each kernel.
    fn floats() -> Vec<f32> {
        (0..20_011u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .collect()
    }

    /// A kernel: source, destination, whether to stream.
    type F16Kernel = dyn Fn(&[f32], &mut [f16], bool) -> bool;
    type Kernel<S, D> = dyn Fn(&[S], &mut [D], bool);
    type Bf16Kernel = Kernel<f32, bf16>;
    type F64Kernel = Kernel<f64, f32>;

    /// Runs `kernel` into a destination starting `offset` elements past a line boundary,
    /// storing through the caches and past them, and returns each run's output.
    fn outputs<S: Copy, D: Copy + Default>(
        src: &[S],
        kernel: impl Fn(&[S], &mut [D], bool),
    ) -> Vec<Vec<D>> {
        let mut runs = Vec::new();
        for offset in [0, 1, 7, 31] {
            for stream in [false, true] {
                let mut buffer = vec![D::default(); src.len() + 64 + offset];
                let start = buffer.as_ptr().align_offset(LINE) + offset;
                let dst = &mut buffer[start..start + src.len()];
                kernel(src, dst, stream);
                fence();
                runs.push(dst.to_vec());
            }
        }
        runs
    }

    #[test]
    fn float16_kernels_round_like_numpy_and_report_nans() {
        let src = floats();
        let expected: Vec<u16> = src
            .iter()
            .map(|x| half_bits::f16_from_f32(*x).to_bits())
            .collect();
        let mut kernels: Vec<Box<F16Kernel>> = Vec::new();
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F.
            kernels.push(Box::new(|s, d, stream| unsafe {
                f32_to_f16_avx512(s, d, stream)
            }));
        }
        if is_x86_feature_detected!("avx") && is_x86_feature_detected!("f16c") {
            // SAFETY: the processor has AVX and F16C.
            kernels.push(Box::new(|s, d, stream| unsafe {
                f32_to_f16_avx(s, d, stream)
            }));
        }
        for kernel in &kernels {
            for dst in outputs(&src, |s, d, stream| assert!(kernel(s, d, stream))) {
                for (i, (got, want)) in dst.iter().zip(&expected).enumerate() {
                    if !src[i].is_nan() {
                        assert_eq!(got.to_bits(), *want, "element {i}");
                    }
                }
            }
            let finite = [1.0f32, -2.5, 65504.0, 1e-8, 3.0e5].repeat(20);
            let mut out = vec![f16::ZERO; finite.len()];
            assert!(!kernel(&finite, &mut out, false));
        }
    }

    #[test]
    fn bfloat16_kernels_give_ml_dtypes_bits() {
        let src = floats();
        let expected: Vec<u16> = src
            .iter()
            .map(|x| half_bits::bf16_from_f32(*x).to_bits())
            .collect();
        let mut kernels: Vec<Box<Bf16Kernel>> = Vec::new();
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F.
            kernels.push(Box::new(|s, d, stream| unsafe {
                f32_to_bf16_avx512(s, d, stream)
            }));
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2.
            kernels.push(Box::new(|s, d, stream| unsafe {
                f32_to_bf16_avx2(s, d, stream)
            }));
        }
        assert_all_give(&src, &kernels, |h| h.to_bits(), &expected);
    }

    #[test]
    fn float64_kernels_round_like_a_cast() {
        // Doubles of every kind: beyond float32's range, below its subnormals, NaNs with
        // payloads in their low and high bits.
        let src: Vec<f64> = (0..20_011u64)
            .map(|i| f64::from_bits(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .chain([f64::NAN, -f64::NAN, 1e300, -1e-300, 3.4028235677973366e38])
            .collect();
        let expected: Vec<u32> = src.iter().map(|x| (*x as f32).to_bits()).collect();
        let mut kernels: Vec<Box<F64Kernel>> = Vec::new();
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F.
            kernels.push(Box::new(|s, d, stream| unsafe {
                f64_to_f32_avx512(s, d, stream)
            }));
        }
        if is_x86_feature_detected!("avx") {
            // SAFETY: the processor has AVX.
            kernels.push(Box::new(|s, d, stream| unsafe {
                f64_to_f32_avx(s, d, stream)
            }));
        }
        assert_all_give(&src, &kernels, |x| x.to_bits(), &expected);
    }

    /// Asserts that every kernel, each way [`outputs`] runs it, gives `expected` bits.
    fn assert_all_give<S: Copy, D: Copy + Default, B: PartialEq + std::fmt::Debug>(
        src: &[S],
        kernels: &[Box<Kernel<S, D>>],
        bits: impl Fn(&D) -> B,
        expected: &[B],
    ) {
        for kernel in kernels {
            for dst in outputs(src, kernel) {
                let got: Vec<B> = dst.iter().map(&bits).collect();
                assert_eq!(got, expected);
            }
        }
    }
}
