//! Core problems as Python exceptions (`fastload.errors`).

use crate::core::{LoadFailure, ProblemKind};
use pyo3::prelude::*;
use pyo3::types::PyList;

/// The exception for a refused load: the class of the first problem, every problem listed.
pub fn load_error(py: Python<'_>, failure: &LoadFailure) -> PyErr {
    build(py, failure, failure.message()).unwrap_or_else(|err| err)
}

/// [`load_error`] for a state that could not be taken.
pub fn state_error(py: Python<'_>, failure: &LoadFailure) -> PyErr {
    let message = failure.message_after("no state was taken");
    build(py, failure, message).unwrap_or_else(|err| err)
}

fn build(py: Python<'_>, failure: &LoadFailure, message: String) -> PyResult<PyErr> {
    let errors = py.import("fastload.errors")?;
    let class = errors.getattr(match failure.kind() {
        ProblemKind::Structure => "ArgumentError",
        ProblemKind::Shape => "DimensionMismatch",
        ProblemKind::Leaf => "LoadError",
    })?;
    let problems = PyList::empty(py);
    for p in &failure.problems {
        problems.append((p.path.as_str(), p.message.as_str()))?;
    }
    let exc = class.call1((message, problems))?;
    Ok(PyErr::from_value(exc))
}
