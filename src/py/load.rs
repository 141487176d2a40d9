//! `loadmodel`: walk and plan (GIL held), check ties, then copy with the GIL released.

use super::array::{memory_owner, view_of};
use super::errors::load_error;
use super::leaf::{stage_cast, write_out_compact};
use super::python_function;
use super::torch::ties_across_torch;
use super::walk::{Skipped, Walked, Walker};
use crate::core::{
    execute::WATCHED_MIN_BYTES, inflight, merge_in_walk_order, threads, Executor, LoadFailure,
    Plan, Problem, ProblemKind,
};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use rustc_hash::FxHashMap;
use std::ops::Range;

/// Loads `src` into `dst` in place; the Python wrapper validates the arguments. Returns
/// the keys skipped under `strict=False` (see [`Skipped`]).
///
/// `threads == 0` means the default (`FASTLOAD_NUM_THREADS`, else every core).
/// `reserve = false` is for the loads a load runs itself (staging leaves torch copies),
/// into memory that the outer load has reserved or that is private to it.
#[pyfunction]
#[pyo3(signature = (dst, src, filter, strict, casting, threads, progress, reserve = true))]
#[allow(clippy::too_many_arguments)]
pub fn loadmodel<'py>(
    py: Python<'py>,
    dst: &Bound<'py, PyAny>,
    src: &Bound<'py, PyAny>,
    filter: Option<Bound<'py, PyAny>>,
    strict: bool,
    casting: &str,
    threads: usize,
    progress: Option<Bound<'py, PyAny>>,
    reserve: bool,
) -> PyResult<Vec<Skipped<'py>>> {
    let threads = if threads == 0 {
        threads::default_threads()
    } else {
        threads
    };
    let mut walked = Walker::new(py, filter, strict, casting)?.walk(dst, src)?;
    let mut problems = std::mem::take(&mut walked.problems);
    let torch_copies = walked.torch_copies.clone();
    // Problems of the leaves torch copies found after the walk, at their walk positions.
    let mut torch_problems = Vec::new();
    let mut torch_span = None;
    if let Some(copies) = &torch_copies {
        let tied: Vec<(usize, String, String)> = copies.call_method0("check_ties")?.extract()?;
        torch_problems.extend(tied.into_iter().map(|(position, path, message)| {
            (position, Problem::new(ProblemKind::Leaf, path, message))
        }));
        torch_problems.extend(ties_across_torch(&walked.leaf_arrays, copies)?);
        torch_span = copies.call_method0("written_span")?.extract()?;
        // Those checks ran torch's Python code on the user's tensors, which may be their
        // own subclasses.
        walked.ran_user_code = true;
    }
    // Asked after every check that runs Python code, and before the plan's compact
    // leaves are written out from the arrays as they are now: the copy must not write
    // into memory an array gave back meanwhile.
    let changed = walked.changed()?;
    let arrays_changed = !changed.is_empty();
    problems.extend(changed);
    let executor = Executor::new(&walked.plan, threads).map_err(PyRuntimeError::new_err)?;
    // Small loads in walk order copy from the plan's runs alone; everything else reads
    // every leaf's copy.
    let in_walk_order =
        walked.external.is_empty() && progress.is_none() && executor.runs_in_walk_order();
    if !in_walk_order || walked.plan.has_read_ahead() || walked.met_torch {
        write_out_compact(&mut walked.plan, &walked.leaf_arrays);
    }
    let Walked {
        mut plan,
        skipped,
        external,
        leaf_arrays,
        tie_arrays,
        mut keep_alive,
        met_torch,
        ..
    } = walked;
    // Tie checks read sources through the plan's views, which changed arrays may no
    // longer match; the load is refused anyway.
    let mut tie_problems = match arrays_changed {
        true => Vec::new(),
        false => py.detach(|| executor.check_ties(&plan)),
    };
    tie_problems.extend(torch_problems);
    if !problems.is_empty() || !tie_problems.is_empty() {
        let problems = merge_in_walk_order(problems, tie_problems);
        return Err(load_error(py, &LoadFailure { problems }));
    }
    // Another load into the same memory finishes first (see `core::inflight`); waiting
    // releases the GIL, which that load may need.
    // Held until the leaves torch copies are written too: two loads into one model run
    // one after the other, never mixed.
    let _reservation = if reserve {
        let span = with_torch_span(plan.written_span(), torch_span);
        let reservation = py.detach(|| inflight::reserve(span));
        Some(reservation.map_err(PyRuntimeError::new_err)?)
    } else {
        None
    };
    let copied = if in_walk_order {
        // Small leaves, no casts left to NumPy: copied one by one in walk order.
        py.detach(|| executor.copy_in_walk_order(&plan));
        Ok(())
    } else {
        copy_in_parallel(
            py,
            &executor,
            &mut plan,
            external,
            &mut keep_alive,
            progress,
        )
    };
    // A copy stopped part way (Ctrl-C, a failing progress callable, a failing torch copy)
    // still counts what it wrote below; torch's copies run only if the others finished.
    let copied = copied.and_then(|()| match torch_copies {
        Some(copies) => copies.call_method1("run", (threads,)).map(drop),
        None => Ok(()),
    });
    // Autograd counts in-place writes to tensors; the copy above wrote through views.
    let bumped = if met_torch {
        let written: Vec<_> = plan
            .leaves()
            .iter()
            .zip(&leaf_arrays)
            .filter(|(leaf, _)| leaf.dst.owner.is_none())
            .filter_map(|(_, (dst, _))| memory_owner(dst))
            .collect();
        python_function(py, "fastload._torch", "bump_versions")
            .and_then(|bump| bump.call1((written,)).map(drop))
    } else {
        Ok(())
    };
    // The arrays the plan pointed into may be released only now.
    drop((leaf_arrays, tie_arrays, keep_alive));
    // A copy's own error (Ctrl-C, progress, torch) is the one the caller must see.
    copied?;
    bumped?;
    Ok(skipped)
}

/// Copies a checked plan on the executor's threads: leaves that share no bytes with
/// others in any order, the others in walk order, and casts only NumPy does with the GIL.
fn copy_in_parallel<'py>(
    py: Python<'py>,
    executor: &Executor,
    plan: &mut Plan,
    mut external: FxHashMap<usize, (Py<PyAny>, Py<PyAny>)>,
    keep_alive: &mut Vec<Bound<'py, PyAny>>,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<()> {
    // Casts only NumPy does are done now, before any byte is written, into arrays that
    // the copy then reads. Only leaves that must run in walk order (their memory is shared
    // with other leaves) are cast during the copy itself, with the GIL.
    let ordered = executor.ordered(plan);
    let mut early: Vec<usize> = external.keys().copied().filter(|&i| !ordered[i]).collect();
    early.sort_unstable();
    for leaf in early {
        let Some((dst, src)) = external.remove(&leaf) else {
            continue;
        };
        // A tie's first value was staged for its checks already: copy from that.
        if let Some(view) = plan.staged_tie_value(leaf).cloned() {
            plan.restage(leaf, view);
            continue;
        }
        let staged = stage_cast(src.bind(py), dst.bind(py))?;
        plan.restage(leaf, view_of(&staged));
        keep_alive.push(staged.into_any());
    }
    let copy_cast = python_function(py, "fastload._cast", "copy_cast")?.unbind();
    let cast = |leaf| {
        Python::attach(|py| match external.get(&leaf) {
            Some((dst, src)) => copy_cast.bind(py).call1((dst, src)).map(drop),
            None => Err(PyRuntimeError::new_err(
                "internal error: a cast leaf has no arrays",
            )),
        })
    };
    // A long copy is watched, so that Ctrl-C stops it and progress can be reported.
    let watch = (progress.is_some() || plan.nbytes() >= WATCHED_MIN_BYTES).then(|| {
        let progress = progress.map(Bound::unbind);
        move |done: usize, total: usize| {
            Python::attach(|py| {
                py.check_signals()?;
                match &progress {
                    Some(report) => report.bind(py).call1((done, total)).map(drop),
                    None => Ok(()),
                }
            })
        }
    });
    py.detach(|| executor.execute_watched(plan, &ordered, cast, watch))
}

/// `span`, widened to `torch_span`, the memory the leaves torch copies write, if any.
fn with_torch_span(
    span: Option<Range<usize>>,
    torch_span: Option<(usize, usize)>,
) -> Option<Range<usize>> {
    match (span, torch_span) {
        (Some(span), Some((start, end))) => Some(span.start.min(start)..span.end.max(end)),
        (None, Some((start, end))) => Some(start..end),
        (span, None) => span,
    }
}

/// The number of threads `threads=None` uses.
#[pyfunction]
pub fn default_threads() -> usize {
    threads::default_threads()
}

/// The thread count a `FASTLOAD_NUM_THREADS` value sets, or `None` where it is ignored.
#[pyfunction]
pub fn thread_count(value: &str) -> Option<usize> {
    threads::thread_count(value)
}
