//! A load plan: every leaf copy of one `loadmodel` call, in walk order, with its ties.

use super::kernels::Op;
use super::layout::ArrayView;
use super::read_ahead::ReadAhead;
use super::spare::{self, Tables};
use super::ties::{TieCache, TieCheck};
use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::ops::Range;

/// One destination array and what goes into it.
#[derive(Clone, Debug)]
pub struct LeafCopy {
    pub dst: ArrayView,
    /// `None` for [`Op::Zeros`]; the source array otherwise.
    pub src: Option<ArrayView>,
    pub op: Op,
}

/// A leaf's copy as one run of bytes: a plain copy between two non-empty C-contiguous
/// arrays, the common leaf, which the copy then needs no layout for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Never 0 (a non-empty array's address), so that `Option<Run>` takes no more room.
    pub dst: NonZeroUsize,
    pub src: usize,
    pub len: usize,
}

impl Run {
    /// The run of `len` bytes from `src` to `dst`; `None` when there is nothing to copy.
    pub fn new(dst: usize, src: usize, len: usize) -> Option<Run> {
        let dst = NonZeroUsize::new(dst).filter(|_| len > 0)?;
        Some(Run { dst, src, len })
    }
}

impl LeafCopy {
    /// The copy as one [`Run`], when it is one.
    pub fn run(&self) -> Option<Run> {
        let src = self.src.as_ref()?;
        let plain = self.op == Op::Bytes && self.dst.is_c_contiguous() && src.is_c_contiguous();
        Run::new(self.dst.addr, src.addr, self.nbytes()).filter(|_| plain)
    }

    /// Whether the copy changes nothing: the source is the destination itself.
    pub fn is_noop(&self) -> bool {
        self.dst.is_empty() || self.reads_itself()
    }

    /// Whether the copy is of the destination's bytes onto themselves.
    #[inline(always)]
    fn reads_itself(&self) -> bool {
        // The addresses first: they nearly always differ, and settle it.
        matches!(&self.src, Some(src) if src.addr == self.dst.addr && self.op == Op::Bytes && src.same_bytes(&self.dst))
    }

    pub fn nbytes(&self) -> usize {
        self.dst.nbytes()
    }

    /// Whether a shape or strides of the copy are on the heap.
    fn spilled(&self) -> bool {
        self.dst.spilled() || self.src.as_ref().is_some_and(ArrayView::spilled)
    }
}

/// Where [`Plan::add`] put a destination.
#[derive(Debug)]
pub enum TieEntry {
    /// A parameter seen for the first time: leaf number `n` copies into it.
    New(usize),
    /// The same parameter as leaf number `first`: the copy is handed back, since its
    /// source only needs to agree with the first one's.
    Tied { first: usize, leaf: Box<LeafCopy> },
}

/// The destination of a compact leaf (see [`Plan::add_compact`]) by leaf number: the plan
/// keeps only its run, and asks for its view when a tie must be told apart.
pub type CompactViews<'a> = &'a dyn Fn(usize) -> ArrayView;

/// The [`CompactViews`] of a plan that has no compact leaves.
pub fn no_compact_leaves(leaf: usize) -> ArrayView {
    unreachable!("leaf {leaf} is compact, and no view was given for it")
}

/// Every copy of a load, in walk order, and the checks its tied parameters need.
#[derive(Default, Debug)]
pub struct Plan {
    /// The copies of the leaves, in walk order; while some are compact (see
    /// [`Plan::add_compact`]), only the others, numbered by `numbers`.
    leaves: Vec<LeafCopy>,
    /// While there are compact leaves: the leaf number of each entry of `leaves`.
    numbers: Vec<u32>,
    /// Compact leaves not yet written out as copies (see [`Plan::write_out`]).
    compact: usize,
    /// For each leaf, whether its copy changes nothing (see [`LeafCopy::is_noop`]).
    pub(crate) noop: Vec<bool>,
    /// For each leaf, its copy as one run of bytes if it is one (see [`LeafCopy::run`]):
    /// a load of many small leaves then copies from this compact table.
    pub(crate) runs: Vec<Option<Run>>,
    nbytes: usize,
    /// The lowest to the highest byte the copies write (see [`Plan::written_span`]).
    written: Option<Range<usize>>,
    pub(crate) ties: TieCache,
    pub(crate) tie_checks: Vec<TieCheck>,
    /// Sources read into new arrays during the walk (see [`read_ahead`]).
    ///
    /// [`read_ahead`]: super::read_ahead
    pub(crate) read_ahead: Vec<ReadAhead>,
    /// Whether a leaf's shape or strides are on the heap (more than two dimensions).
    spilled: bool,
}

impl Drop for Plan {
    fn drop(&mut self) {
        spare::keep(Tables {
            noop: std::mem::take(&mut self.noop),
            runs: std::mem::take(&mut self.runs),
            ties: std::mem::take(&mut self.ties),
        });
        // Without shapes on the heap, the leaves own nothing to free: dropping them one
        // by one would only read every entry again, a cache miss per leaf of a large plan.
        if !self.spilled {
            // SAFETY: no entries is always valid; forgetting them frees nothing they own.
            unsafe { self.leaves.set_len(0) };
        }
    }
}

impl Plan {
    pub fn new() -> Self {
        Self::default()
    }

    /// A plan with room for `leaves` leaves before it reallocates, in the tables an
    /// earlier plan left (see [`spare`]) if there are any.
    pub fn with_capacity(leaves: usize) -> Self {
        let Tables { noop, runs, ties } = spare::take(leaves);
        let mut plan = Self::default();
        plan.noop = noop;
        plan.runs = runs;
        plan.ties = ties;
        plan
    }

    /// Plans a copy, unless its destination is a parameter already planned (same address,
    /// shape, strides and `dtype_key`): then the copy is dropped and the first one stands.
    #[inline(always)]
    pub fn add(&mut self, leaf: LeafCopy, dtype_key: u64) -> TieEntry {
        let (written, run) = (leaf.dst.byte_span(), leaf.run());
        self.add_spanned(leaf, dtype_key, written, run, &no_compact_leaves)
    }

    /// [`Plan::add`] for a leaf whose destination's byte span and [`LeafCopy::run`] the
    /// caller has worked out; `views` gives the destinations of compact leaves.
    #[inline(always)]
    pub fn add_spanned(
        &mut self,
        leaf: LeafCopy,
        dtype_key: u64,
        written: Option<Range<usize>>,
        run: Option<Run>,
        views: CompactViews,
    ) -> TieEntry {
        debug_assert_eq!(run, leaf.run());
        let next = self.len();
        let first = self.tied_to(leaf.dst.addr, dtype_key, views, |other| {
            other.same_elements(&leaf.dst)
        });
        if let Some(first) = first {
            return TieEntry::Tied {
                first,
                leaf: Box::new(leaf),
            };
        }
        // As `leaf.is_noop()`, with the element count worked out once.
        let len = leaf.dst.len();
        let noop = len == 0 || leaf.reads_itself();
        self.count(noop, written, run, len * leaf.dst.itemsize);
        self.spilled |= leaf.spilled();
        if self.compact > 0 {
            self.numbers.push(next as u32);
        }
        self.leaves.push(leaf);
        TieEntry::New(next)
    }

    /// Plans the common leaf, a plain copy of `run` between two C-contiguous arrays of one
    /// shape and dtype, without its [`LeafCopy`]: a load of many small leaves would spend
    /// much of its time writing those. `dst` makes the destination's view, needed only to
    /// tell ties apart, and `copy` the leaf's copy, needed only when it is a tie.
    /// [`Plan::write_out`] makes the copies of these leaves, which most uses of a plan need.
    #[inline(always)]
    pub fn add_compact(
        &mut self,
        run: Run,
        dtype_key: u64,
        views: CompactViews,
        dst: impl Fn() -> ArrayView,
        copy: impl FnOnce() -> LeafCopy,
    ) -> TieEntry {
        let mut mine = None;
        let first = self.tied_to(run.dst.get(), dtype_key, views, |other| {
            other.same_elements(mine.get_or_insert_with(&dst))
        });
        if let Some(first) = first {
            return TieEntry::Tied {
                first,
                leaf: Box::new(copy()),
            };
        }
        self.add_compact_alone(run)
    }

    /// Enters `leaf`, planned by [`Plan::add_compact_alone`], as the first leaf at `addr`
    /// with `dtype_key`, for leaves planned after it to find.
    pub fn enter_first(&mut self, addr: usize, dtype_key: u64, leaf: usize) {
        let found = self.ties.first_or_insert(addr, dtype_key, leaf, |_| false);
        debug_assert!(found.is_none(), "a leaf planned alone shares its address");
    }

    /// [`Plan::add_compact`] for a destination that no other leaf can share: memory that
    /// only this leaf's array can reach (see `leaf::alone`). It is not recorded for
    /// finding ties, which a load of many small arrays spends much of its time on, unless
    /// [`Plan::enter_first`] enters it later.
    #[inline(always)]
    pub fn add_compact_alone(&mut self, run: Run) -> TieEntry {
        let next = self.len();
        if self.compact == 0 {
            self.numbers = (0..self.leaves.len() as u32).collect();
        }
        self.compact += 1;
        let (at, len) = (run.dst.get(), run.len);
        // A source at the destination's address, in the same layout, is its own bytes.
        let noop = run.src == at;
        self.count(noop, Some(at..at + len), Some(run), len);
        TieEntry::New(next)
    }

    /// The leaf planned before whose destination, at `addr` with `dtype_key`, `same`
    /// accepts, or `None` after recording the next leaf as the first there.
    #[inline(always)]
    fn tied_to(
        &mut self,
        addr: usize,
        dtype_key: u64,
        views: CompactViews,
        mut same: impl FnMut(&ArrayView) -> bool,
    ) -> Option<usize> {
        let next = self.len();
        let planned = Planned {
            leaves: &self.leaves,
            numbers: &self.numbers,
            compact: self.compact > 0,
            views,
        };
        self.ties
            .first_or_insert(addr, dtype_key, next, |at| same(&planned.dst(at)))
    }

    /// Records a new leaf in the per-leaf tables and the totals.
    #[inline(always)]
    fn count(&mut self, noop: bool, written: Option<Range<usize>>, run: Option<Run>, bytes: usize) {
        if !noop {
            // Worked out here, while the leaf is in cache, not in a pass of its own.
            if let Some(span) = written {
                self.written = Some(match self.written.take() {
                    Some(w) => w.start.min(span.start)..w.end.max(span.end),
                    None => span,
                });
            }
        }
        self.noop.push(noop);
        self.runs.push(run);
        self.nbytes += bytes;
    }

    /// Makes the copy of every compact leaf with `copy(leaf number)`: afterwards
    /// [`Plan::leaves`] holds every leaf.
    pub fn write_out(&mut self, mut copy: impl FnMut(usize) -> LeafCopy) {
        if self.compact == 0 {
            return;
        }
        let mut planned = std::mem::take(&mut self.leaves).into_iter();
        let mut numbers = std::mem::take(&mut self.numbers).into_iter().peekable();
        let mut leaves = Vec::with_capacity(self.len());
        for i in 0..self.len() {
            let leaf = match numbers.next_if(|&n| n as usize == i) {
                Some(_) => planned.next().expect("a copy for every numbered leaf"),
                None => copy(i),
            };
            self.spilled |= leaf.spilled();
            leaves.push(leaf);
        }
        self.leaves = leaves;
        self.compact = 0;
    }

    /// Whether every leaf's copy is in [`Plan::leaves`] (see [`Plan::write_out`]).
    pub fn written_out(&self) -> bool {
        self.compact == 0
    }

    /// The number of leaves.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The copy of leaf `leaf`, unless it is compact and not written out.
    pub fn leaf(&self, leaf: usize) -> Option<&LeafCopy> {
        position(&self.numbers, self.compact > 0, leaf).and_then(|at| self.leaves.get(at))
    }

    /// The copy of each leaf in walk order, `None` for a compact leaf not written out.
    pub fn each_leaf(&self) -> impl Iterator<Item = Option<&LeafCopy>> + '_ {
        let mut numbered = self.numbers.iter().zip(&self.leaves).peekable();
        (0..self.len()).map(move |i| match self.compact {
            0 => self.leaves.get(i),
            _ => numbered
                .next_if(|(&n, _)| n as usize == i)
                .map(|(_, leaf)| leaf),
        })
    }

    /// The addresses from the lowest to the highest byte the copy writes, if any.
    pub fn written_span(&self) -> Option<Range<usize>> {
        self.written.clone()
    }

    /// Requires the later source of tied leaf `first`, whose destination is `dst` now, to
    /// give the same value.
    ///
    /// `src` is `None` for a `False` source (all zeros); `op` converts it into the
    /// destination's dtype and must not be [`Op::External`]. `position` is the number of
    /// problems found before this point of the walk.
    pub fn check_tie(
        &mut self,
        first: usize,
        dst: ArrayView,
        src: Option<ArrayView>,
        op: Op,
        path: String,
        position: usize,
    ) {
        let after = self.len();
        self.tie_checks.push(TieCheck {
            first,
            dst,
            src,
            op,
            path,
            position,
            after,
        });
    }

    /// Gives the value of leaf `leaf` as an array already in the destination's dtype, for
    /// tie checks of a leaf whose own copy is [`Op::External`].
    pub fn stage_tie_value(&mut self, leaf: usize, staged: ArrayView) {
        self.ties.stage(leaf, staged);
    }

    /// The value given by [`Plan::stage_tie_value`] for leaf `leaf`, if any.
    pub fn staged_tie_value(&self, leaf: usize) -> Option<&ArrayView> {
        self.ties.staged.get(&leaf)
    }

    /// Whether any tied parameter has a later source to compare.
    pub fn has_tie_checks(&self) -> bool {
        !self.tie_checks.is_empty()
    }

    /// Replaces the source of leaf `leaf` by `staged`, already in the destination's dtype:
    /// a cast done before the copy starts, so that the copy itself cannot fail.
    pub fn restage(&mut self, leaf: usize, staged: ArrayView) {
        assert!(
            self.written_out(),
            "restaged before the compact leaves were written out"
        );
        let copy = &mut self.leaves[leaf];
        self.spilled |= staged.spilled();
        copy.src = Some(staged);
        copy.op = Op::Bytes;
        self.runs[leaf] = copy.run();
    }

    /// The later source of each tie check, in the order the checks were added.
    pub fn tie_sources(&self) -> impl Iterator<Item = Option<&ArrayView>> {
        self.tie_checks.iter().map(|check| check.src.as_ref())
    }

    /// The first leaf of each tie check, and its destination when the tie was found.
    pub fn tie_destinations(&self) -> impl Iterator<Item = (usize, &ArrayView)> {
        self.tie_checks
            .iter()
            .map(|check| (check.first, &check.dst))
    }

    /// Every leaf's copy, in walk order; the compact ones must have been written out.
    pub fn leaves(&self) -> &[LeafCopy] {
        assert!(self.written_out(), "compact leaves not written out");
        &self.leaves
    }

    /// Bytes written by the plan.
    pub fn nbytes(&self) -> usize {
        self.nbytes
    }
}

/// Where the copy of leaf `leaf` is in a plan's `leaves`: at its number when there are no
/// compact leaves (`compact` false), else among the leaves `numbers` lists; `None` for a
/// compact leaf.
fn position(numbers: &[u32], compact: bool, leaf: usize) -> Option<usize> {
    match compact {
        false => Some(leaf),
        true => numbers.binary_search(&(leaf as u32)).ok(),
    }
}

/// The copies planned so far, and the views of the compact ones, for telling ties apart.
struct Planned<'a> {
    leaves: &'a [LeafCopy],
    numbers: &'a [u32],
    compact: bool,
    views: CompactViews<'a>,
}

impl<'a> Planned<'a> {
    /// The destination of leaf `leaf`.
    fn dst(&self, leaf: usize) -> Cow<'a, ArrayView> {
        match position(self.numbers, self.compact, leaf) {
            Some(at) => Cow::Borrowed(&self.leaves[at].dst),
            None => Cow::Owned((self.views)(leaf)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four f32 at `addr`, as a destination.
    fn view(addr: usize) -> ArrayView {
        ArrayView::contiguous(addr, &[4], 4)
    }

    fn full(dst: usize, src: usize) -> LeafCopy {
        LeafCopy {
            dst: view(dst),
            src: Some(view(src)),
            op: Op::Bytes,
        }
    }

    fn run(dst: usize, src: usize) -> Run {
        Run::new(dst, src, 16).unwrap()
    }

    /// A plan of leaves at these destination addresses, compact or not, each reading
    /// from 1 MiB above its destination.
    fn mixed(addrs: &[(usize, bool)]) -> (Plan, Vec<TieEntry>) {
        let mut plan = Plan::new();
        let mut entries = Vec::new();
        for &(addr, compact) in addrs {
            let views = |_: usize| panic!("no view asked for a leaf without a tie");
            let entry = match compact {
                true => plan.add_compact(
                    run(addr, addr + (1 << 20)),
                    1,
                    &views,
                    || view(addr),
                    || full(addr, addr + (1 << 20)),
                ),
                false => plan.add(full(addr, addr + (1 << 20)), 1),
            };
            entries.push(entry);
        }
        (plan, entries)
    }

    #[test]
    fn written_out_leaves_are_in_walk_order() {
        let (mut plan, entries) = mixed(&[(64, false), (128, true), (256, false), (512, true)]);
        assert!(entries
            .iter()
            .enumerate()
            .all(|(i, e)| matches!(e, TieEntry::New(n) if *n == i)));
        assert!(!plan.written_out());
        let seen: Vec<_> = plan.each_leaf().map(|l| l.map(|l| l.dst.addr)).collect();
        assert_eq!(seen, [Some(64), None, Some(256), None]);
        assert_eq!(plan.leaf(2).map(|l| l.dst.addr), Some(256));
        assert!(plan.leaf(1).is_none());
        assert_eq!(plan.nbytes(), 64);
        plan.write_out(|i| full([64, 128, 256, 512][i], 0));
        let addrs: Vec<_> = plan.leaves().iter().map(|l| l.dst.addr).collect();
        assert_eq!(addrs, [64, 128, 256, 512]);
        assert_eq!(plan.runs[1], Some(run(128, 128 + (1 << 20))));
    }

    #[test]
    fn compact_and_full_leaves_are_tied_to_each_other() {
        // Every pairing of kinds, the first leaf above or below those before it.
        for (first, later) in [(true, true), (true, false), (false, true), (false, false)] {
            for ascending in [true, false] {
                let (low, high) = (4096, 8192);
                let order = if ascending { [low, high] } else { [high, low] };
                let (mut plan, _) = mixed(&[(order[0], first), (order[1], first)]);
                let views = |leaf: usize| view(order[leaf]);
                for (n, &addr) in order.iter().enumerate() {
                    let entry = match later {
                        true => plan.add_compact(
                            run(addr, 1),
                            1,
                            &views,
                            || view(addr),
                            || full(addr, 1),
                        ),
                        false => {
                            let leaf = full(addr, 1);
                            let (written, run) = (leaf.dst.byte_span(), leaf.run());
                            plan.add_spanned(leaf, 1, written, run, &views)
                        }
                    };
                    let TieEntry::Tied { first: f, leaf } = entry else {
                        panic!("{addr} not tied ({first}, {later}, {ascending})");
                    };
                    assert_eq!((f, leaf.src.map(|s| s.addr)), (n, Some(1)));
                }
                // Another shape at the same address is another parameter.
                let other = ArrayView::contiguous(order[0], &[2], 4);
                let leaf = LeafCopy {
                    dst: other.clone(),
                    src: None,
                    op: Op::Zeros,
                };
                assert!(matches!(
                    plan.add_spanned(leaf, 1, None, None, &views),
                    TieEntry::New(2)
                ));
            }
        }
    }

    #[test]
    fn a_plan_starts_empty_in_the_tables_of_an_earlier_one() {
        let views = |_: usize| unreachable!();
        for round in 0..3 {
            let mut plan = Plan::with_capacity(8);
            assert!(plan.is_empty() && plan.noop.is_empty(), "round {round}");
            for addr in [4096, 8192] {
                let entry =
                    plan.add_compact(run(addr, 1), 1, &views, || view(addr), || full(addr, 1));
                // A leaf of the earlier plan would make this a tie.
                assert!(matches!(entry, TieEntry::New(_)), "round {round}");
            }
            assert_eq!(plan.len(), 2);
        }
    }

    #[test]
    fn a_compact_leaf_reading_its_own_bytes_changes_nothing() {
        let mut plan = Plan::new();
        let views = |_: usize| unreachable!();
        plan.add_compact(
            run(4096, 4096),
            1,
            &views,
            || view(4096),
            || full(4096, 4096),
        );
        plan.add_compact(
            run(8192, 4096),
            1,
            &views,
            || view(8192),
            || full(8192, 4096),
        );
        assert_eq!(plan.noop, [true, false]);
        assert_eq!(plan.written_span(), Some(8192..8208));
    }
}
