//! fastload: load model parameters into models, fast and safely.
//!
//! `core` is the engine and builds without Python; `py` (feature `python`) is the
//! extension module `fastload._fastload`.

pub mod core;

#[cfg(feature = "python")]
mod py;

#[cfg(feature = "python")]
use pyo3::prelude::*;

#[cfg(feature = "python")]
#[pymodule]
fn _fastload(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py::register(m)
}
