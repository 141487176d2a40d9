//! How deep a walk may recurse: a fixed bound, and the stack the current thread has left.
//!
//! The walks recurse once per level of nesting. Python threads may have small stacks, so
//! the remaining stack is checked too: a too-deep tree is refused with an error instead
//! of overflowing the stack.

/// Deepest nesting walked on any thread.
pub const MAX_DEPTH: usize = 10_000;

/// Stack kept free below the deepest level, for the Python calls a level may make.
const STACK_RESERVE: usize = 64 * 1024;

/// Why a walk may not go one level deeper than `depth`, if it may not.
pub fn too_deep(depth: usize) -> Option<String> {
    if depth > MAX_DEPTH {
        return Some(format!("the tree is nested deeper than {MAX_DEPTH} levels"));
    }
    match stacker::remaining_stack() {
        Some(left) if left < STACK_RESERVE => Some(format!(
            "the tree is nested too deep ({depth} levels) for this thread's stack"
        )),
        _ => None,
    }
}
