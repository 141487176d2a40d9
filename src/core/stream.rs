//! Streaming copies: long contiguous runs written with non-temporal stores.
//!
//! A large load writes far more than the caches hold, and nothing reads the destination
//! soon. Ordinary stores first read every destination line into the cache; non-temporal
//! stores write lines straight to memory, saving that traffic. Copying four pages side by
//! side keeps several DRAM pages open at once, which is what lets the stores reach the
//! machine's bandwidth (the same scheme as glibc's own large `memcpy`, which it only uses
//! past a size threshold that a load's leaves and chunks are often below).

use std::ops::Range;

/// Runs shorter than this are left to `memcpy`.
pub const STREAM_MIN_BYTES: usize = PAGES * PAGE;

/// Bytes in a page.
pub const PAGE: usize = 4096;

/// Pages read side by side.
const PAGES: usize = 4;

/// Visits `range` in steps of `step` units, a block of four pages of `page` units at a
/// time, a step from each page in turn; what follows the last whole block, in order.
/// Streaming copies and casts read in this order (see the module's documentation).
#[inline(always)]
pub fn four_pages_at_a_time(
    range: Range<usize>,
    page: usize,
    step: usize,
    mut visit: impl FnMut(usize),
) {
    debug_assert!(page.is_multiple_of(step) && range.len().is_multiple_of(step));
    let mut at = range.start;
    while at + PAGES * page <= range.end {
        for offset in (0..page).step_by(step) {
            for p in 0..PAGES {
                visit(at + p * page + offset);
            }
        }
        at += PAGES * page;
    }
    for i in (at..range.end).step_by(step) {
        visit(i);
    }
}

/// Asks for the `lines` cache lines at the same offset one block of pages past `at`: the
/// hardware prefetcher does not cross pages, and reads bound a streaming copy or cast.
#[inline(always)]
pub fn fetch_next_block(at: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in 0..lines {
        let ahead = at.wrapping_add(PAGES * PAGE + 64 * line) as *const i8;
        // SAFETY: a prefetch never faults, wherever it points; SSE is part of the x86_64
        // baseline.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ahead) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, lines);
}

/// Copies `len` bytes from `src` to `dst`, streaming where the processor allows.
/// Call [`fence`] before another thread reads `dst`.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes; they must not overlap.
#[inline]
pub unsafe fn copy_streaming(dst: *mut u8, src: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if len >= STREAM_MIN_BYTES && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the processor has AVX; the ranges are the caller's.
        return unsafe { x86::copy_four_pages_at_a_time(dst, src, len) };
    }
    // SAFETY: forwarded from the caller.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
}

/// Whether the `len` bytes at `a` and at `b` are equal, read in the order streaming
/// copies read (measured: comparing two 154 MB arrays on two cores read 30 GB/s this way,
/// 26 GB/s with `memcmp`).
///
/// # Safety
/// `a` and `b` must be valid for reads of `len` bytes.
pub unsafe fn equal_streaming(a: *const u8, b: *const u8, len: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if len >= STREAM_MIN_BYTES && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2; the ranges are the caller's.
        return unsafe { x86::equal_four_pages_at_a_time(a, b, len) };
    }
    // SAFETY: forwarded from the caller.
    unsafe { std::slice::from_raw_parts(a, len) == std::slice::from_raw_parts(b, len) }
}

/// Orders this thread's streaming stores before its later stores, and so before the
/// synchronisation that hands the destination to another thread.
#[inline]
pub fn fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` has no preconditions; SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{fetch_next_block, four_pages_at_a_time, PAGE};
    use std::arch::x86_64::{
        __m256i, _mm256_loadu_si256, _mm256_or_si256, _mm256_setzero_si256, _mm256_stream_si256,
        _mm256_testz_si256, _mm256_xor_si256,
    };

    const LINE: usize = 64;
    const LANE: usize = 32;

    /// # Safety
    /// The processor has AVX; `src`/`dst` are valid and disjoint for `len` bytes.
    #[target_feature(enable = "avx")]
    pub unsafe fn copy_four_pages_at_a_time(dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY (whole body): every access stays within the `len` bytes the caller vouches
        // for, and stream stores go to 32-byte aligned addresses (dst is aligned to a line
        // first, and offsets are multiples of 32).
        unsafe {
            let head = dst.align_offset(LINE).min(len);
            std::ptr::copy_nonoverlapping(src, dst, head);
            let (d, s, left) = (dst.add(head), src.add(head), len - head);
            // Whole lines, streamed, the last block's worth line by line: a leaf of 64 KiB
            // that is not aligned to a line leaves a quarter of itself there.
            let lines = left - left % LINE;
            four_pages_at_a_time(0..lines, PAGE, LINE, |at| {
                let (from, to) = (s.add(at), d.add(at));
                fetch_next_block(from, 1);
                let a = _mm256_loadu_si256(from as *const __m256i);
                let b = _mm256_loadu_si256(from.add(LANE) as *const __m256i);
                _mm256_stream_si256(to as *mut __m256i, a);
                _mm256_stream_si256(to.add(LANE) as *mut __m256i, b);
            });
            std::ptr::copy_nonoverlapping(s.add(lines), d.add(lines), left - lines);
        }
    }

    /// # Safety
    /// The processor has AVX2; `a`/`b` are valid for reads of `len` bytes.
    #[target_feature(enable = "avx2")]
    pub unsafe fn equal_four_pages_at_a_time(a: *const u8, b: *const u8, len: usize) -> bool {
        // SAFETY (whole body): every read stays within the `len` bytes the caller vouches
        // for; loads are unaligned.
        unsafe {
            let lines = len - len % LINE;
            let mut differ = _mm256_setzero_si256();
            four_pages_at_a_time(0..lines, PAGE, LINE, |at| {
                let (x, y) = (a.add(at), b.add(at));
                fetch_next_block(x, 1);
                fetch_next_block(y, 1);
                let load = |p: *const u8| _mm256_loadu_si256(p as *const __m256i);
                let low = _mm256_xor_si256(load(x), load(y));
                let high = _mm256_xor_si256(load(x.add(LANE)), load(y.add(LANE)));
                differ = _mm256_or_si256(differ, _mm256_or_si256(low, high));
            });
            let tail = |p: *const u8| std::slice::from_raw_parts(p.add(lines), len - lines);
            _mm256_testz_si256(differ, differ) == 1 && tail(a) == tail(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_comparison_finds_any_one_differing_byte() {
        let a: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + 3) as u8).collect();
        for offset in [0, 1, 33] {
            for len in [
                0,
                1,
                63,
                STREAM_MIN_BYTES - 1,
                STREAM_MIN_BYTES + 65,
                65_537,
            ] {
                let b = a.clone();
                let (x, y) = (a[offset..].as_ptr(), b[offset..].as_ptr());
                // SAFETY: both buffers hold `offset + len` bytes.
                assert!(unsafe { equal_streaming(x, y, len) });
                for at in [0, len / 2, len.saturating_sub(1)]
                    .into_iter()
                    .filter(|&at| at < len)
                {
                    let mut b = a.clone();
                    b[offset + at] ^= 0x10;
                    // SAFETY: as above.
                    let same = unsafe { equal_streaming(x, b[offset..].as_ptr(), len) };
                    assert!(!same, "a difference at {at} of {len} went unseen");
                }
            }
        }
    }

    #[test]
    fn streaming_copy_is_exact_at_every_alignment_and_length() {
        let src: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + 3) as u8).collect();
        for offset in [0, 1, 31, 32, 63] {
            for len in [0, 1, 4095, STREAM_MIN_BYTES, STREAM_MIN_BYTES + 1, 65_537] {
                let mut dst = vec![0u8; 70_000];
                // SAFETY: both buffers hold `offset + len` bytes past their starts.
                unsafe { copy_streaming(dst.as_mut_ptr().add(offset), src.as_ptr().add(3), len) };
                fence();
                assert_eq!(&dst[offset..offset + len], &src[3..3 + len]);
                assert!(dst[..offset].iter().all(|&b| b == 0));
                assert!(dst[offset + len..].iter().all(|&b| b == 0));
            }
        }
    }
}
