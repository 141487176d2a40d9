//! Vectorised conversions of contiguous, aligned runs.
//!
//! The element-wise kernels in `kernels` handle any layout; a contiguous run of aligned
//! elements is converted here instead, as slices the compiler can vectorise, in an AVX2
//! build of the same code when the processor has it, and with the processor's own
//! float16 conversions where it has them (`convert_x86`).

#[cfg(target_arch = "x86_64")]
use super::convert_x86 as x86;
use super::dtype::{with_element, Element, Scalar};
use super::half_bits;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Elements per step of the float16 paths: converted in bulk, then NaNs fixed up while
/// the step is still in cache.
const STEP: usize = 4096;

/// Converts `n` contiguous elements from `from` at `s` to `to` at `d`. Returns `false`
/// (doing nothing) when either run is misaligned for its element type. With `stream`
/// (a large load), the commonest casts write past the caches: fence (`stream::fence`)
/// before another thread reads `d`.
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
    stream: bool,
) -> bool {
    if !(s as usize).is_multiple_of(from.size()) || !(d as usize).is_multiple_of(to.size()) {
        return false;
    }
    // SAFETY: aligned, in bounds and disjoint per the caller; every element type here is
    // plain old data, so any bit pattern is a valid value.
    unsafe {
        match (from, to) {
            (Scalar::F32, Scalar::F16) => f32_to_f16(slice(s, n), slice_mut(d, n), stream),
            (Scalar::F16, Scalar::F32) => f16_to_f32(slice(s, n), slice_mut(d, n)),
            (Scalar::F32, Scalar::BF16) => f32_to_bf16(slice(s, n), slice_mut(d, n), stream),
            (Scalar::F64, Scalar::F32) => f64_to_f32(slice(s, n), slice_mut(d, n), stream),
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

/// float32 -> float16 in one pass; NaNs then get NumPy's payload bits.
fn f32_to_f16(src: &[f32], dst: &mut [f16], stream: bool) {
    let n = src.len().min(dst.len());
    // Steps after the first begin on a destination cache line, so that the kernel
    // converts each in whole lines.
    let mut end = dst.as_ptr().align_offset(64).saturating_add(STEP).min(n);
    let mut start = 0;
    while start < n {
        let (s, d) = (&src[start..end], &mut dst[start..end]);
        if f32_to_f16_bulk(s, d, stream) {
            for (x, h) in s.iter().zip(d.iter_mut()) {
                if x.is_nan() {
                    *h = half_bits::f16_from_f32(*x);
                }
            }
        }
        (start, end) = (end, (end + STEP).min(n));
    }
}

/// float32 -> float16, NaNs aside; returns whether a NaN may need fixing up.
fn f32_to_f16_bulk(src: &[f32], dst: &mut [f16], stream: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F.
            return unsafe { x86::f32_to_f16_avx512(src, dst, stream) };
        }
        if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
        {
            // SAFETY: the processor has F16C and AVX.
            return unsafe { x86::f32_to_f16_avx(src, dst, stream) };
        }
    }
    let _ = stream;
    dst.convert_from_f32_slice(src);
    // Branch-free, so that it vectorises.
    src.iter().fold(false, |found, x| found | x.is_nan())
}

/// float32 -> bfloat16 with AVX-512 or AVX2 where present.
fn f32_to_bf16(src: &[f32], dst: &mut [bf16], stream: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F.
            return unsafe { x86::f32_to_bf16_avx512(src, dst, stream) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2.
            return unsafe { x86::f32_to_bf16_avx2(src, dst, stream) };
        }
    }
    generic(src, dst)
}

/// float64 -> float32 with AVX-512 or AVX where present.
fn f64_to_f32(src: &[f64], dst: &mut [f32], stream: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F.
            return unsafe { x86::f64_to_f32_avx512(src, dst, stream) };
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the processor has AVX.
            return unsafe { x86::f64_to_f32_avx(src, dst, stream) };
        }
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

    /// Converts `src` into `dst` by [`convert_contiguous`], which must take the run.
    fn convert_into<S: Element + 'static, D: Element + 'static>(
        src: &[S],
        dst: &mut [D],
        stream: bool,
    ) {
        assert_eq!(src.len(), dst.len());
        // SAFETY: both slices hold `src.len()` aligned elements and are disjoint.
        let done = unsafe {
            convert_contiguous(
                scalar::<S>(),
                scalar::<D>(),
                dst.as_mut_ptr() as *mut u8,
                src.as_ptr() as *const u8,
                src.len(),
                stream,
            )
        };
        crate::core::stream::fence();
        assert!(done);
    }

    /// Converts `src` through the caches and past them; both must give the element
    /// kernels' bits.
    fn check<S: Element + 'static, D: Element + 'static>(src: &[S]) {
        let slow: Vec<D> = src.iter().map(|s| D::from_element(*s)).collect();
        for stream in [false, true] {
            let mut fast: Vec<D> = vec![D::from_element(0u8); src.len()];
            convert_into(src, &mut fast, stream);
            assert_eq!(bytes(&fast), bytes(&slow), "stream: {stream}");
        }
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

    /// `n` floats of every kind: normals, subnormals, infinities, NaNs with payloads.
    fn floats(n: u32) -> Vec<f32> {
        (0..n)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .collect()
    }

    /// Doubles beyond float32's range and below its subnormals too.
    fn doubles(values: &[f32]) -> Vec<f64> {
        values.iter().map(|x| f64::from(*x) * 1e30).collect()
    }

    #[test]
    fn vectorised_paths_agree_with_the_element_kernels_bit_for_bit() {
        let values = floats(20_000);
        check::<f32, f16>(&values);
        check::<f32, bf16>(&values);
        check::<f32, f64>(&values);
        check::<f32, i32>(&values);
        check::<f64, f32>(&doubles(&values));
        let halves: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        check::<f16, f32>(&halves);
        check::<f16, bf16>(&halves);
    }

    /// Short runs and runs starting and ending anywhere in a cache line: the kernels'
    /// scalar path, and their unaligned steps overlapping the aligned ones.
    fn check_lengths<S: Element + 'static, D: Element + 'static>(values: &[S]) {
        let lengths = [0, 1, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 100, 4099];
        for n in lengths {
            for offset in [0, 1, 3, 17] {
                let src = &values[offset..offset + n];
                let slow: Vec<D> = src.iter().map(|s| D::from_element(*s)).collect();
                for stream in [false, true] {
                    let mut buffer: Vec<D> = vec![D::from_element(0u8); n + 64];
                    let dst = &mut buffer[offset..offset + n];
                    convert_into(src, dst, stream);
                    assert_eq!(bytes(dst), bytes(&slow), "n {n}, offset {offset}");
                }
            }
        }
    }

    #[test]
    fn runs_of_any_length_and_start_agree_with_the_element_kernels() {
        let values = floats(4200);
        check_lengths::<f32, f16>(&values);
        check_lengths::<f32, bf16>(&values);
        check_lengths::<f64, f32>(&doubles(&values));
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
                false,
            )
        };
        assert!(!done);
    }
}
