//! Values read ahead of the copy: the sources of tied parameters, compared before anything
//! is written, and sources the walk turned into new arrays (a conjugate view resolved).
//!
//! Copying leaf by leaf in walk order, a source is read once the leaves before it are
//! written. If one of those writes into its memory, the value read ahead is not the one
//! the load would read, and a comparison or copy of it would be wrong. Such a source is
//! refused, which only a load that reads memory it writes itself can meet.

use super::kernels::Op;
use super::layout::ArrayView;
use super::plan::{LeafCopy, Plan};
use super::problem::{Problem, ProblemKind};
use super::ties::TieCheck;
use std::cell::OnceCell;
use std::ops::Range;

/// A source the walk read into a new array, in place of the leaf it is the source of.
#[derive(Clone, Debug)]
pub(crate) struct ReadAhead {
    /// The bytes it was read from.
    pub span: Range<usize>,
    /// Its leaf: the leaves before it are written before leaf by leaf would read it.
    pub leaf: usize,
    pub path: String,
    pub message: String,
    /// Problems the walk had found before it: where its problem goes.
    pub position: usize,
}

/// What a tied parameter's sources are refused with when the load writes them first.
const WRITTEN_BEFORE_READ: &str = "a source of this tied parameter shares memory with a \
    destination that this load writes before reading it, so the sources cannot be compared \
    before anything is written; load from a copy of it";

impl Plan {
    /// Notes that the source of the leaf planned next was read ahead from `span`: it is
    /// refused with `message` if an earlier leaf writes into `span`.
    pub fn read_ahead(
        &mut self,
        span: Range<usize>,
        path: String,
        message: String,
        position: usize,
    ) {
        let leaf = self.len();
        self.read_ahead.push(ReadAhead {
            span,
            leaf,
            path,
            message,
            position,
        });
    }

    /// Whether any source was read ahead of the copy (see [`Plan::stale_reads`]).
    pub fn has_read_ahead(&self) -> bool {
        !self.read_ahead.is_empty() || !self.tie_checks.is_empty()
    }

    /// One problem per source read ahead that an earlier leaf writes into, and the tie
    /// checks left to compare. The compact leaves must have been written out.
    pub(crate) fn stale_reads(&self) -> (Vec<(usize, Problem)>, Vec<&TieCheck>) {
        if !self.has_read_ahead() {
            return (Vec::new(), Vec::new());
        }
        // Built only if a source read ahead lies where the load writes at all: sources
        // from another model or a file nearly always lie elsewhere.
        let written = OnceCell::new();
        let reach = self.written_span().unwrap_or_default();
        let by_any_of = |span: &Range<usize>, leaves: Range<usize>| {
            span.start < reach.end
                && reach.start < span.end
                && written
                    .get_or_init(|| Written::new(self.leaves(), &self.noop))
                    .by_any_of(span, leaves)
        };
        let mut problems: Vec<(usize, Problem)> = (self.read_ahead.iter())
            .filter(|read| by_any_of(&read.span, 0..read.leaf))
            .map(|read| {
                let problem =
                    Problem::new(ProblemKind::Leaf, read.path.clone(), read.message.clone());
                (read.position, problem)
            })
            .collect();
        let mut fresh = Vec::new();
        for check in &self.tie_checks {
            match self.tie_read(check, &by_any_of) {
                TieRead::Stale => {
                    let problem =
                        Problem::new(ProblemKind::Leaf, check.path.clone(), WRITTEN_BEFORE_READ);
                    problems.push((check.position, problem));
                }
                TieRead::Same => {}
                TieRead::Compare => fresh.push(check),
            }
        }
        (problems, fresh)
    }

    /// What copying leaf by leaf makes of a tie check. The first source is read at its
    /// leaf, the later one after the leaves planned before the check. A later source that
    /// is the tied destination itself reads what the first wrote, and one buffer read as
    /// both sources reads the same: either needs no comparison, unless a leaf between the
    /// two reads writes into it.
    fn tie_read(
        &self,
        check: &TieCheck,
        by_any_of: &impl Fn(&Range<usize>, Range<usize>) -> bool,
    ) -> TieRead {
        let first = &self.leaves()[check.first];
        let span = |view: Option<&ArrayView>| view.and_then(|v| v.byte_span());
        let (first_span, later_span) = (span(first.src.as_ref()), span(check.src.as_ref()));
        let stale_if = |stale: bool| if stale { TieRead::Stale } else { TieRead::Same };
        let later = check.src.as_ref();
        if check.op == Op::Bytes && later.is_some_and(|src| src.same_bytes(&check.dst)) {
            let written = span(Some(&check.dst)).unwrap_or_default();
            return stale_if(by_any_of(&written, check.first + 1..check.after));
        }
        let same = |a: &ArrayView| later.is_some_and(|b| a.same_bytes(b)) && first.op == check.op;
        match (first_span, later_span) {
            (Some(a), _) if first.src.as_ref().is_some_and(same) => {
                stale_if(by_any_of(&a, check.first..check.after))
            }
            (a, b) => {
                let stale = a.is_some_and(|a| by_any_of(&a, 0..check.first))
                    || b.is_some_and(|b| by_any_of(&b, 0..check.after));
                if stale {
                    TieRead::Stale
                } else {
                    TieRead::Compare
                }
            }
        }
    }
}

/// What copying leaf by leaf makes of a tie check.
enum TieRead {
    /// A source is written before it is read: it cannot be compared before the load.
    Stale,
    /// Both sources give the same value, whatever it is.
    Same,
    /// The sources are compared as they are.
    Compare,
}

/// The destinations the copies write, in layers of spans that do not overlap, each layer
/// sorted by first byte (so by end too). Destinations seldom overlap: nearly always one
/// layer, and a few more for views inside a wider destination (a flat buffer).
struct Written {
    /// `(first byte, end, leaf)`.
    layers: Vec<Vec<(usize, usize, usize)>>,
}

impl Written {
    fn new(leaves: &[LeafCopy], noop: &[bool]) -> Self {
        let mut spans: Vec<(usize, usize, usize)> = (leaves.iter().enumerate())
            .filter(|&(i, _)| !noop[i])
            .filter_map(|(i, leaf)| leaf.dst.byte_span().map(|s| (s.start, s.end, i)))
            .collect();
        spans.sort_unstable();
        let mut layers: Vec<Vec<(usize, usize, usize)>> = Vec::new();
        for span in spans {
            // The first layer whose last span ends before this one starts.
            match layers
                .iter_mut()
                .find(|layer| layer.last().is_some_and(|l| l.1 <= span.0))
            {
                Some(layer) => layer.push(span),
                None => layers.push(vec![span]),
            }
        }
        Written { layers }
    }

    /// Whether a leaf numbered in `leaves` writes a byte of `span`. Byte ranges are
    /// compared, so a view interleaved with a destination counts as written by it.
    fn by_any_of(&self, span: &Range<usize>, leaves: Range<usize>) -> bool {
        self.layers.iter().any(|layer| {
            let starting_before = layer.partition_point(|&(lo, _, _)| lo < span.end);
            // Going down, the spans end ever earlier: only those reaching `span` are read.
            (layer[..starting_before].iter().rev())
                .take_while(|&&(_, end, _)| end > span.start)
                .any(|(_, _, leaf)| leaves.contains(leaf))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::TieEntry;

    fn view(data: &[f32]) -> ArrayView {
        ArrayView::contiguous(data.as_ptr() as usize, &[data.len()], 4)
    }

    fn copy(dst: &[f32], src: &[f32]) -> LeafCopy {
        LeafCopy {
            dst: view(dst),
            src: Some(view(src)),
            op: Op::Bytes,
        }
    }

    #[test]
    fn a_tie_source_an_earlier_leaf_writes_is_stale_and_others_are_compared() {
        let (p, tied, ones) = (vec![0f32; 4], vec![0f32; 4], vec![1f32; 4]);
        let (x, y) = (vec![0f32; 4], vec![0f32; 4]);
        let mut plan = Plan::new();
        assert!(matches!(plan.add(copy(&p, &ones), 1), TieEntry::New(0)));
        assert!(matches!(plan.add(copy(&tied, &x), 1), TieEntry::New(1)));
        // Its later source is `p`, which leaf 0 writes before it is read.
        plan.check_tie(1, view(&tied), Some(view(&p)), Op::Bytes, "t2".into(), 0);
        // One that no leaf writes is compared.
        plan.check_tie(1, view(&tied), Some(view(&y)), Op::Bytes, "t3".into(), 0);
        // The first source again, and the tied destination itself, give its value.
        plan.check_tie(1, view(&tied), Some(view(&x)), Op::Bytes, "t4".into(), 0);
        plan.check_tie(1, view(&tied), Some(view(&tied)), Op::Bytes, "t5".into(), 0);
        plan.write_out(|_| unreachable!());
        let (problems, fresh) = plan.stale_reads();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].1.path, "t2");
        assert_eq!(fresh.len(), 1);
        assert_eq!(fresh[0].path, "t3");
    }

    #[test]
    fn one_buffer_read_as_both_sources_is_stale_only_if_written_between_the_reads() {
        let (a, tied, b, q) = (vec![0f32; 4], vec![0f32; 4], vec![0f32; 4], vec![0f32; 4]);
        for (written_between, stale) in [(false, false), (true, true)] {
            let mut plan = Plan::new();
            plan.add(copy(&a, &b), 1); // leaf 0 writes `a`, before both reads
            plan.add(copy(&tied, &a), 1);
            // Part of `a` (not `a` itself, which would be another tied destination).
            let into = if written_between { &a[..2] } else { &q[..2] };
            plan.add(copy(into, &b[..2]), 1);
            plan.check_tie(1, view(&tied), Some(view(&a)), Op::Bytes, "t".into(), 0);
            plan.write_out(|_| unreachable!());
            assert_eq!(plan.stale_reads().0.len(), stale as usize);
        }
    }

    #[test]
    fn writes_are_found_inside_a_wider_destination_and_by_leaf_number() {
        // Leaf 0 writes all of `flat`, leaves 1 and 2 its halves, leaf 3 another buffer.
        let written = Written {
            layers: vec![
                vec![(0, 64, 0), (100, 116, 3)],
                vec![(0, 32, 1), (32, 64, 2)],
            ],
        };
        assert!(written.by_any_of(&(40..48), 2..3));
        assert!(written.by_any_of(&(40..48), 0..1));
        assert!(!written.by_any_of(&(40..48), 1..2));
        assert!(!written.by_any_of(&(64..100), 0..4));
        assert!(written.by_any_of(&(60..101), 3..4));
        let leaves = [(0, 64), (32, 64), (0, 32), (100, 116)].map(|(lo, hi)| LeafCopy {
            dst: ArrayView::contiguous(lo + 4096, &[(hi - lo) / 4], 4),
            src: None,
            op: Op::Zeros,
        });
        let built = Written::new(&leaves, &[false; 4]);
        assert_eq!(built.layers.len(), 2);
        assert!(built.by_any_of(&(4096 + 40..4096 + 48), 1..2));
        assert!(!built.by_any_of(&(4096 + 40..4096 + 48), 2..4));
    }

    #[test]
    fn a_value_read_ahead_is_stale_only_if_an_earlier_leaf_writes_its_bytes() {
        let (a, b, src) = (vec![0f32; 4], vec![0f32; 4], vec![1f32; 4]);
        let mut plan = Plan::new();
        plan.add(copy(&a, &src), 1);
        let span = |data: &[f32]| view(data).byte_span().unwrap();
        // Both the source of leaf 1: `a` is written before it is read, `b` (leaf 1's
        // own destination) after.
        plan.read_ahead(span(&a[1..]), "b".into(), "read ahead".into(), 0);
        plan.read_ahead(span(&b), "c".into(), "read ahead".into(), 0);
        plan.add(copy(&b, &src), 1);
        plan.write_out(|_| unreachable!());
        let (problems, fresh) = plan.stale_reads();
        assert_eq!(problems.len(), 1);
        assert_eq!(
            (problems[0].1.path.as_str(), problems[0].1.message.as_str()),
            ("b", "read ahead")
        );
        assert!(fresh.is_empty());
    }
}
