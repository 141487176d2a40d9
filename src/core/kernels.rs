//! Copy kernels: move one run of elements from a source into a destination.

use super::convert::convert_contiguous;
use super::dtype::{with_element, Element, Scalar};
use super::layout::{ArrayView, PairLayout};
use super::stream::copy_streaming;
use std::ops::Range;

/// What a leaf copy does with each element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Same dtype on both sides: copy `itemsize` bytes per element.
    Bytes,
    /// Convert between two native element types.
    Cast(Scalar, Scalar),
    /// Write zero bytes (a `False` source: an absent parameter).
    Zeros,
    /// A conversion the core does not implement; the caller performs it (see `execute`).
    External,
}

/// Copies elements `range` (in `layout` order) from `src` into `dst` under `op`.
///
/// With `streaming`, long contiguous runs bypass the caches (see [`super::stream`]); the
/// caller must then call [`super::stream::fence`] before `dst` is read by another thread.
///
/// # Safety
/// `dst` must be valid for writes and `src` for reads over every element `layout` visits,
/// the two element ranges must not overlap, and no other thread may write them meanwhile.
pub unsafe fn copy_range(
    op: Op,
    dst: &ArrayView,
    src: Option<&ArrayView>,
    layout: &PairLayout,
    range: Range<usize>,
    streaming: bool,
) {
    let [dst_step, src_step] = layout.inner_strides();
    let src_addr = src.map_or(0, |s| s.addr);
    layout.for_each_run(range, |_, [dst_off, src_off], n| {
        let d = (dst.addr as isize + dst_off) as *mut u8;
        let s = (src_addr as isize + src_off) as *const u8;
        // SAFETY: the offsets come from the layout of these two arrays, which the caller
        // guarantees are valid and disjoint.
        unsafe { copy_run(op, d, dst_step, s, src_step, n, dst.itemsize, streaming) };
    });
}

/// Writes elements `range` (C order over `shape`) of `src`, converted by `op`, into `out`
/// as `itemsize`-byte elements of the destination's dtype.
///
/// # Safety
/// `src` must be valid for reads over every element of `shape`.
pub unsafe fn gather(
    op: Op,
    src: &ArrayView,
    shape: &[usize],
    itemsize: usize,
    range: Range<usize>,
    out: &mut [u8],
) {
    assert!(
        out.len() >= range.len() * itemsize,
        "gather buffer too small"
    );
    // `out` holds elements `range`, so element k lives at `out + (k - range.start) * itemsize`.
    let base = out.as_mut_ptr() as isize - (range.start * itemsize) as isize;
    let staging = ArrayView::contiguous(base as usize, shape, itemsize);
    let layout = PairLayout::new(shape, &staging.strides, &src.strides);
    // SAFETY: C order over a C-contiguous staging view visits elements in index order, so
    // `range` lands inside `out`, a buffer no one else holds; `src` is valid per the caller.
    unsafe { copy_range(op, &staging, Some(src), &layout, range, false) };
}

/// Copies `n` elements `d[i*ds] <- s[i*ss]`.
///
/// # Safety
/// As for [`copy_range`], over the `n` elements addressed.
#[inline]
#[allow(clippy::too_many_arguments)]
pub unsafe fn copy_run(
    op: Op,
    d: *mut u8,
    ds: isize,
    s: *const u8,
    ss: isize,
    n: usize,
    itemsize: usize,
    streaming: bool,
) {
    // SAFETY (whole body): the caller guarantees every addressed element is in bounds.
    unsafe {
        match op {
            Op::Bytes if ds == itemsize as isize && ss == itemsize as isize => {
                if streaming {
                    copy_streaming(d, s, n * itemsize)
                } else {
                    std::ptr::copy_nonoverlapping(s, d, n * itemsize)
                }
            }
            Op::Bytes => match itemsize {
                1 => strided::<u8>(d, ds, s, ss, n),
                2 => strided::<u16>(d, ds, s, ss, n),
                4 => strided::<u32>(d, ds, s, ss, n),
                8 => strided::<u64>(d, ds, s, ss, n),
                _ => {
                    for i in 0..n as isize {
                        std::ptr::copy_nonoverlapping(s.offset(i * ss), d.offset(i * ds), itemsize);
                    }
                }
            },
            Op::Zeros if ds == itemsize as isize => std::ptr::write_bytes(d, 0, n * itemsize),
            Op::Zeros => {
                for i in 0..n as isize {
                    std::ptr::write_bytes(d.offset(i * ds), 0, itemsize);
                }
            }
            Op::Cast(from, to) => {
                let contiguous = ds == to.size() as isize && ss == from.size() as isize;
                if !(contiguous && convert_contiguous(from, to, d, s, n, streaming)) {
                    with_element!(from, S => with_element!(to, D => cast::<S, D>(d, ds, s, ss, n)))
                }
            }
            // External leaves never reach a kernel; `Executor::execute` hands them back.
            Op::External => {}
        }
    }
}

/// Strided copy of `n` elements of one machine word `W`.
///
/// # Safety
/// Every addressed element is valid; unaligned addresses are allowed.
#[inline]
unsafe fn strided<W: Copy>(d: *mut u8, ds: isize, s: *const u8, ss: isize, n: usize) {
    for i in 0..n as isize {
        // SAFETY: the caller guarantees element `i` of both arrays is in bounds.
        unsafe {
            let v = (s.offset(i * ss) as *const W).read_unaligned();
            (d.offset(i * ds) as *mut W).write_unaligned(v);
        }
    }
}

/// Converting copy of `n` elements from `S` to `D`.
///
/// # Safety
/// Every addressed element is valid; unaligned addresses are allowed.
#[inline]
unsafe fn cast<S: Element, D: Element>(d: *mut u8, ds: isize, s: *const u8, ss: isize, n: usize) {
    for i in 0..n as isize {
        // SAFETY: the caller guarantees element `i` of both arrays is in bounds.
        unsafe {
            let v = (s.offset(i * ss) as *const S).read_unaligned();
            (d.offset(i * ds) as *mut D).write_unaligned(D::from_element(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_of<T>(data: *const T, shape: &[usize], strides: &[isize]) -> ArrayView {
        ArrayView {
            addr: data as usize,
            shape: shape.into(),
            strides: strides.into(),
            itemsize: std::mem::size_of::<T>(),
            owner: None,
        }
    }

    fn copy_all(op: Op, dst: &ArrayView, src: Option<&ArrayView>) {
        let src_strides = src.map_or(dst.strides.clone(), |s| s.strides.clone());
        let layout = PairLayout::new(&dst.shape, &dst.strides, &src_strides);
        // SAFETY: the test arrays are alive, disjoint and sized for their views.
        unsafe { copy_range(op, dst, src, &layout, 0..layout.len(), false) };
    }

    #[test]
    fn transposed_source_lands_in_logical_order() {
        let src: Vec<f32> = (0..6).map(|x| x as f32).collect(); // 3x2, C order
        let mut dst = vec![0f32; 6]; // 2x3 = src.T
        let s = view_of(src.as_ptr(), &[2, 3], &[4, 8]);
        let d = view_of(dst.as_mut_ptr(), &[2, 3], &[12, 4]);
        copy_all(Op::Bytes, &d, Some(&s));
        assert_eq!(dst, vec![0., 2., 4., 1., 3., 5.]);
    }

    #[test]
    fn reversed_source_and_cast_to_f64() {
        let src = [1i16, 2, 3, 4];
        let mut dst = [0f64; 4];
        let s = ArrayView {
            addr: src.as_ptr() as usize + 6,
            shape: smallvec::smallvec![4],
            strides: smallvec::smallvec![-2],
            itemsize: 2,
            owner: None,
        };
        let d = view_of(dst.as_mut_ptr(), &[4], &[8]);
        copy_all(Op::Cast(Scalar::I16, Scalar::F64), &d, Some(&s));
        assert_eq!(dst, [4., 3., 2., 1.]);
    }

    #[test]
    fn zeros_fill_only_the_strided_elements() {
        let mut dst = [7u8; 6];
        let d = view_of(dst.as_mut_ptr(), &[3], &[2]);
        copy_all(Op::Zeros, &d, None);
        assert_eq!(dst, [0, 7, 0, 7, 0, 7]);
    }

    #[test]
    fn odd_sized_items_copy_whole_elements() {
        let src: Vec<u8> = (0..9).collect();
        let mut dst = vec![0u8; 9];
        // Three 3-byte items (a string or record dtype) copied in reverse order.
        let s = ArrayView {
            addr: src.as_ptr() as usize + 6,
            shape: smallvec::smallvec![3],
            strides: smallvec::smallvec![-3],
            itemsize: 3,
            owner: None,
        };
        let d = ArrayView {
            itemsize: 3,
            ..view_of(dst.as_mut_ptr(), &[3], &[3])
        };
        copy_all(Op::Bytes, &d, Some(&s));
        assert_eq!(dst, vec![6, 7, 8, 3, 4, 5, 0, 1, 2]);
    }
}
