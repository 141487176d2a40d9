//! Overlap analysis: which leaf copies must run one after another, in walk order.
//!
//! A load must give exactly the result of copying leaf by leaf in walk order. Copies whose
//! destinations share no bytes with any other destination or with any source may run in
//! any order, on any thread. The others run in walk order on one thread.

use super::plan::LeafCopy;

/// For each leaf: `true` when it must run in walk order on the calling thread.
///
/// Byte ranges are compared, not elements, so interleaved views (`a[::2]`, `a[1::2]`) are
/// ordered too: conservative, and still exact.
pub fn ordered_leaves(leaves: &[LeafCopy], noop: &[bool]) -> Vec<bool> {
    let mut ordered: Vec<bool> = leaves.iter().map(|l| l.dst.may_self_overlap()).collect();
    // (lo, hi, leaf, is_destination)
    let mut spans: Vec<(usize, usize, usize, bool)> = Vec::with_capacity(2 * leaves.len());
    for (i, leaf) in leaves.iter().enumerate() {
        if noop[i] {
            continue;
        }
        if let Some(span) = leaf.dst.byte_span() {
            spans.push((span.start, span.end, i, true));
        }
        if let Some(span) = leaf.src.as_ref().and_then(|s| s.byte_span()) {
            spans.push((span.start, span.end, i, false));
        }
    }
    spans.sort_unstable_by_key(|s| s.0);
    // Group spans into clusters of transitively overlapping ranges; a cluster with a
    // destination and anything else orders every leaf in it.
    let mut start = 0;
    while start < spans.len() {
        let mut end = start + 1;
        let mut reach = spans[start].1;
        while end < spans.len() && spans[end].0 < reach {
            reach = reach.max(spans[end].1);
            end += 1;
        }
        let cluster = &spans[start..end];
        if cluster.len() > 1 && cluster.iter().any(|s| s.3) {
            for s in cluster {
                ordered[s.2] = true;
            }
        }
        start = end;
    }
    ordered
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
    fn a_source_that_is_its_destination_is_a_noop_not_an_overlap() {
        let same = leaf((0, 10), Some((0, 10)));
        assert!(same.is_noop());
        let shifted = leaf((0, 10), Some((4, 10)));
        assert!(reads_own_destination(&shifted));
        let leaves = [same, shifted];
        assert_eq!(ordered_leaves(&leaves, &noops(&leaves)), vec![false, true]);
    }
}
