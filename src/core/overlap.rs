//! Overlap analysis: which leaf copies must run one after another, in walk order.
//!
//! A load must give exactly the result of copying leaf by leaf in walk order. Copies whose
//! destinations share no bytes with any other destination or with any source may run in
//! any order, on any thread. The others run in walk order on one thread.

use super::layout::ArrayView;
use super::plan::LeafCopy;
use rustc_hash::{FxHashMap, FxHashSet};
use std::num::NonZeroUsize;

/// One array's bytes: `[lo, hi)`, its leaf, and whether it is the leaf's destination.
#[derive(Clone, Copy)]
struct Span {
    lo: usize,
    hi: usize,
    leaf: usize,
    dst: bool,
}

/// For each leaf: `true` when it must run in walk order on the calling thread.
///
/// Byte ranges are compared, not elements, so interleaved views (`a[::2]`, `a[1::2]`) are
/// ordered too: conservative, and still exact. When every array's allocation is known,
/// only arrays of one allocation are compared; otherwise all of them are.
pub fn ordered_leaves(leaves: &[LeafCopy], noop: &[bool]) -> Vec<bool> {
    let mut ordered = vec![false; leaves.len()];
    // One pass over the plan: self-overlapping destinations, and the owner of every array
    // a copy touches (an unknown owner forces the comparison of every array).
    let mut owners: Vec<NonZeroUsize> = Vec::with_capacity(2 * leaves.len());
    let mut unknown_owner = false;
    for (i, leaf) in leaves.iter().enumerate() {
        if noop[i] {
            continue;
        }
        ordered[i] = leaf.dst.may_self_overlap();
        for view in std::iter::once(&leaf.dst).chain(&leaf.src) {
            match view.owner {
                _ if view.is_empty() => {}
                Some(owner) => owners.push(owner),
                None => unknown_owner = true,
            }
        }
    }
    // Every array a copy touches, with its leaf and whether it is the destination.
    let arrays = || {
        leaves
            .iter()
            .enumerate()
            .filter(|&(i, _)| !noop[i])
            .flat_map(|(i, leaf)| {
                let src = leaf.src.as_ref().map(|s| (i, s, false));
                std::iter::once((i, &leaf.dst, true)).chain(src)
            })
            .filter(|(_, view, _)| !view.is_empty())
    };
    let span = |(leaf, view, dst): (usize, &ArrayView, bool)| {
        let bytes = view.byte_span().unwrap_or_default();
        Span {
            lo: bytes.start,
            hi: bytes.end,
            leaf,
            dst,
        }
    };
    if unknown_owner {
        let mut all: Vec<Span> = arrays().map(span).collect();
        order_overlapping(&mut all, &mut ordered);
        return ordered;
    }
    // Arrays of different allocations never share bytes: only allocations that more than
    // one array belongs to need comparing, and those are rare.
    let shared = repeated(owners);
    if shared.is_empty() {
        return ordered;
    }
    let mut groups: FxHashMap<NonZeroUsize, Vec<Span>> = FxHashMap::default();
    for array in arrays() {
        if let Some(owner) = array.1.owner.filter(|o| shared.contains(o)) {
            groups.entry(owner).or_default().push(span(array));
        }
    }
    for group in groups.values_mut() {
        order_overlapping(group, &mut ordered);
    }
    ordered
}

/// The owners that occur more than once. A bitmap of hashed owners, small enough to stay
/// in cache, rules out most owners in one pass; only those whose bit was already set are
/// sorted to find the real repeats.
fn repeated(owners: Vec<NonZeroUsize>) -> FxHashSet<NonZeroUsize> {
    const BITS: usize = 1 << 22; // 512 KiB
    if owners.len() < 1 << 14 {
        // Few enough to sort at once, without paying for the bitmap.
        return repeated_by_sorting(owners);
    }
    let slot = |owner: NonZeroUsize| {
        let hash = (owner.get() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (hash >> (64 - 22)) as usize
    };
    let mut seen = vec![0u64; BITS / 64];
    let mut clashed = vec![0u64; BITS / 64];
    for &owner in &owners {
        let (word, bit) = (slot(owner) / 64, 1u64 << (slot(owner) % 64));
        clashed[word] |= seen[word] & bit;
        seen[word] |= bit;
    }
    let candidates: Vec<NonZeroUsize> = owners
        .into_iter()
        .filter(|&owner| clashed[slot(owner) / 64] & (1u64 << (slot(owner) % 64)) != 0)
        .collect();
    repeated_by_sorting(candidates)
}

/// The owners that occur more than once, found by sorting them all.
fn repeated_by_sorting(mut owners: Vec<NonZeroUsize>) -> FxHashSet<NonZeroUsize> {
    owners.sort_unstable();
    owners
        .windows(2)
        .filter(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
        .collect()
}

/// Marks every leaf of a cluster of transitively overlapping spans that holds a
/// destination and anything else.
fn order_overlapping(spans: &mut [Span], ordered: &mut [bool]) {
    spans.sort_unstable_by_key(|s| s.lo);
    let mut start = 0;
    while start < spans.len() {
        let mut end = start + 1;
        let mut reach = spans[start].hi;
        while end < spans.len() && spans[end].lo < reach {
            reach = reach.max(spans[end].hi);
            end += 1;
        }
        let cluster = &spans[start..end];
        if cluster.len() > 1 && cluster.iter().any(|s| s.dst) {
            for s in cluster {
                ordered[s.leaf] = true;
            }
        }
        start = end;
    }
}

/// Whether a leaf's source shares bytes with its own destination, so that the source must
/// be read in full before the destination is written.
pub fn reads_own_destination(leaf: &LeafCopy) -> bool {
    match (
        leaf.dst.byte_span(),
        leaf.src.as_ref().and_then(|s| s.byte_span()),
    ) {
        (Some(d), Some(s)) => d.start < s.end && s.start < d.end,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{ArrayView, Op};

    fn noops(leaves: &[LeafCopy]) -> Vec<bool> {
        leaves.iter().map(LeafCopy::is_noop).collect()
    }

    fn leaf(dst: (usize, usize), src: Option<(usize, usize)>) -> LeafCopy {
        LeafCopy {
            dst: ArrayView::contiguous(dst.0, &[dst.1], 1),
            src: src.map(|(a, n)| ArrayView::contiguous(a, &[n], 1)),
            op: if src.is_some() { Op::Bytes } else { Op::Zeros },
        }
    }

    #[test]
    fn repeated_owners_are_found_among_many_distinct_ones() {
        let owner = |n: usize| NonZeroUsize::new(n).unwrap();
        let mut owners: Vec<_> = (1..200_000).map(|n| owner(n * 48)).collect();
        owners.extend([owner(480), owner(96_000), owner(480)]);
        let found = repeated(owners);
        assert_eq!(found, [owner(480), owner(96_000)].into_iter().collect());
    }

    #[test]
    fn disjoint_leaves_and_shared_sources_run_in_parallel() {
        let leaves = [
            leaf((0, 10), Some((100, 10))),
            leaf((10, 10), Some((100, 10))),
            leaf((20, 10), None),
        ];
        assert_eq!(
            ordered_leaves(&leaves, &noops(&leaves)),
            vec![false, false, false]
        );
    }

    #[test]
    fn overlapping_destinations_are_ordered() {
        let leaves = [
            leaf((0, 10), Some((100, 10))),
            leaf((5, 10), Some((200, 10))),
            leaf((50, 10), Some((300, 10))),
        ];
        assert_eq!(
            ordered_leaves(&leaves, &noops(&leaves)),
            vec![true, true, false]
        );
    }

    #[test]
    fn a_source_reading_another_destination_is_ordered_with_it() {
        let leaves = [
            leaf((0, 10), Some((100, 10))),
            leaf((20, 10), Some((5, 10))),
        ];
        assert_eq!(ordered_leaves(&leaves, &noops(&leaves)), vec![true, true]);
    }

    #[test]
    fn arrays_of_different_known_allocations_are_not_compared() {
        let owned = |mut leaf: LeafCopy, dst_owner, src_owner| {
            leaf.dst.owner = NonZeroUsize::new(dst_owner);
            if let Some(src) = leaf.src.as_mut() {
                src.owner = NonZeroUsize::new(src_owner);
            }
            leaf
        };
        // Same byte ranges as `overlapping_destinations_are_ordered`, but the bindings
        // vouch that the first two live in different allocations (a fake, to prove that
        // the owners are what decides).
        let leaves = [
            owned(leaf((0, 10), Some((100, 10))), 1, 2),
            owned(leaf((5, 10), Some((200, 10))), 3, 4),
        ];
        assert_eq!(ordered_leaves(&leaves, &noops(&leaves)), vec![false, false]);
        // Within one allocation they are compared as before.
        let leaves = [
            owned(leaf((0, 10), Some((100, 10))), 1, 2),
            owned(leaf((5, 10), Some((200, 10))), 1, 4),
        ];
        assert_eq!(ordered_leaves(&leaves, &noops(&leaves)), vec![true, true]);
    }

    #[test]
    fn a_source_that_is_its_destination_is_a_noop_not_an_overlap() {
        let same = leaf((0, 10), Some((0, 10)));
        assert!(same.is_noop());
        let shifted = leaf((0, 10), Some((4, 10)));
        assert!(reads_own_destination(&shifted));
        let leaves = [same, shifted];
        assert_eq!(ordered_leaves(&leaves, &noops(&leaves)), vec![false, true]);
    }
}
