//! A load plan: every leaf copy of one `loadmodel` call, in walk order, with its ties.

use super::kernels::Op;
use super::layout::ArrayView;
use super::ties::{TieCache, TieCheck};
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

    /// Whether the source's bytes lie apart from the destination's.
    pub fn apart(&self) -> bool {
        let dst = self.dst.get();
        dst.checked_add(self.len).is_some_and(|end| end <= self.src)
            || self.src.checked_add(self.len).is_some_and(|end| end <= dst)
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
        matches!(&self.src, Some(src) if src.addr == self.dst.addr && self.op == Op::Bytes && *src == self.dst)
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

/// Every copy of a load, in walk order, and the checks its tied parameters need.
#[derive(Default, Debug)]
pub struct Plan {
    pub(crate) leaves: Vec<LeafCopy>,
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
    /// Whether a leaf's shape or strides are on the heap (more than two dimensions).
    spilled: bool,
}

impl Drop for Plan {
    fn drop(&mut self) {
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

    /// A plan with room for `leaves` leaves before it reallocates.
    pub fn with_capacity(leaves: usize) -> Self {
        let mut plan = Self::default();
        plan.leaves = Vec::with_capacity(leaves);
        plan.noop = Vec::with_capacity(leaves);
        plan.runs = Vec::with_capacity(leaves);
        plan.ties = TieCache::with_capacity(leaves);
        plan
    }

    /// Plans a copy, unless its destination is a parameter already planned (same address,
    /// shape, strides and `dtype_key`): then the copy is dropped and the first one stands.
    #[inline(always)]
    pub fn add(&mut self, leaf: LeafCopy, dtype_key: u64) -> TieEntry {
        let (written, run) = (leaf.dst.byte_span(), leaf.run());
        self.add_spanned(leaf, dtype_key, written, run)
    }

    /// [`Plan::add`] for a leaf whose destination's byte span and [`LeafCopy::run`] the
    /// caller has worked out.
    #[inline(always)]
    pub fn add_spanned(
        &mut self,
        leaf: LeafCopy,
        dtype_key: u64,
        written: Option<Range<usize>>,
        run: Option<Run>,
    ) -> TieEntry {
        debug_assert_eq!(run, leaf.run());
        // Into the plan first, checked there: a leaf is moved once, and a tied one (rare)
        // is taken back out.
        let next = self.leaves.len();
        self.spilled |= leaf.spilled();
        self.leaves.push(leaf);
        let (planned, added) = self.leaves.split_at(next);
        let leaf = &added[0];
        if let Some(first) = self
            .ties
            .first_or_insert(planned, &leaf.dst, dtype_key, next)
        {
            let leaf = self.leaves.pop().expect("the leaf pushed above");
            return TieEntry::Tied {
                first,
                leaf: Box::new(leaf),
            };
        }
        // As `leaf.is_noop()`, with the element count worked out once.
        let len = leaf.dst.len();
        let noop = len == 0 || leaf.reads_itself();
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
        self.nbytes += len * leaf.dst.itemsize;
        TieEntry::New(next)
    }

    /// The addresses from the lowest to the highest byte the copy writes, if any.
    pub fn written_span(&self) -> Option<Range<usize>> {
        self.written.clone()
    }

    /// Requires the later source of tied leaf `first` to give the same value.
    ///
    /// `src` is `None` for a `False` source (all zeros); `op` converts it into the
    /// destination's dtype and must not be [`Op::External`]. `position` is the number of
    /// problems found before this point of the walk.
    pub fn check_tie(
        &mut self,
        first: usize,
        src: Option<ArrayView>,
        op: Op,
        path: String,
        position: usize,
    ) {
        self.tie_checks.push(TieCheck {
            first,
            src,
            op,
            path,
            position,
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

    pub fn leaves(&self) -> &[LeafCopy] {
        &self.leaves
    }

    /// Bytes written by the plan.
    pub fn nbytes(&self) -> usize {
        self.nbytes
    }
}
