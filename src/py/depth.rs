//! How deep a walk may recurse: a fixed bound, and the stack the current thread has left.
//!
//! The walks recurse once per level of nesting. Python threads may have small stacks, so
//! the remaining stack is checked too: a too-deep tree is refused with an error instead
//! of overflowing the stack.

use std::cell::Cell;

/// Deepest nesting walked on any thread.
pub const MAX_DEPTH: usize = 10_000;

/// Stack kept free below the deepest level, for the Python calls a level may make (a
/// user's `__getitem__` or property may nest a hundred calls and more).
const STACK_RESERVE: usize = 256 * 1024;

thread_local! {
    /// The stack walks on this thread keep free: [`STACK_RESERVE`], or half of what the
    /// thread had left when it first walked, if that is less, so that a thread with a small
    /// stack (128 KiB by default on some platforms) still walks shallow trees.
    static RESERVE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Why a walk may not go one level deeper than `depth`, if it may not.
pub fn too_deep(depth: usize) -> Option<String> {
    if depth > MAX_DEPTH {
        return Some(format!("the tree is nested deeper than {MAX_DEPTH} levels"));
    }
    let left = stacker::remaining_stack()?;
    let reserve = RESERVE.get().unwrap_or_else(|| {
        let reserve = STACK_RESERVE.min(left / 2);
        RESERVE.set(Some(reserve));
        reserve
    });
    (left < reserve)
        .then(|| format!("the tree is nested too deep ({depth} levels) for this thread's stack"))
}
