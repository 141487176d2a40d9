//! Two dicts whose keys come in the same order, matched position by position.
//!
//! A model and the state of another one built the same way list their keys in the same
//! order. Walking both dicts side by side reads each entry once, borrowed, where matching
//! by key copies both dicts' children and looks every key up in the source.

use super::path::Segment;
use super::walk::Walker;
use crate::core::ProblemKind;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

impl<'py> Walker<'py> {
    /// Whether `dst` and `src` have equal keys in the same order, compared without running
    /// Python code: the same object, or equal exact `str`s.
    pub(super) fn dict_keys_in_order(dst: &Bound<'py, PyDict>, src: &Bound<'py, PyDict>) -> bool {
        if dst.len() != src.len() {
            return false;
        }
        let (mut d, mut s) = (Entries::new(dst), Entries::new(src));
        loop {
            match (d.next(), s.next()) {
                (Some((dk, _)), Some((sk, _))) if same_key(&dk, &sk) => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// Visits the children of two dicts whose keys are in the same order (see
    /// [`Walker::dict_keys_in_order`]). Code of the user's that a visit runs may change
    /// either dict meanwhile: that is a problem, not a crash.
    pub(super) fn match_dicts_in_order(
        &mut self,
        dst: &Bound<'py, PyDict>,
        src: &Bound<'py, PyDict>,
    ) -> PyResult<()> {
        let (mut d, mut s) = (Entries::new(dst), Entries::new(src));
        loop {
            match (d.next(), s.next()) {
                (Some((dk, dv)), Some((sk, sv))) if same_key(&dk, &sk) => {
                    self.child(Segment::Key(dk.to_owned()), &dv, &sv)?;
                }
                (None, None) => return Ok(()),
                _ => {
                    self.problem(
                        ProblemKind::Structure,
                        "a dict changed while the trees were walked",
                    );
                    return Ok(());
                }
            }
        }
    }
}

/// Two keys that are equal, found so without running Python code.
fn same_key(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> bool {
    if a.is(b) {
        return true;
    }
    if !a.is_exact_instance_of::<PyString>() || !b.is_exact_instance_of::<PyString>() {
        return false;
    }
    // SAFETY: two live exact `str`s, for which the comparison cannot fail.
    unsafe { ffi::PyUnicode_Compare(a.as_ptr(), b.as_ptr()) == 0 }
}

/// A dict's `(key, value)` entries in order, borrowed from it.
pub(super) struct Entries<'a, 'py> {
    dict: &'a Bound<'py, PyDict>,
    pos: ffi::Py_ssize_t,
}

impl<'a, 'py> Entries<'a, 'py> {
    pub(super) fn new(dict: &'a Bound<'py, PyDict>) -> Self {
        Entries { dict, pos: 0 }
    }
}

impl<'a, 'py> Iterator for Entries<'a, 'py> {
    type Item = (Borrowed<'a, 'py, PyAny>, Borrowed<'a, 'py, PyAny>);

    /// The next entry. The references are borrowed from the dict: they stay valid until
    /// Python code runs, which may change it (reading on after a change is safe, if not
    /// meaningful).
    fn next(&mut self) -> Option<Self::Item> {
        let (mut key, mut value) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: `dict` is a live dict; `PyDict_Next` checks `pos` against its current
        // size and hands out borrowed references.
        let found =
            unsafe { ffi::PyDict_Next(self.dict.as_ptr(), &mut self.pos, &mut key, &mut value) };
        if found == 0 {
            return None;
        }
        let py = self.dict.py();
        // SAFETY: both non-null, and alive while the dict holds them.
        Some(unsafe { (Borrowed::from_ptr(py, key), Borrowed::from_ptr(py, value)) })
    }
}
