//! Running a checked plan: parallel copies of independent leaves, then ordered ones.

use super::kernels::{copy_range, gather, Op};
use super::layout::{ArrayView, PairLayout};
use super::overlap::{ordered_leaves, reads_own_destination};
use super::plan::{LeafCopy, Plan, Run};
use super::problem::Problem;
use super::stream::{copy_streaming, fence};
use super::threads::pool;
use rayon::prelude::*;
use rayon::ThreadPool;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Bytes per parallel task: large leaves are split and small ones batched to about this.
const TASK_BYTES: usize = 1 << 20;
/// Loads below this run on the calling thread: waking a pool costs more than it saves.
pub const PARALLEL_MIN_BYTES: usize = 4 << 20;
/// Loads whose leaves hold fewer bytes than this on average also run on the calling
/// thread, in walk order: working out which leaves may run in parallel costs about
/// 150 ns a leaf, more than the threads save on copying it. Measured on 2 cores, leaves of
/// 64 B took 95 ns each in walk order against 237 in parallel, 1 KiB 393 against 505,
/// 4 KiB 1015 against 889.
pub const PARALLEL_MIN_LEAF_BYTES: usize = 1 << 10;
/// Copies of at least this size are watched: Ctrl-C stops them, so they run in parallel
/// (the watched path) whatever the size of their leaves.
pub const WATCHED_MIN_BYTES: usize = 64 << 20;
/// Loads above this stream their writes past the caches, which they would only flush.
pub const STREAMING_MIN_BYTES: usize = 32 << 20;

/// Runs a plan's tie checks and copies on the calling thread or on a rayon pool.
pub struct Executor {
    pool: Option<Arc<ThreadPool>>,
    streaming: bool,
    /// How often a watched copy calls its watch.
    tick: Duration,
}

/// How often a watched copy reports its progress (and can be stopped).
const TICK: Duration = Duration::from_millis(100);

/// Bytes written so far by a copy's threads, and whether they should stop.
#[derive(Default)]
struct Progress {
    done: AtomicUsize,
    cancelled: AtomicBool,
}

impl Progress {
    fn add(&self, bytes: usize) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// One parallel task: element ranges of one or more leaves.
type Task = Vec<(usize, Range<usize>)>;

impl Executor {
    /// An executor for `plan` on up to `threads` threads; small plans use only the caller.
    pub fn new(plan: &Plan, threads: usize) -> Result<Self, String> {
        let nbytes = plan.nbytes();
        let small_leaves =
            nbytes < WATCHED_MIN_BYTES && nbytes < PARALLEL_MIN_LEAF_BYTES * plan.len();
        let serial = nbytes < PARALLEL_MIN_BYTES || small_leaves;
        let pool = match threads > 1 && !serial {
            true => Some(pool(threads)?),
            false => None,
        };
        Ok(Executor {
            pool,
            streaming: nbytes >= STREAMING_MIN_BYTES && !small_leaves,
            tick: TICK,
        })
    }

    /// Problems with tied parameters (see [`Plan::check_ties`]).
    pub fn check_ties(&self, plan: &Plan) -> Vec<(usize, Problem)> {
        match &self.pool {
            Some(pool) if plan.has_tie_checks() => pool.install(|| plan.check_ties(true)),
            // Without a pool, on the calling thread: `threads=1` means one thread.
            _ => plan.check_ties(false),
        }
    }

    /// Whether the plan is best copied leaf by leaf in walk order on the calling thread
    /// ([`Executor::copy_in_walk_order`]): a plan without a pool or streaming, such as one
    /// of many small leaves, where working out which leaves could run in any order costs
    /// more than it saves.
    pub fn runs_in_walk_order(&self) -> bool {
        self.pool.is_none() && !self.streaming
    }

    /// Copies every leaf in walk order on the calling thread, the order the result is
    /// defined by, so that no overlap analysis is needed. The plan must hold no
    /// [`Op::External`] leaf (those are skipped); its compact leaves need not be written
    /// out (see [`Plan::write_out`]).
    pub fn copy_in_walk_order(&self, plan: &Plan) {
        for (i, (&run, &noop)) in plan.runs.iter().zip(&plan.noop).enumerate() {
            match run {
                _ if noop => {}
                // The common leaf, copied from the compact table alone.
                // SAFETY: the plan holds both arrays alive.
                Some(run) => unsafe { move_run(run) },
                None => match plan.leaf(i) {
                    Some(leaf) if leaf.op != Op::External => copy_ordered(leaf, None),
                    Some(_) => {}
                    None => unreachable!("compact leaf {i} has no run"),
                },
            }
        }
    }

    /// For each leaf, whether it must run in walk order on the calling thread (see
    /// [`ordered_leaves`]); what [`Executor::execute`] takes.
    pub fn ordered(&self, plan: &Plan) -> Vec<bool> {
        ordered_leaves(plan.leaves(), &plan.noop)
    }

    /// Copies every leaf of a checked plan; `ordered` comes from [`Executor::ordered`].
    /// Leaves still marked [`Op::External`] (only ordered ones should be: the others can
    /// be staged beforehand, see [`Plan::restage`]) are handed to `external(leaf)` on the
    /// calling thread, in walk order among the ordered leaves.
    ///
    /// Returns `external`'s first error; by then some leaves may have been written.
    pub fn execute<E>(
        &self,
        plan: &Plan,
        ordered: &[bool],
        external: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<(), E> {
        self.execute_watched(
            plan,
            ordered,
            external,
            None::<fn(usize, usize) -> Result<(), E>>,
        )
    }

    /// [`Executor::execute`], with `watch(bytes_done, bytes_total)` called on the calling
    /// thread about every 100 ms while the parallel part runs on other threads, and once at
    /// the end. An error from `watch` stops the copy within a task (about 1 MiB per thread)
    /// and is returned; the leaves written by then stay written.
    pub fn execute_watched<E>(
        &self,
        plan: &Plan,
        ordered: &[bool],
        mut external: impl FnMut(usize) -> Result<(), E>,
        watch: Option<impl FnMut(usize, usize) -> Result<(), E>>,
    ) -> Result<(), E> {
        let progress = Progress::default();
        match watch {
            None => self.copy_independent(plan, ordered, &progress),
            Some(mut watch) => {
                self.copy_watched(plan, ordered, &progress, &mut watch)?;
                // Between ordered leaves too, about every tick: they may be most of a load.
                let (total, mut done) = (plan.nbytes(), progress.done.load(Ordering::Relaxed));
                let mut last = Instant::now();
                let result = self.copy_ordered_leaves(plan, ordered, &mut external, |bytes| {
                    done += bytes;
                    if done >= total || last.elapsed() < self.tick {
                        return Ok(()); // (the last call comes once all is copied)
                    }
                    let watched = watch(done, total);
                    last = Instant::now(); // a tick of copying, however long `watch` took
                    watched
                });
                result?;
                return watch(total, total);
            }
        }
        self.copy_ordered_leaves(plan, ordered, &mut external, |_| Ok(()))
    }

    /// The independent leaves copied by the pool, `watch` polled meanwhile on this thread;
    /// without a pool, copied on this thread in tasks, with `watch` between them.
    fn copy_watched<E>(
        &self,
        plan: &Plan,
        ordered: &[bool],
        progress: &Progress,
        watch: &mut impl FnMut(usize, usize) -> Result<(), E>,
    ) -> Result<(), E> {
        let total = plan.nbytes();
        if self.pool.is_none() {
            // The first call comes at once, so that a copy can be refused before it starts.
            watch(0, total)?;
            let mut last = Instant::now();
            for task in parallel_tasks(plan, &|i, leaf| independent(plan, ordered, i, leaf)) {
                progress.add(run_task(plan, &task, self.streaming));
                let done = progress.done.load(Ordering::Relaxed);
                if done < total && last.elapsed() >= self.tick {
                    watch(done, total)?;
                    last = Instant::now(); // a tick of copying, however long `watch` took
                }
            }
            return Ok(());
        }
        std::thread::scope(|scope| {
            let (finished, wait) = mpsc::channel();
            scope.spawn(move || {
                self.copy_independent(plan, ordered, progress);
                let _ = finished.send(());
            });
            // The first call comes at once, so that a copy can be refused before it starts.
            let mut wait_for = Duration::ZERO;
            while let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(wait_for) {
                if let Err(error) = watch(progress.done.load(Ordering::Relaxed), total) {
                    progress.cancelled.store(true, Ordering::Relaxed);
                    let _ = wait.recv();
                    return Err(error);
                }
                wait_for = self.tick;
            }
            Ok(())
        })
    }

    /// The leaves no other copy touches: in parallel tasks, or on this thread for small
    /// loads.
    fn copy_independent(&self, plan: &Plan, ordered: &[bool], progress: &Progress) {
        match &self.pool {
            Some(pool) => {
                let tasks = parallel_tasks(plan, &|i, leaf| independent(plan, ordered, i, leaf));
                let streaming = self.streaming;
                pool.install(|| {
                    tasks.par_iter().for_each(|task| {
                        if !progress.cancelled() {
                            progress.add(run_task(plan, task, streaming));
                        }
                    })
                });
            }
            None => {
                for (i, leaf) in plan.leaves().iter().enumerate() {
                    if progress.cancelled() {
                        break;
                    }
                    if independent(plan, ordered, i, leaf) {
                        // SAFETY: an independent leaf shares no bytes with any other copy.
                        unsafe { copy_leaf(leaf, plan.runs[i], None, self.streaming) };
                        progress.add(leaf.nbytes());
                    }
                }
                fence();
            }
        }
    }

    /// The leaves that share bytes with others, and those `external` copies, in walk order.
    /// `copied(bytes)` follows each, and its error stops the copy there.
    fn copy_ordered_leaves<E>(
        &self,
        plan: &Plan,
        ordered: &[bool],
        external: &mut impl FnMut(usize) -> Result<(), E>,
        mut copied: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<(), E> {
        for (i, leaf) in plan.leaves().iter().enumerate() {
            if plan.noop[i] {
                continue;
            }
            if leaf.op == Op::External {
                external(i)?;
            } else if ordered[i] {
                copy_ordered(leaf, plan.runs[i]);
            } else {
                continue;
            }
            copied(leaf.nbytes())?;
        }
        Ok(())
    }
}

/// Whether leaf `i` shares no bytes with any other copy, and is copied here (not by
/// `external`, nor skipped).
fn independent(plan: &Plan, ordered: &[bool], i: usize, leaf: &LeafCopy) -> bool {
    !ordered[i] && leaf.op != Op::External && !plan.noop[i]
}

/// Splits the independent leaves into tasks of about [`TASK_BYTES`].
fn parallel_tasks(plan: &Plan, independent: &dyn Fn(usize, &LeafCopy) -> bool) -> Vec<Task> {
    let mut tasks = Vec::new();
    let (mut batch, mut batch_bytes): (Task, usize) = (Vec::new(), 0);
    for (i, leaf) in plan.leaves().iter().enumerate() {
        if !independent(i, leaf) {
            continue;
        }
        let len = leaf.dst.len();
        let bytes = leaf.nbytes();
        if bytes >= TASK_BYTES {
            let step = (TASK_BYTES / leaf.dst.itemsize).max(1);
            tasks.extend(
                (0..len)
                    .step_by(step)
                    .map(|k| vec![(i, k..(k + step).min(len))]),
            );
        } else {
            batch.push((i, 0..len));
            batch_bytes += bytes;
            if batch_bytes >= TASK_BYTES {
                tasks.push(std::mem::take(&mut batch));
                batch_bytes = 0;
            }
        }
    }
    if !batch.is_empty() {
        tasks.push(batch);
    }
    tasks
}

/// Runs one task; returns the bytes it wrote.
fn run_task(plan: &Plan, task: &Task, streaming: bool) -> usize {
    let mut bytes = 0;
    for (i, range) in task {
        let leaf = &plan.leaves()[*i];
        // SAFETY: independent leaves share no bytes with any other copy, and tasks of one
        // leaf cover disjoint element ranges of a destination without self-overlap.
        unsafe { copy_leaf(leaf, plan.runs[*i], Some(range.clone()), streaming) };
        bytes += range.len() * leaf.dst.itemsize;
    }
    fence(); // before rayon hands the finished task back
    bytes
}

/// Copies elements `range` of a leaf (all of them for `None`) on the calling thread;
/// `run` is the leaf's [`LeafCopy::run`].
///
/// # Safety
/// No other thread may touch those elements' bytes, and the leaf's source must not
/// overlap its destination.
unsafe fn copy_leaf(
    leaf: &LeafCopy,
    run: Option<Run>,
    range: Option<Range<usize>>,
    streaming: bool,
) {
    let whole = range
        .as_ref()
        .is_none_or(|r| r.start == 0 && r.end == leaf.dst.len());
    if let (true, Some(run)) = (whole, run) {
        // The common case: one plain copy, without working out a layout.
        let (d, s) = (run.dst.get() as *mut u8, run.src as *const u8);
        // SAFETY: per this function's contract; both runs are `run.len` contiguous bytes.
        unsafe {
            if streaming {
                copy_streaming(d, s, run.len)
            } else {
                std::ptr::copy_nonoverlapping(s, d, run.len)
            }
        }
        return;
    }
    let src_strides = leaf.src.as_ref().map_or(&leaf.dst.strides, |s| &s.strides);
    let layout = PairLayout::new(&leaf.dst.shape, &leaf.dst.strides, src_strides);
    let range = range.unwrap_or(0..layout.len());
    // SAFETY: per this function's contract.
    unsafe {
        copy_range(
            leaf.op,
            &leaf.dst,
            leaf.src.as_ref(),
            &layout,
            range,
            streaming,
        )
    };
}

/// Copies a run as `memmove` does: a source that overlaps its own destination is read
/// before it is written over, which is the result of copying the whole source first.
///
/// # Safety
/// Both runs must be valid for `run.len` bytes, and no other thread may touch them.
#[inline(always)]
unsafe fn move_run(run: Run) {
    // SAFETY: per this function's contract.
    unsafe { std::ptr::copy(run.src as *const u8, run.dst.get() as *mut u8, run.len) }
}

/// Copies a leaf on the calling thread, in walk order with every leaf it may share bytes
/// with; `run` is its [`LeafCopy::run`]. A source that overlaps its own destination is
/// read in full first: the result is that of copying the whole source before writing.
fn copy_ordered(leaf: &LeafCopy, run: Option<Run>) {
    // One contiguous run needs none of the byte spans below, in which a load of many
    // small leaves would spend its time.
    if let Some(run) = run {
        // SAFETY: the plan holds both arrays alive; ordered leaves run on this thread.
        return unsafe { move_run(run) };
    }
    let src = match &leaf.src {
        Some(src) if reads_own_destination(leaf) => src,
        // SAFETY: ordered leaves run one at a time on this thread, and this one's source
        // does not overlap its destination.
        _ => return unsafe { copy_leaf(leaf, None, None, false) },
    };
    let (len, itemsize) = (leaf.dst.len(), leaf.dst.itemsize);
    let mut staged = vec![0u8; len * itemsize];
    // SAFETY: the plan holds the source alive; `staged` is sized for every element.
    unsafe { gather(leaf.op, src, &leaf.dst.shape, itemsize, 0..len, &mut staged) };
    let staged_view = ArrayView::contiguous(staged.as_ptr() as usize, &leaf.dst.shape, itemsize);
    let from_staged = LeafCopy {
        dst: leaf.dst.clone(),
        src: Some(staged_view),
        op: Op::Bytes,
    };
    // SAFETY: `staged` is a private buffer, so it cannot overlap the destination.
    unsafe { copy_leaf(&from_staged, from_staged.run(), None, false) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::TieEntry;

    fn f32_view(ptr: *const f32, offset: usize, len: usize) -> ArrayView {
        ArrayView::contiguous(ptr as usize + 4 * offset, &[len], 4)
    }

    fn run(plan: &Plan, threads: usize) {
        let exec = Executor::new(plan, threads).unwrap();
        exec.execute(plan, &exec.ordered(plan), |_| Err::<(), ()>(()))
            .unwrap();
    }

    /// `a[0..4] <- src`, then `a[2..6] <- a[0..4]`, for a six-element `a`.
    fn overlapping(a: *mut f32, src: &[f32; 4]) -> Vec<(ArrayView, ArrayView)> {
        vec![
            (f32_view(a, 0, 4), f32_view(src.as_ptr(), 0, 4)),
            (f32_view(a, 2, 4), f32_view(a, 0, 4)),
        ]
    }

    /// A plan of plain copies, each `(dst, src)` a new parameter.
    fn byte_copies(pairs: &[(ArrayView, ArrayView)]) -> Plan {
        let mut plan = Plan::new();
        for (i, (dst, src)) in pairs.iter().enumerate() {
            let leaf = LeafCopy {
                dst: dst.clone(),
                src: Some(src.clone()),
                op: Op::Bytes,
            };
            assert!(matches!(plan.add(leaf, 1), TieEntry::New(n) if n == i));
        }
        plan
    }

    #[test]
    fn overlapping_copies_give_the_walk_order_result() {
        // dst leaves a[0..4] then a[2..6]; the second source reads a[0..4] after the first
        // copy wrote it: copying leaf by leaf gives a = [10, 11, 10, 11, 12, 13].
        let mut a = [0f32; 6];
        let src = [10f32, 11., 12., 13.];
        let plan = byte_copies(&overlapping(a.as_mut_ptr(), &src));
        run(&plan, 1);
        assert_eq!(a, [10., 11., 10., 11., 12., 13.]);
    }

    #[test]
    fn a_small_load_copied_in_walk_order_needs_no_overlap_analysis() {
        // As above, plus a leaf whose source overlaps its own destination (a[1..5] from
        // a[0..4]), which must read its source in full before writing.
        let mut a = [0f32; 6];
        let src = [10f32, 11., 12., 13.];
        let p = a.as_mut_ptr();
        let mut pairs = overlapping(p, &src);
        pairs.push((f32_view(p, 1, 4), f32_view(p, 0, 4)));
        let plan = byte_copies(&pairs);
        let exec = Executor::new(&plan, 1).unwrap();
        assert!(exec.runs_in_walk_order());
        exec.copy_in_walk_order(&plan);
        assert_eq!(a, [10., 10., 11., 10., 11., 13.]);
    }

    /// `dst <- src` as leaves of `leaf` elements each.
    fn leaves_of(dst: &mut [f32], src: &[f32], leaf: usize) -> Plan {
        let pairs: Vec<_> = (0..dst.len() / leaf)
            .map(|i| {
                let dst = f32_view(dst.as_mut_ptr(), i * leaf, leaf);
                (dst, f32_view(src.as_ptr(), i * leaf, leaf))
            })
            .collect();
        byte_copies(&pairs)
    }

    #[test]
    fn a_load_of_many_small_leaves_is_copied_in_walk_order_whatever_its_size() {
        // 8 MiB in leaves of 512 bytes: above the size that wakes the pool, but planning
        // a parallel copy of such leaves costs more than the threads save.
        let n = 2 << 20;
        let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut dst = vec![0f32; n];
        let plan = leaves_of(&mut dst, &src, 128);
        let exec = Executor::new(&plan, 4).unwrap();
        assert!(exec.runs_in_walk_order());
        exec.copy_in_walk_order(&plan);
        assert_eq!(dst, src);
        // The same bytes in leaves of 4 KiB are copied in parallel.
        let plan = leaves_of(&mut dst, &src, 1024);
        assert!(!Executor::new(&plan, 4).unwrap().runs_in_walk_order());
        assert!(Executor::new(&plan, 1).unwrap().runs_in_walk_order());
    }

    #[test]
    fn a_watched_load_of_small_leaves_still_runs_on_the_watched_path() {
        // 64 MiB in leaves of 512 bytes: a copy that long must stop on Ctrl-C.
        let n = 16 << 20;
        let src = vec![1f32; n];
        let mut dst = vec![0f32; n];
        let plan = leaves_of(&mut dst, &src, 128);
        assert!(!Executor::new(&plan, 2).unwrap().runs_in_walk_order());
        run(&plan, 2);
        assert_eq!(dst, src);
    }

    #[test]
    fn a_compact_leaf_over_its_own_source_is_copied_as_if_read_first() {
        // loadmodel(a[1:], a[:-1]) through the plan's runs alone: a = [1, 1, 2, 3].
        let mut a = [1f32, 2., 3., 4.];
        let p = a.as_mut_ptr() as usize;
        let mut plan = Plan::new();
        let run = Run::new(p + 4, p, 12).unwrap();
        let views = |_: usize| unreachable!();
        plan.add_compact(
            run,
            1,
            &views,
            || f32_view(p as *const f32, 1, 3),
            || unreachable!(),
        );
        let exec = Executor::new(&plan, 1).unwrap();
        assert!(exec.runs_in_walk_order() && !plan.written_out());
        exec.copy_in_walk_order(&plan);
        assert_eq!(a, [1., 1., 2., 3.]);
    }

    #[test]
    fn a_large_parallel_load_matches_a_serial_one() {
        let n = 3 << 20; // 12 MiB of f32, split across tasks
        let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut dst = vec![0f32; n];
        let mut plan = Plan::new();
        plan.add(
            LeafCopy {
                dst: f32_view(dst.as_mut_ptr(), 0, n),
                src: Some(f32_view(src.as_ptr(), 0, n)),
                op: Op::Bytes,
            },
            1,
        );
        run(&plan, 4);
        assert_eq!(dst, src);
    }

    #[test]
    fn external_leaves_are_handed_back_in_walk_order() {
        let mut buf = [0f32; 4];
        let mut plan = Plan::new();
        for i in 0..3 {
            let leaf = LeafCopy {
                dst: f32_view(buf.as_mut_ptr(), i, 1),
                src: None,
                op: if i == 1 { Op::Zeros } else { Op::External },
            };
            plan.add(leaf, 1);
        }
        let mut seen = Vec::new();
        let exec = Executor::new(&plan, 1).unwrap();
        exec.execute(&plan, &exec.ordered(&plan), |i| {
            seen.push(i);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(seen, vec![0, 2]);
    }

    fn big_plan(dst: &mut [f32], src: &[f32]) -> Plan {
        let mut plan = Plan::new();
        plan.add(
            LeafCopy {
                dst: f32_view(dst.as_mut_ptr(), 0, dst.len()),
                src: Some(f32_view(src.as_ptr(), 0, src.len())),
                op: Op::Bytes,
            },
            1,
        );
        plan
    }

    #[test]
    fn a_watched_copy_reports_every_byte_by_its_end() {
        let n = 3 << 20;
        let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut dst = vec![0f32; n];
        let plan = big_plan(&mut dst, &src);
        let exec = Executor::new(&plan, 2).unwrap();
        let mut seen = Vec::new();
        let watch = |done, total| {
            seen.push((done, total));
            Ok::<(), ()>(())
        };
        exec.execute_watched(&plan, &exec.ordered(&plan), |_| Ok(()), Some(watch))
            .unwrap();
        assert_eq!(seen.last(), Some(&(4 * n, 4 * n)));
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(dst, src);
    }

    #[test]
    fn a_watch_error_stops_the_copy_and_is_returned() {
        let n = 64 << 20; // 256 MiB: many tasks, and more than one tick of copying
        let src = vec![1f32; n];
        let mut dst = vec![0f32; n];
        let plan = big_plan(&mut dst, &src);
        for threads in [1, 2] {
            let mut exec = Executor::new(&plan, threads).unwrap();
            exec.tick = Duration::ZERO; // the first watch comes long before the copy ends
            let stop = |_, _| Err::<(), &str>("stop");
            let result = exec.execute_watched(&plan, &exec.ordered(&plan), |_| Ok(()), Some(stop));
            assert_eq!(result, Err("stop"));
        }
        assert_eq!(dst[n - 1], 0.0, "the copy went on after it was stopped");
    }

    #[test]
    fn a_watch_error_stops_the_copy_between_leaves_copied_in_walk_order() {
        // Four overlapping destinations, each a[k..k+n] <- src: ordered leaves, which a
        // watch must be able to stop between, as it stops parallel tasks.
        let n = 1 << 20;
        let src = vec![1f32; n];
        let mut a = vec![0f32; n + 3];
        let p = a.as_mut_ptr();
        let pairs: Vec<_> = (0..4)
            .map(|k| (f32_view(p, k, n), f32_view(src.as_ptr(), 0, n)))
            .collect();
        let plan = byte_copies(&pairs);
        let mut exec = Executor::new(&plan, 2).unwrap();
        exec.tick = Duration::ZERO;
        let stop_once_copying = |done, _| match done {
            0 => Ok(()),
            _ => Err("stop"),
        };
        let ordered = exec.ordered(&plan);
        assert!(ordered.iter().all(|&o| o));
        let result = exec.execute_watched(&plan, &ordered, |_| Ok(()), Some(stop_once_copying));
        assert_eq!(result, Err("stop"));
        // Leaf k ends at a[k + n - 1]: leaf 0 was copied, then the copy stopped.
        assert_eq!(
            (a[n - 1], a[n]),
            (1.0, 0.0),
            "leaf 1 was copied after the stop"
        );
    }

    #[test]
    fn a_source_shifted_over_its_destination_is_read_before_written() {
        // loadmodel(a[1:], a[:-1]) must behave like numpy.copyto: a = [1, 1, 2, 3].
        let mut a = [1f32, 2., 3., 4.];
        let p = a.as_mut_ptr();
        let mut plan = Plan::new();
        plan.add(
            LeafCopy {
                dst: f32_view(p, 1, 3),
                src: Some(f32_view(p, 0, 3)),
                op: Op::Bytes,
            },
            1,
        );
        run(&plan, 2);
        assert_eq!(a, [1., 1., 2., 3.]);
    }
}
