//! The extension module `fastload._fastload`: Python objects in, a checked plan out.

mod array;
mod casting;
mod depth;
mod dicts;
mod dlpack;
mod errors;
mod files;
mod flat;
mod flat_like;
mod indexed;
mod kinds;
mod leaf;
mod load;
mod path;
mod room;
mod state;
mod tensors;
mod torch;
mod walk;

use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load::loadmodel, m)?)?;
    m.add_function(wrap_pyfunction!(state::state, m)?)?;
    m.add_function(wrap_pyfunction!(kinds::children, m)?)?;
    m.add_function(wrap_pyfunction!(load::default_threads, m)?)?;
    m.add_function(wrap_pyfunction!(load::thread_count, m)?)?;
    m.add_function(wrap_pyfunction!(walk::keys_text, m)?)?;
    m.add_function(wrap_pyfunction!(flat::flatten, m)?)?;
    m.add_function(wrap_pyfunction!(flat::unflatten, m)?)?;
    m.add_function(wrap_pyfunction!(flat::nest_flat, m)?)?;
    m.add_function(wrap_pyfunction!(tensors::tensor_view, m)?)?;
    m.add_function(wrap_pyfunction!(files::read_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(files::write_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(files::write_raw, m)?)?;
    m.add_function(wrap_pyfunction!(files::rename_all, m)?)?;
    m.add_class::<files::MappedFile>()?;
    m.add("MAX_DEPTH", depth::MAX_DEPTH)?;
    Ok(())
}

/// A function of one of fastload's Python modules.
fn python_function<'py>(py: Python<'py>, module: &str, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import(module)?.getattr(name)
}
