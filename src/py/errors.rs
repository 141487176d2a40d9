//! Core problems as Python exceptions (`fastload.errors`).

use crate::core::{LoadFailure, ProblemKind};
use pyo3::prelude::*;
use pyo3::types::PyList;

/// The exception for a refused load: the class of the first problem, every problem listed.
pub fn load_error(py: Python<'_>, failure: &LoadFailure) -> PyErr {
    match build(py, failure) {
        Ok(err) => err,
        Err(err) => err,
    }
}

fn build(py: Python<'_>, failure: &LoadFailure) -> PyResult<PyErr> {
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
    let exc = class.call1((failure.message(), problems))?;
    Ok(PyErr::from_value(exc))
}
