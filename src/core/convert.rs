//! Vectorised conversions of contiguous, aligned runs.
//!
//! The element-wise kernels in `kernels` handle any layout; a contiguous run of aligned
//! elements is converted here instead, as slices the compiler can vectorise, in an AVX2
//! build of the same code when the processor has it, and with the processor's own
//! float16 conversions (F16C) where `half` finds them.

use super::dtype::{with_element, Element, Scalar};
use super::half_bits;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Elements per step of the float16 paths: converted in bulk, then NaNs fixed up while
/// the step is still in cache.
const STEP: usize = 4096;

/// Converts `n` contiguous elements from `from` at `s` to `to` at `d`. Returns `false`
/// (doing nothing) when either run is misaligned for its element type.
///
/// # Safety
/// `s` must be valid for reads of `n` elements of `from`, `d` for writes of `n` elements
/// of `to`, and the two must not overlap.
pub unsafe fn convert_contiguous(
    from: Scalar,
    to: Scalar,
    d: *mut u8,
    s: *const u8,
    n: usize,
) -> bool {
    if s as usize % from.size() != 0 || d as usize % to.size() != 0 {
        return false;
    }
    // SAFETY: aligned, in bounds and disjoint per the caller; every element type here is
    // plain old data, so any bit pattern is a valid value.
    unsafe {
        match (from, to) {
            (Scalar::F32, Scalar::F16) => f32_to_f16(slice(s, n), slice_mut(d, n)),
            (Scalar::F16, Scalar::F32) => f16_to_f32(slice(s, n), slice_mut(d, n)),
            (Scalar::F32, Scalar::BF16) => f32_to_bf16(slice(s, n), slice_mut(d, n)),
            _ => with_element!(from, S => with_element!(to, D => {
                generic::<S, D>(slice(s, n), slice_mut(d, n))
            })),
        }
    }
    true
}

/// # Safety
/// `p` is aligned and valid for reads of `n` elements of `T`.
unsafe fn slice<'a, T>(p: *const u8, n: usize) -> &'a [T] {
    // SAFETY: per this function's contract.
    unsafe { std::slice::from_raw_parts(p as *const T, n) }
}

/// # Safety
/// `p` is aligned, valid for writes of `n` elements of `T`, and not otherwise borrowed.
unsafe fn slice_mut<'a, T>(p: *mut u8, n: usize) -> &'a mut [T] {
    // SAFETY: per this function's contract.
    unsafe { std::slice::from_raw_parts_mut(p as *mut T, n) }
}

/// float32 -> float16 with F16C where present; NaNs then get NumPy's payload bits.
fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    for (s, d) in src.chunks(STEP).zip(dst.chunks_mut(STEP)) {
        f32_to_f16_bulk(s, d);
        if any_nan(s) {
            for (x, h) in s.iter().zip(d.iter_mut()) {
                if x.is_nan() {
                    *h = half_bits::f16_from_f32(*x);
                }
            }
        }
    }
}

/// Whether any element is NaN; branch-free so that it vectorises.
fn any_nan(values: &[f32]) -> bool {
    values.iter().fold(false, |found, x| found | x.is_nan())
}

fn f32_to_f16_bulk(src: &[f32], dst: &mut [f16]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the processor has F16C and AVX.
        return unsafe { x86::f32_to_f16(src, dst) };
    }
    dst.convert_from_f32_slice(src);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::half_bits;
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    /// float32 -> bfloat16 as ml_dtypes rounds it (see `half_bits::bf16_from_f32`), eight
    /// at a time.
    #[target_feature(enable = "avx2")]
    pub unsafe fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
        let n = src.len().min(dst.len());
        let whole = n - n % 8;
        let (one, bias, abs, inf) = (
            _mm256_set1_epi32(1),
            _mm256_set1_epi32(0x7fff),
            _mm256_set1_epi32(0x7fff_ffff),
            _mm256_set1_epi32(0x7f80_0000),
        );
        let (sign, quiet) = (_mm256_set1_epi32(0x8000), _mm256_set1_epi32(0x7fc0));
        for i in (0..whole).step_by(8) {
            // SAFETY: `i + 8 <= n`, within both slices; unaligned loads and stores.
            unsafe {
                let x = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
                let high = _mm256_srli_epi32::<16>(x);
                let lsb = _mm256_and_si256(high, one);
                let rounded =
                    _mm256_srli_epi32::<16>(_mm256_add_epi32(x, _mm256_add_epi32(bias, lsb)));
                let nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs), inf);
                let quiet_nan = _mm256_or_si256(_mm256_and_si256(high, sign), quiet);
                let bits = _mm256_blendv_epi8(rounded, quiet_nan, nan);
                // Pack the eight 32-bit results (each below 2^16) into 16 bits, in order.
                let packed = _mm256_packus_epi32(bits, bits);
                let ordered = _mm256_permute4x64_epi64::<0b1000>(packed);
                _mm_storeu_si128(
                    dst.as_mut_ptr().add(i) as *mut __m128i,
                    _mm256_castsi256_si128(ordered),
                );
            }
        }
        for i in whole..n {
            dst[i] = half_bits::bf16_from_f32(src[i]);
        }
    }

    /// float32 -> float16, eight at a time, rounding to nearest-even.
    #[target_feature(enable = "avx,f16c")]
    pub unsafe fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
        let n = src.len().min(dst.len());
        let whole = n - n % 8;
        for i in (0..whole).step_by(8) {
            // SAFETY: `i + 8 <= n`, within both slices; unaligned loads and stores.
            unsafe {
                let x = _mm256_loadu_ps(src.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<0>(x); // 0: round to nearest-even
                _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, h);
            }
        }
        for i in whole..n {
            dst[i] = f16::from_f32(src[i]);
        }
    }
}

/// float32 -> bfloat16 with AVX2 where present.
fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2.
        return unsafe { x86::f32_to_bf16(src, dst) };
    }
    generic(src, dst)
}

/// float16 -> float32 with F16C where present; NaNs then get NumPy's payload bits.
fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    for (s, d) in src.chunks(STEP).zip(dst.chunks_mut(STEP)) {
        s.convert_to_f32_slice(d);
        // Branch-free, so that it vectorises.
        if s.iter()
            .fold(false, |found, h| found | (h.to_bits() & 0x7fff > 0x7c00))
        {
            for (h, x) in s.iter().zip(d.iter_mut()) {
                if h.is_nan() {
                    *x = half_bits::f16_to_f32(*h);
                }
            }
        }
    }
}

fn generic<S: Element, D: Element>(src: &[S], dst: &mut [D]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2.
        return unsafe { generic_avx2(src, dst) };
    }
    generic_body(src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn generic_avx2<S: Element, D: Element>(src: &[S], dst: &mut [D]) {
    generic_body(src, dst)
}

#[inline(always)]
fn generic_body<S: Element, D: Element>(src: &[S], dst: &mut [D]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = D::from_element(*s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    fn bytes<T>(values: &[T]) -> &[u8] {
        // SAFETY: plain-old-data elements viewed as their bytes.
        unsafe {
            std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values))
        }
    }

    fn check<S: Element + 'static, D: Element + 'static>(src: &[S]) {
        let mut fast: Vec<D> = src.iter().map(|s| D::from_element(*s)).collect();
        let slow = fast.clone();
        for d in fast.iter_mut() {
            *d = D::from_element(0u8);
        }
        // SAFETY: both vectors hold `src.len()` aligned elements.
        let done = unsafe {
            convert_contiguous(
                scalar::<S>(),
                scalar::<D>(),
                fast.as_mut_ptr() as *mut u8,
                src.as_ptr() as *const u8,
                src.len(),
            )
        };
        assert!(done);
        assert_eq!(bytes(&fast), bytes(&slow));
    }

    fn scalar<T: 'static>() -> Scalar {
        use std::any::TypeId;
        let id = TypeId::of::<T>();
        if id == TypeId::of::<f32>() {
            Scalar::F32
        } else if id == TypeId::of::<f16>() {
            Scalar::F16
        } else if id == TypeId::of::<bf16>() {
            Scalar::BF16
        } else if id == TypeId::of::<f64>() {
            Scalar::F64
        } else {
            Scalar::I32
        }
    }

    #[test]
    fn vectorised_paths_agree_with_the_element_kernels_bit_for_bit() {
        // Every kind of float32: normals, subnormals, infinities, NaNs with payloads.
        let values: Vec<f32> = (0..20_000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .collect();
        check::<f32, f16>(&values);
        check::<f32, bf16>(&values);
        check::<f32, f64>(&values);
        check::<f32, i32>(&values);
        let halves: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        check::<f16, f32>(&halves);
        check::<f16, bf16>(&halves);
    }

    #[test]
    fn misaligned_runs_are_declined() {
        let src = [0u8; 16];
        let mut dst = [0u8; 16];
        // SAFETY: 3 elements fit in both buffers from offset 1.
        let done = unsafe {
            convert_contiguous(
                Scalar::F32,
                Scalar::F16,
                dst.as_mut_ptr(),
                src.as_ptr().add(1),
                3,
            )
        };
        assert!(!done);
    }
}
