//! x86 kernels for the float16 and bfloat16 conversions of `convert`: AVX-512 where the
//! processor has it, AVX2/F16C otherwise.
//!
//! Each converts a whole slice in one pass (a cast is bound by memory, and a second pass
//! over the data costs a third of the speed). Float16 kernels convert NaNs with the
//! processor's payload rule and report whether they met one, so that the caller can give
//! those elements NumPy's bits; bfloat16 kernels give ml_dtypes' bits directly.

use super::half_bits;
use half::{bf16, f16};
use std::arch::x86_64::*;

/// float32 -> float16, sixteen at a time, rounding to nearest-even. Returns whether a NaN
/// was among the elements converted in bulk (the tail is converted exactly).
#[target_feature(enable = "avx512f")]
pub unsafe fn f32_to_f16_avx512(src: &[f32], dst: &mut [f16]) -> bool {
    let n = src.len().min(dst.len());
    let whole = n - n % 16;
    let mut nan: u16 = 0;
    for i in (0..whole).step_by(16) {
        // SAFETY: `i + 16 <= n`, within both slices; unaligned loads and stores.
        unsafe {
            let x = _mm512_loadu_ps(src.as_ptr().add(i));
            nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
            let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, h);
        }
    }
    convert_tail(&src[whole..n], &mut dst[whole..n], half_bits::f16_from_f32);
    nan != 0
}

/// float32 -> float16, eight at a time, rounding to nearest-even. Returns whether a NaN
/// was among the elements converted in bulk (the tail is converted exactly).
#[target_feature(enable = "avx,f16c")]
pub unsafe fn f32_to_f16_avx(src: &[f32], dst: &mut [f16]) -> bool {
    let n = src.len().min(dst.len());
    let whole = n - n % 8;
    let mut nan = _mm256_setzero_ps();
    for i in (0..whole).step_by(8) {
        // SAFETY: `i + 8 <= n`, within both slices; unaligned loads and stores.
        unsafe {
            let x = _mm256_loadu_ps(src.as_ptr().add(i));
            nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
            _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, h);
        }
    }
    convert_tail(&src[whole..n], &mut dst[whole..n], half_bits::f16_from_f32);
    _mm256_movemask_ps(nan) != 0
}

/// float32 -> bfloat16 as ml_dtypes rounds it (see `half_bits::bf16_from_f32`), sixteen
/// at a time.
#[target_feature(enable = "avx512f")]
pub unsafe fn f32_to_bf16_avx512(src: &[f32], dst: &mut [bf16]) {
    let n = src.len().min(dst.len());
    let whole = n - n % 16;
    let (one, bias) = (_mm512_set1_epi32(1), _mm512_set1_epi32(0x7fff));
    let (abs, inf) = (
        _mm512_set1_epi32(0x7fff_ffff),
        _mm512_set1_epi32(0x7f80_0000),
    );
    let (sign, quiet) = (_mm512_set1_epi32(0x8000), _mm512_set1_epi32(0x7fc0));
    for i in (0..whole).step_by(16) {
        // SAFETY: `i + 16 <= n`, within both slices; unaligned loads and stores.
        unsafe {
            let x = _mm512_loadu_si512(src.as_ptr().add(i) as *const __m512i);
            let high = _mm512_srli_epi32::<16>(x);
            let lsb = _mm512_and_si512(high, one);
            let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(x, _mm512_add_epi32(bias, lsb)));
            let nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(x, abs), inf);
            let quiet_nan = _mm512_or_si512(_mm512_and_si512(high, sign), quiet);
            let bits = _mm512_mask_blend_epi32(nan, rounded, quiet_nan);
            // Each result is below 2^16: truncating to 16 bits keeps it whole.
            let packed = _mm512_cvtepi32_epi16(bits);
            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, packed);
        }
    }
    convert_tail(&src[whole..n], &mut dst[whole..n], half_bits::bf16_from_f32);
}

/// float32 -> bfloat16 as ml_dtypes rounds it, eight at a time.
#[target_feature(enable = "avx2")]
pub unsafe fn f32_to_bf16_avx2(src: &[f32], dst: &mut [bf16]) {
    let n = src.len().min(dst.len());
    let whole = n - n % 8;
    let (one, bias) = (_mm256_set1_epi32(1), _mm256_set1_epi32(0x7fff));
    let (abs, inf) = (
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
            let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(x, _mm256_add_epi32(bias, lsb)));
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
    convert_tail(&src[whole..n], &mut dst[whole..n], half_bits::bf16_from_f32);
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

    /// Every kind of float32 (normals, subnormals, infinities, NaNs with payloads), in a
    /// length that leaves a tail for each kernel width.
    fn floats() -> Vec<f32> {
        (0..20_011u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .collect()
    }

    type F16Kernel = unsafe fn(&[f32], &mut [f16]) -> bool;
    type Bf16Kernel = unsafe fn(&[f32], &mut [bf16]);

    fn bits<T: Copy>(values: &[T], to_bits: impl Fn(T) -> u16) -> Vec<u16> {
        values.iter().map(|v| to_bits(*v)).collect()
    }

    #[test]
    fn float16_kernels_round_like_numpy_and_report_nans() {
        let src = floats();
        let mut dst = vec![f16::ZERO; src.len()];
        let expected: Vec<f16> = src.iter().map(|x| half_bits::f16_from_f32(*x)).collect();
        let mut kernels: Vec<F16Kernel> = Vec::new();
        if is_x86_feature_detected!("avx512f") {
            kernels.push(f32_to_f16_avx512);
        }
        if is_x86_feature_detected!("avx") && is_x86_feature_detected!("f16c") {
            kernels.push(f32_to_f16_avx);
        }
        for kernel in kernels {
            // SAFETY: the processor has the kernel's features.
            assert!(unsafe { kernel(&src, &mut dst) });
            for (i, (got, want)) in dst.iter().zip(&expected).enumerate() {
                if !src[i].is_nan() {
                    assert_eq!(got.to_bits(), want.to_bits(), "element {i}");
                }
            }
            let finite = [1.0f32, -2.5, 65504.0, 1e-8, 3.0e5];
            let mut out = [f16::ZERO; 5];
            // SAFETY: as above.
            assert!(!unsafe { kernel(&finite, &mut out) });
        }
    }

    #[test]
    fn bfloat16_kernels_give_ml_dtypes_bits() {
        let src = floats();
        let expected = bits(
            &src.iter()
                .map(|x| half_bits::bf16_from_f32(*x))
                .collect::<Vec<_>>(),
            bf16::to_bits,
        );
        let mut kernels: Vec<Bf16Kernel> = Vec::new();
        if is_x86_feature_detected!("avx512f") {
            kernels.push(f32_to_bf16_avx512);
        }
        if is_x86_feature_detected!("avx2") {
            kernels.push(f32_to_bf16_avx2);
        }
        for kernel in kernels {
            let mut dst = vec![bf16::ZERO; src.len()];
            // SAFETY: the processor has the kernel's features.
            unsafe { kernel(&src, &mut dst) };
            assert_eq!(bits(&dst, bf16::to_bits), expected);
        }
    }
}
