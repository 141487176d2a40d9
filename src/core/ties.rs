//! Tied parameters: one destination reached along several paths.
//!
//! The first source in walk order gives the value; every later source must give the same
//! bits once cast to the destination's dtype (so NaNs match), or be `False` while that
//! value is all zero bits.

use super::kernels::{gather, Op};
use super::layout::ArrayView;
use super::plan::{LeafCopy, Plan};
use super::problem::{Problem, ProblemKind};
use super::stream::equal_streaming;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// No further leaf in a chain.
const END: u32 = u32::MAX;

/// First leaf of each destination parameter, and staged values for tie checks.
///
/// A parameter is an address, shape, strides and dtype. A load meets its destinations
/// roughly in the order they were allocated, so nearly every leaf lies above every leaf
/// before it: such a leaf is new without a lookup, and goes on the end of `ascending`,
/// which stays sorted. Any other leaf is looked up there (searched from the top) and in
/// `heads`, by address and dtype, then by shape and strides along the chain of leaves
/// sharing those.
#[derive(Default, Debug)]
pub struct TieCache {
    /// `(address, dtype key, leaf)` of leaves that lay above all before them, ascending.
    ascending: Vec<(usize, u64, u32)>,
    /// The other leaves: at each address and dtype, the start of a chain in `chained`.
    heads: HashMap<(usize, u64), u32, BuildHasherDefault<AddressHasher>>,
    /// `(leaf, next)`: a leaf of `heads`, and the position in `chained` of the next leaf
    /// with the same address and dtype.
    chained: Vec<(u32, u32)>,
    pub(crate) staged: FxHashMap<usize, ArrayView>,
}

impl TieCache {
    /// Empties the cache for a plan of about `leaves` leaves, keeping its memory: the
    /// next plan then fills tables already in place (see `spare`).
    pub(crate) fn reset(&mut self, leaves: usize) {
        self.ascending.clear();
        self.ascending.reserve(leaves);
        self.heads.clear();
        self.chained.clear();
        self.staged.clear();
    }

    /// The leaf already planned for the destination at `addr` with `dtype_key` whose
    /// elements are the same (`same(leaf)`), or `None` after recording `leaf` (the next
    /// leaf number) as its first.
    #[inline(always)]
    pub(crate) fn first_or_insert(
        &mut self,
        addr: usize,
        dtype_key: u64,
        leaf: usize,
        same: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        if self.ascending.last().is_none_or(|&(top, _, _)| addr > top) {
            self.ascending.push((addr, dtype_key, leaf as u32));
            return None;
        }
        self.first_or_insert_below(addr, dtype_key, leaf, same)
    }

    /// [`TieCache::first_or_insert`] for a leaf at or below an address met before.
    #[inline(never)]
    fn first_or_insert_below(
        &mut self,
        addr: usize,
        dtype_key: u64,
        leaf: usize,
        mut same: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        if let Some(&(_, key, first)) = self.ascending_at(addr) {
            if key == dtype_key && same(first as usize) {
                return Some(first as usize);
            }
        }
        let head = self.heads.entry((addr, dtype_key)).or_insert(END);
        let mut at = *head;
        while at != END {
            let (other, next) = self.chained[at as usize];
            if same(other as usize) {
                return Some(other as usize);
            }
            at = next;
        }
        self.chained.push((leaf as u32, *head));
        *head = (self.chained.len() - 1) as u32;
        None
    }

    /// The entry of `ascending` at `addr`, if any. Searched from the top, in steps that
    /// double: a leaf below the top is nearly always a little below it, among entries
    /// still in cache.
    fn ascending_at(&self, addr: usize) -> Option<&(usize, u64, u32)> {
        let entries = &self.ascending;
        // Every entry from `above` on lies above `addr`.
        let (mut above, mut step) = (entries.len(), 1);
        while step <= above && entries[above - step].0 > addr {
            above -= step;
            step *= 2;
        }
        let from = above.saturating_sub(step);
        let at = entries[from..above].partition_point(|&(a, _, _)| a < addr) + from;
        entries.get(at).filter(|&&(a, _, _)| a == addr)
    }

    pub(crate) fn stage(&mut self, leaf: usize, staged: ArrayView) {
        self.staged.insert(leaf, staged);
    }
}

/// Hashes `(address, dtype key)` so that nearby addresses fall into nearby buckets.
///
/// A load meets its destinations roughly in the order they were allocated, so a table
/// keyed by a scrambled address misses the cache on nearly every leaf of a model of
/// many small arrays. Here the bucket index keeps the address's low bits (scrambled
/// only per 1 MiB region, so that arrays aligned to large powers of two still spread),
/// and the top bits, which the table compares first, are mixed from everything.
#[derive(Default)]
struct AddressHasher {
    addr: u64,
    key: u64,
}

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.key = (self.key.rotate_left(8) ^ u64::from(b)).wrapping_mul(MIX);
        }
    }

    fn write_usize(&mut self, addr: usize) {
        self.addr = addr as u64;
    }

    fn write_u64(&mut self, key: u64) {
        self.key = key;
    }

    fn finish(&self) -> u64 {
        const TAG: u64 = 0x7f << 57;
        let region = (self.addr >> 20).wrapping_mul(MIX);
        let bucket = (self.addr >> 4) ^ region ^ self.key.wrapping_mul(MIX);
        let tag = (self.addr ^ self.key.rotate_left(32)).wrapping_mul(MIX);
        (bucket & !TAG) | (tag & TAG)
    }
}

/// An odd constant with well-spread bits (from `rustc_hash`'s Fx hash).
const MIX: u64 = 0xf135_7aea_2e62_a9c5;

/// A later source of a tied parameter, to compare with the first.
#[derive(Clone, Debug)]
pub(crate) struct TieCheck {
    pub first: usize,
    /// The first leaf's destination when the tie was found.
    pub dst: ArrayView,
    pub src: Option<ArrayView>,
    pub op: Op,
    pub path: String,
    /// Problems the walk had found before this check: where its problem goes.
    pub position: usize,
    /// The leaves planned before it, which copying leaf by leaf writes before this
    /// source is read.
    pub after: usize,
}

/// A value a tied parameter may take: a source array read through a conversion, or zeros.
#[derive(Clone, Copy)]
enum TieValue<'a> {
    Zeros,
    Array(&'a ArrayView, Op),
}

/// Elements compared per step; two buffers of this many elements are live per thread.
const COMPARE_CHUNK: usize = 1 << 16;

impl Plan {
    /// Compares every later tie source with the first; one problem per disagreement, with
    /// the position given to [`Plan::check_tie`] (see [`merge_in_walk_order`]).
    ///
    /// A source that the load itself writes before reading it is a problem of its own,
    /// and one that gives the first's value whatever it is needs no comparison (see
    /// [`Plan::stale_reads`]).
    ///
    /// Reads sources only; runs on the rayon pool that is current.
    ///
    /// [`merge_in_walk_order`]: super::problem::merge_in_walk_order
    pub fn check_ties(&self, parallel: bool) -> Vec<(usize, Problem)> {
        let (mut problems, fresh) = self.stale_reads();
        for check in fresh {
            let leaf = &self.leaves()[check.first];
            let first = match (leaf.op, &leaf.src, self.ties.staged.get(&check.first)) {
                (_, _, Some(staged)) => TieValue::Array(staged, Op::Bytes),
                (Op::Zeros, _, _) | (_, None, _) => TieValue::Zeros,
                (op, Some(src), _) => TieValue::Array(src, op),
            };
            let later = match &check.src {
                None => TieValue::Zeros,
                Some(src) => TieValue::Array(src, check.op),
            };
            if !same_value(leaf, first, later, parallel) {
                let problem = Problem::new(
                    ProblemKind::Leaf,
                    check.path.clone(),
                    "tied destination parameters with untied and mismatched sources",
                );
                problems.push((check.position, problem));
            }
        }
        problems
    }
}

fn same_value(leaf: &LeafCopy, a: TieValue, b: TieValue, parallel: bool) -> bool {
    // Both are read over the destination's shape: a source of another shape (its arrays
    // reshaped since it was planned) could be read out of bounds, and is not the same.
    let fits = |value: TieValue| match value {
        TieValue::Array(src, _) => src.shape == leaf.dst.shape,
        TieValue::Zeros => true,
    };
    if !fits(a) || !fits(b) {
        return false;
    }
    if let (TieValue::Array(x, op_x), TieValue::Array(y, op_y)) = (a, b) {
        if x.same_bytes(y) && op_x == op_y {
            return true; // the same buffer read the same way
        }
    }
    if let (TieValue::Zeros, TieValue::Zeros) = (a, b) {
        return true;
    }
    // Two contiguous sources read through one conversion are first compared as they lie
    // in memory: no staging, and only what both read crosses the memory bus.
    let in_place = match (a, b) {
        (TieValue::Array(x, op_x), TieValue::Array(y, op_y))
            if op_x == op_y && x.itemsize == y.itemsize =>
        {
            (x.is_c_contiguous() && y.is_c_contiguous()).then_some((x, y))
        }
        _ => None,
    };
    let len = leaf.dst.len();
    let itemsize = leaf.dst.itemsize;
    let chunks = len.div_ceil(COMPARE_CHUNK);
    let chunk_equal = |c: usize| {
        let range = c * COMPARE_CHUNK..((c + 1) * COMPARE_CHUNK).min(len);
        if let Some((x, y)) = in_place {
            // Equal bytes give equal values. Unequal ones may not give unequal values (two
            // floats rounding to one), so they are compared as converted below.
            // SAFETY: the plan holds both sources alive; both are C-contiguous over the
            // destination's shape (checked above), so elements `range` are in bounds.
            let at = |view: &ArrayView| (view.addr + range.start * view.itemsize) as *const u8;
            if unsafe { equal_streaming(at(x), at(y), range.len() * x.itemsize) } {
                return true;
            }
        }
        let bytes = range.len() * itemsize;
        let mut left = vec![0u8; bytes];
        let mut right = vec![0u8; bytes];
        read_value(&leaf.dst.shape, itemsize, a, range.clone(), &mut left);
        read_value(&leaf.dst.shape, itemsize, b, range, &mut right);
        left == right
    };
    if parallel {
        (0..chunks).into_par_iter().all(chunk_equal)
    } else {
        (0..chunks).all(chunk_equal)
    }
}

fn read_value(
    shape: &[usize],
    itemsize: usize,
    value: TieValue,
    range: std::ops::Range<usize>,
    out: &mut [u8],
) {
    match value {
        TieValue::Zeros => out.fill(0),
        // SAFETY: the plan holds the source alive, and it has the destination's shape.
        TieValue::Array(src, op) => unsafe { gather(op, src, shape, itemsize, range, out) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Plan, Scalar, TieEntry};

    fn view(data: &[f32]) -> ArrayView {
        ArrayView::contiguous(data.as_ptr() as usize, &[data.len()], 4)
    }

    fn tied_plan(dst: &ArrayView, first: &[f32]) -> Plan {
        let mut plan = Plan::new();
        let leaf = LeafCopy {
            dst: dst.clone(),
            src: Some(view(first)),
            op: Op::Bytes,
        };
        assert!(matches!(plan.add(leaf.clone(), 1), TieEntry::New(0)));
        assert!(matches!(plan.add(leaf, 1), TieEntry::Tied { first: 0, .. }));
        plan
    }

    #[test]
    fn equal_sources_agree_bit_for_bit_including_nan() {
        let dst_buf = [0f32; 3];
        let dst = view(&dst_buf);
        let a = [1.0, f32::NAN, 3.0];
        let b = a;
        let mut plan = tied_plan(&dst, &a);
        plan.check_tie(0, dst.clone(), Some(view(&b)), Op::Bytes, "b".into(), 0);
        assert!(plan.check_ties(false).is_empty());
    }

    #[test]
    fn mismatched_sources_are_reported_with_their_path() {
        let dst_buf = [0f32; 2];
        let dst = view(&dst_buf);
        let a = [1.0, 2.0];
        let b = [1.0, 2.5];
        let mut plan = tied_plan(&dst, &a);
        plan.check_tie(
            0,
            dst.clone(),
            Some(view(&b)),
            Op::Bytes,
            "head.weight".into(),
            0,
        );
        let problems = plan.check_ties(false);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].1.path, "head.weight");
    }

    #[test]
    fn a_later_source_of_another_shape_is_a_mismatch_not_read() {
        let dst_buf = [0f32; 6];
        let dst = ArrayView::contiguous(dst_buf.as_ptr() as usize, &[2, 3], 4);
        let a = [1f32; 6];
        let mut plan = Plan::new();
        let leaf = LeafCopy {
            dst: dst.clone(),
            src: Some(ArrayView::contiguous(a.as_ptr() as usize, &[2, 3], 4)),
            op: Op::Bytes,
        };
        plan.add(leaf, 1);
        let b = [1f32; 6];
        let other = ArrayView::contiguous(b.as_ptr() as usize, &[3, 2], 4);
        plan.check_tie(0, dst, Some(other), Op::Bytes, "b".into(), 0);
        assert_eq!(plan.check_ties(false).len(), 1);
    }

    #[test]
    fn false_source_agrees_only_with_zeros() {
        let dst_buf = [0f32; 2];
        let dst = view(&dst_buf);
        let zeros = [0.0f32, 0.0];
        let mut plan = tied_plan(&dst, &zeros);
        plan.check_tie(0, dst.clone(), None, Op::Zeros, "a".into(), 0);
        assert!(plan.check_ties(false).is_empty());
        let ones = [1.0f32, 0.0];
        let mut plan = tied_plan(&dst, &ones);
        plan.check_tie(0, dst.clone(), None, Op::Zeros, "a".into(), 0);
        assert_eq!(plan.check_ties(false).len(), 1);
    }

    #[test]
    fn sources_compare_after_the_cast_to_the_destination_dtype() {
        let dst_buf = [0f32; 2];
        let dst = view(&dst_buf);
        let a = [1.5f32, -2.0];
        let b = [1.5f64, -2.0];
        let mut plan = tied_plan(&dst, &a);
        let b_view = ArrayView::contiguous(b.as_ptr() as usize, &[2], 8);
        plan.check_tie(
            0,
            dst.clone(),
            Some(b_view),
            Op::Cast(Scalar::F64, Scalar::F32),
            "b".into(),
            0,
        );
        assert!(plan.check_ties(false).is_empty());
    }

    #[test]
    fn sources_of_other_bytes_that_cast_to_one_value_agree() {
        // Two float64 sources one ulp apart round to the same float32, across several
        // comparison chunks; a real difference in the last chunk is still found.
        let n = 3 * COMPARE_CHUNK + 5;
        let dst_buf = vec![0f32; n];
        let dst = view(&dst_buf);
        let a: Vec<f64> = (0..n).map(|i| i as f64 / 7.0).collect();
        let close: Vec<f64> = a.iter().map(|x| f64::from_bits(x.to_bits() + 1)).collect();
        let mut far = a.clone();
        far[n - 1] += 1.0;
        let f64_view = |data: &[f64]| ArrayView::contiguous(data.as_ptr() as usize, &[n], 8);
        let cast = Op::Cast(Scalar::F64, Scalar::F32);
        for (later, agree) in [(&a, true), (&close, true), (&far, false)] {
            let mut plan = Plan::new();
            let leaf = LeafCopy {
                dst: dst.clone(),
                src: Some(f64_view(&a)),
                op: cast,
            };
            plan.add(leaf, 1);
            plan.check_tie(0, dst.clone(), Some(f64_view(later)), cast, "b".into(), 0);
            for parallel in [false, true] {
                assert_eq!(plan.check_ties(parallel).is_empty(), agree);
            }
        }
    }

    #[test]
    fn parameters_are_recognised_at_any_spacing_of_addresses() {
        // Packed small arrays, arrays 1 MiB apart (the same low bits), and dtypes that
        // differ only in their key: every destination is new once, and tied the second
        // time, to the leaf it was first planned as.
        let mut plan = Plan::new();
        let addresses: Vec<(usize, u64)> = (1..=3000usize)
            .flat_map(|i| [(i * 48, 1), (i << 20, 1), (i << 20, 2)])
            .collect();
        let leaf = |addr: usize| LeafCopy {
            dst: ArrayView::contiguous(addr, &[4], 4),
            src: None,
            op: Op::Zeros,
        };
        for (n, &(addr, key)) in addresses.iter().enumerate() {
            assert!(matches!(plan.add(leaf(addr), key), TieEntry::New(i) if i == n));
        }
        for (n, &(addr, key)) in addresses.iter().enumerate().rev() {
            assert!(
                matches!(plan.add(leaf(addr), key), TieEntry::Tied { first, .. } if first == n)
            );
        }
    }

    #[test]
    fn parameters_met_in_any_order_are_tied_to_their_first_leaf() {
        // Addresses rising, falling and shuffled, each with two shapes: a leaf above all
        // before it skips the lookup, and must still be found by any later leaf.
        let n = 2000usize;
        let shuffled = |i: usize| (i * 769) % n; // 769 is prime to 2000: a permutation
        let orders: [&dyn Fn(usize) -> usize; 3] = [&|i| i, &|i| n - 1 - i, &shuffled];
        for first_order in orders {
            let mut plan = Plan::new();
            let leaf = |slot: usize, len: usize| LeafCopy {
                dst: ArrayView::contiguous(4096 + slot * 64, &[len], 4),
                src: None,
                op: Op::Zeros,
            };
            let mut first = vec![[0usize; 2]; n];
            for (round, len) in [4, 2].into_iter().enumerate() {
                for i in 0..n {
                    let slot = first_order(i);
                    let TieEntry::New(at) = plan.add(leaf(slot, len), 1) else {
                        panic!("slot {slot} of length {len} taken for a tie");
                    };
                    first[slot][round] = at;
                }
            }
            for then in orders {
                for (round, len) in [4, 2].into_iter().enumerate() {
                    for i in 0..n {
                        let slot = then(i);
                        let entry = plan.add(leaf(slot, len), 1);
                        assert!(
                            matches!(entry, TieEntry::Tied { first: f, .. } if f == first[slot][round]),
                            "slot {slot} of length {len} not tied to its first leaf"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_different_view_of_the_same_memory_is_a_different_parameter() {
        let buf = [0f32; 4];
        let mut plan = Plan::new();
        let whole = ArrayView::contiguous(buf.as_ptr() as usize, &[4], 4);
        let half = ArrayView::contiguous(buf.as_ptr() as usize, &[2], 4);
        let leaf = |dst: &ArrayView| LeafCopy {
            dst: dst.clone(),
            src: None,
            op: Op::Zeros,
        };
        assert!(matches!(plan.add(leaf(&whole), 1), TieEntry::New(0)));
        assert!(matches!(plan.add(leaf(&half), 1), TieEntry::New(1)));
        assert!(matches!(plan.add(leaf(&whole), 2), TieEntry::New(2)));
    }
}
