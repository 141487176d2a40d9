//! Array geometry: where an array's bytes lie, and the order in which a copy visits them.

use smallvec::SmallVec;
use std::num::NonZeroUsize;
use std::ops::Range;

/// Array dimensions; most parameters have at most two, which then need no allocation.
pub type Dims = SmallVec<[usize; 2]>;
/// Array strides in bytes, one per dimension.
pub type Strides = SmallVec<[isize; 2]>;

/// One array as the kernels see it: a base address, a shape, and strides in bytes.
///
/// The address is kept as an integer so that a plan can cross threads; the bindings keep
/// the owning objects alive for as long as a plan that refers to them exists.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArrayView {
    pub addr: usize,
    pub shape: Dims,
    pub strides: Strides,
    pub itemsize: usize,
    /// The allocation the bytes belong to, when the bindings know it (an id such as the
    /// address of the owning object): views of different allocations never share bytes.
    pub owner: Option<NonZeroUsize>,
}

/// One parameter in the SPEC's sense, as a key: arrays are tied when their views have
/// the same elements ([`ArrayView::same_elements`]) and equivalent dtypes. The tie cache
/// of a plan compares the same fields without building keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Parameter {
    addr: usize,
    shape: Dims,
    strides: Strides,
    dtype_key: u64,
}

/// Whether an [`ArrayView::extent`] lies inside the address space.
pub fn fits(extent: Option<(i128, i128)>) -> bool {
    extent.is_none_or(|(lo, hi)| lo >= 0 && hi <= isize::MAX as i128)
}

/// An [`ArrayView::extent`] as a byte range (see [`ArrayView::byte_span`]).
pub fn span(extent: Option<(i128, i128)>) -> Option<Range<usize>> {
    let (lo, hi) = extent?;
    // Clamped: a view reaching outside the address space (see `fits_in_memory`) is
    // treated as touching everything.
    let clamp = |x: i128| x.clamp(0, usize::MAX as i128) as usize;
    Some(clamp(lo)..clamp(hi))
}

impl ArrayView {
    /// A C-contiguous view of `shape` at `addr`.
    pub fn contiguous(addr: usize, shape: &[usize], itemsize: usize) -> Self {
        let mut strides: Strides = smallvec::smallvec![0isize; shape.len()];
        let mut step = itemsize as isize;
        for (stride, &len) in strides.iter_mut().zip(shape).rev() {
            *stride = step;
            step *= len.max(1) as isize;
        }
        ArrayView {
            addr,
            shape: shape.into(),
            strides,
            itemsize,
            owner: None,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn nbytes(&self) -> usize {
        self.len() * self.itemsize
    }

    /// The half-open byte range `[lo, hi)` the array touches, or `None` when it is empty.
    pub fn byte_span(&self) -> Option<Range<usize>> {
        span(self.extent())
    }

    /// First and one-past-last byte addresses, computed without overflow; `None` when empty.
    pub fn extent(&self) -> Option<(i128, i128)> {
        let (mut lo, mut hi) = (self.addr as i128, self.addr as i128 + self.itemsize as i128);
        for (&len, &stride) in self.shape.iter().zip(&self.strides) {
            if len == 0 {
                return None;
            }
            let reach = stride as i128 * (len as i128 - 1);
            if reach < 0 {
                lo += reach;
            } else {
                hi += reach;
            }
        }
        Some((lo, hi))
    }

    /// Whether every element lies inside the address space, so that byte offsets can be
    /// computed in `isize` (arrays made with `as_strided` can claim anything).
    pub fn fits_in_memory(&self) -> bool {
        fits(self.extent())
    }

    /// Whether the two views have the same address, shape and strides: one parameter, in
    /// the SPEC's sense, when their dtypes are the same too (see [`Parameter`]).
    pub fn same_elements(&self, other: &ArrayView) -> bool {
        self.addr == other.addr && self.shape == other.shape && self.strides == other.strides
    }

    /// The parameter this view is, with a dtype whose key (equal for equivalent dtypes)
    /// is `dtype_key`.
    pub fn parameter(&self, dtype_key: u64) -> Parameter {
        Parameter {
            addr: self.addr,
            shape: self.shape.clone(),
            strides: self.strides.clone(),
            dtype_key,
        }
    }

    /// Whether the two views read the same bytes the same way, whichever objects they
    /// were taken from ([`ArrayView::owner`] aside).
    pub fn same_bytes(&self, other: &ArrayView) -> bool {
        self.same_elements(other) && self.itemsize == other.itemsize
    }

    /// Whether the shape or strides are on the heap (more dimensions than fit inline).
    pub fn spilled(&self) -> bool {
        self.shape.spilled() || self.strides.spilled()
    }

    /// Whether the elements lie in C order with no gaps.
    pub fn is_c_contiguous(&self) -> bool {
        let mut step = self.itemsize as isize;
        for (&len, &stride) in self.shape.iter().zip(&self.strides).rev() {
            if len != 1 && stride != step {
                return false;
            }
            step *= len as isize;
        }
        true
    }

    /// Whether two elements of the array may share bytes (a zero or tangled stride).
    ///
    /// Conservative: `false` guarantees every element has bytes of its own.
    pub fn may_self_overlap(&self) -> bool {
        if self.is_c_contiguous() {
            return false;
        }
        let mut dims: SmallVec<[(usize, usize); 4]> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(&len, _)| len > 1)
            .map(|(&len, &stride)| (len, stride.unsigned_abs()))
            .collect();
        dims.sort_by_key(|&(_, stride)| stride);
        let mut extent = self.itemsize;
        for (len, stride) in dims {
            if stride < extent {
                return true;
            }
            match stride
                .checked_mul(len - 1)
                .and_then(|r| r.checked_add(extent))
            {
                Some(next) => extent = next,
                None => return true,
            }
        }
        false
    }
}

/// One dimension of a [`PairLayout`]: its length and the stride of each of the two arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dim {
    len: usize,
    stride: [isize; 2],
}

/// The visiting order for a copy between two arrays of one shape.
///
/// Dimensions are reordered by the first array's strides (outermost first), reversed where
/// that array runs backwards, and merged where both arrays are contiguous across them, so
/// that a C-to-C, F-to-F or reversed-to-reversed copy becomes one run. Elements keep their
/// pairing: element `k` in this order is the same logical element in both arrays.
#[derive(Clone, Debug)]
pub struct PairLayout {
    dims: SmallVec<[Dim; 4]>,
    /// Byte offset of the first visited element from each array's address.
    origin: [isize; 2],
    len: usize,
}

impl PairLayout {
    pub fn new(shape: &[usize], first: &[isize], second: &[isize]) -> Self {
        let len = shape.iter().product();
        if let ([n], [a], [b]) = (shape, first, second) {
            if *a >= 0 {
                // One dimension running forwards: nothing to reorder or merge.
                let dims = smallvec::smallvec![Dim {
                    len: *n,
                    stride: [*a, *b]
                }];
                return PairLayout {
                    dims,
                    origin: [0, 0],
                    len,
                };
            }
        }
        let mut origin = [0isize; 2];
        let mut dims: SmallVec<[Dim; 4]> = SmallVec::new();
        for (i, &dim_len) in shape.iter().enumerate() {
            if dim_len == 1 {
                continue;
            }
            let mut stride = [first[i], second[i]];
            if stride[0] < 0 {
                for side in 0..2 {
                    origin[side] += stride[side] * (dim_len as isize - 1);
                    stride[side] = -stride[side];
                }
            }
            dims.push(Dim {
                len: dim_len,
                stride,
            });
        }
        // Outermost first; the stable sort keeps C order among equal strides.
        dims.sort_by_key(|d| std::cmp::Reverse(d.stride[0]));
        let mut merged: SmallVec<[Dim; 4]> = SmallVec::new();
        for d in dims {
            match merged.last_mut() {
                Some(outer) if (0..2).all(|s| outer.stride[s] == d.stride[s] * d.len as isize) => {
                    outer.len *= d.len;
                    outer.stride = d.stride;
                }
                _ => merged.push(d),
            }
        }
        if merged.is_empty() {
            merged.push(Dim {
                len: 1,
                stride: [0, 0],
            });
        }
        PairLayout {
            dims: merged,
            origin,
            len,
        }
    }

    /// Number of elements visited.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Strides of the innermost dimension, along which each run advances.
    pub fn inner_strides(&self) -> [isize; 2] {
        self.dims[self.dims.len() - 1].stride
    }

    /// Calls `visit(k, offsets, n)` for each run of elements `k..k+n` within `range`,
    /// where `offsets` are the byte offsets of element `k` from each array's address.
    pub fn for_each_run(
        &self,
        range: Range<usize>,
        mut visit: impl FnMut(usize, [isize; 2], usize),
    ) {
        let inner = self.dims[self.dims.len() - 1];
        let outer = &self.dims[..self.dims.len() - 1];
        let mut k = range.start;
        while k < range.end {
            let mut offsets = self.origin;
            let (mut rest, within) = (k / inner.len, k % inner.len);
            for d in outer.iter().rev() {
                let i = (rest % d.len) as isize;
                rest /= d.len;
                offsets[0] += i * d.stride[0];
                offsets[1] += i * d.stride[1];
            }
            offsets[0] += within as isize * inner.stride[0];
            offsets[1] += within as isize * inner.stride[1];
            let n = (inner.len - within).min(range.end - k);
            visit(k, offsets, n);
            k += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(layout: &PairLayout, range: Range<usize>) -> Vec<(usize, [isize; 2], usize)> {
        let mut out = Vec::new();
        layout.for_each_run(range, |k, o, n| out.push((k, o, n)));
        out
    }

    #[test]
    fn contiguous_arrays_merge_into_one_run() {
        let a = ArrayView::contiguous(0, &[3, 4, 5], 4);
        let layout = PairLayout::new(&a.shape, &a.strides, &a.strides);
        assert_eq!(runs(&layout, 0..60), vec![(0, [0, 0], 60)]);
        assert_eq!(layout.inner_strides(), [4, 4]);
    }

    #[test]
    fn fortran_to_fortran_is_one_run_and_c_to_fortran_is_not() {
        let f = [4isize, 12];
        let c = [8isize, 4];
        let ff = PairLayout::new(&[3, 2], &f, &f);
        assert_eq!(runs(&ff, 0..6).len(), 1);
        let cf = PairLayout::new(&[3, 2], &c, &f);
        assert_eq!(runs(&cf, 0..6).len(), 3);
    }

    #[test]
    fn reversed_destination_is_walked_forwards_from_its_lowest_address() {
        // dst = a[::-1] over 4 f32 (stride -4, address of element 0 is +12).
        let layout = PairLayout::new(&[4], &[-4], &[4]);
        assert_eq!(runs(&layout, 0..4), vec![(0, [-12, 12], 4)]);
        assert_eq!(layout.inner_strides(), [4, -4]);
    }

    #[test]
    fn runs_split_at_the_range_and_row_boundaries() {
        let c = [16isize, 4];
        let t = [4isize, 16]; // transposed source
        let layout = PairLayout::new(&[2, 4], &c, &t);
        let got = runs(&layout, 3..6);
        assert_eq!(got, vec![(3, [12, 48], 1), (4, [16, 4], 2)]);
    }

    #[test]
    fn zero_dimensional_and_unit_dimensions_are_one_element() {
        let layout = PairLayout::new(&[], &[], &[]);
        assert_eq!(runs(&layout, 0..1), vec![(0, [0, 0], 1)]);
        let layout = PairLayout::new(&[1, 1], &[8, 8], &[4, 4]);
        assert_eq!(runs(&layout, 0..1), vec![(0, [0, 0], 1)]);
    }

    #[test]
    fn views_reaching_outside_the_address_space_are_caught() {
        let wild = ArrayView {
            addr: 4096,
            shape: smallvec::smallvec![3],
            strides: smallvec::smallvec![isize::MAX / 2],
            itemsize: 8,
            owner: None,
        };
        assert!(!wild.fits_in_memory());
        assert_eq!(wild.byte_span(), Some(4096..isize::MAX as usize + 4103));
        let wilder = ArrayView {
            shape: smallvec::smallvec![4],
            ..wild.clone()
        };
        assert!(!wilder.fits_in_memory());
        let reach = (isize::MAX / 2) as usize * 3;
        assert_eq!(wilder.byte_span(), Some(4096..4096 + reach + 8));
        assert!(ArrayView::contiguous(4096, &[3], 8).fits_in_memory());
        let below_zero = ArrayView {
            strides: smallvec::smallvec![-8192],
            ..ArrayView::contiguous(4096, &[3], 8)
        };
        assert!(!below_zero.fits_in_memory());
        assert_eq!(below_zero.byte_span(), Some(0..4104));
    }

    #[test]
    fn byte_span_covers_negative_strides() {
        let view = ArrayView {
            addr: 100,
            shape: smallvec::smallvec![3],
            strides: smallvec::smallvec![-8],
            itemsize: 8,
            owner: None,
        };
        assert_eq!(view.byte_span(), Some(84..108));
        assert_eq!(ArrayView::contiguous(5, &[0, 3], 4).byte_span(), None);
    }

    #[test]
    fn views_are_the_same_parameter_only_with_the_same_strides() {
        let a = ArrayView::contiguous(64, &[1, 4], 4);
        assert!(a.same_elements(&a.clone()));
        let b = ArrayView {
            strides: smallvec::smallvec![0, 4],
            ..a.clone()
        };
        assert!(!a.same_elements(&b));
    }

    #[test]
    fn c_contiguity_ignores_unit_dimensions_and_sees_gaps() {
        assert!(ArrayView::contiguous(0, &[3, 1, 4], 2).is_c_contiguous());
        let unit_stride_ignored = ArrayView {
            strides: smallvec::smallvec![8, 99, 2],
            ..ArrayView::contiguous(0, &[3, 1, 4], 2)
        };
        assert!(unit_stride_ignored.is_c_contiguous());
        let gapped = ArrayView {
            strides: smallvec::smallvec![16, 8, 2],
            ..ArrayView::contiguous(0, &[3, 1, 4], 2)
        };
        assert!(!gapped.is_c_contiguous());
        assert!(!ArrayView {
            strides: smallvec::smallvec![2, 6],
            ..ArrayView::contiguous(0, &[3, 4], 2)
        }
        .is_c_contiguous());
    }

    #[test]
    fn self_overlap_is_found_for_zero_and_tangled_strides() {
        let plain = ArrayView::contiguous(0, &[4, 4], 4);
        assert!(!plain.may_self_overlap());
        let broadcast = ArrayView {
            addr: 0,
            shape: smallvec::smallvec![4, 4],
            strides: smallvec::smallvec![0, 4],
            itemsize: 4,
            owner: None,
        };
        assert!(broadcast.may_self_overlap());
        let windows = ArrayView {
            addr: 0,
            shape: smallvec::smallvec![3, 4],
            strides: smallvec::smallvec![4, 4],
            itemsize: 4,
            owner: None,
        };
        assert!(windows.may_self_overlap());
        let every_other = ArrayView {
            addr: 0,
            shape: smallvec::smallvec![2, 3],
            strides: smallvec::smallvec![4, 24],
            itemsize: 4,
            owner: None,
        };
        assert!(!every_other.may_self_overlap());
    }
}
