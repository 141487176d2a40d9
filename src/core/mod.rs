//! The pure-Rust engine: plans, ties, overlap analysis and the copy kernels.
//!
//! Nothing here knows about Python. The bindings in `crate::py` describe every array as an
//! [`ArrayView`] (an address, a shape, strides in bytes) and every leaf as a [`LeafCopy`];
//! this module checks the plan and copies the bytes.

pub mod checkpoint;
pub mod convert;
#[cfg(target_arch = "x86_64")]
mod convert_x86;
pub mod dtype;
pub mod execute;
mod fork;
pub mod half_bits;
pub mod inflight;
pub mod kernels;
pub mod layout;
pub mod overlap;
pub mod plan;
pub mod problem;
mod read_ahead;
pub mod spare;
pub mod stream;
pub mod threads;
pub mod ties;

pub use dtype::Scalar;
pub use execute::Executor;
pub use kernels::Op;
pub use layout::ArrayView;
pub use plan::{LeafCopy, Plan, Run, TieEntry};
pub use problem::{merge_in_walk_order, LoadFailure, Problem, ProblemKind};
