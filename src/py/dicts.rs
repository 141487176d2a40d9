//! Two dicts whose keys come in the same order, matched position by position.
//!
//! A model and the state of another one built the same way list their keys in the same
//! order. Walking both dicts side by side reads each entry once, borrowed, where matching
//! by key copies both dicts' children and looks every key up in the source. Dicts of
//! leaves are read in one pass: their keys are compared as their children are planned.

use super::kinds::keyed_dict;
use super::path::Segment;
use super::walk::Walker;
use crate::core::ProblemKind;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

impl<'py> Walker<'py> {
    /// Visits the children of two dicts of the same size. While their keys pair up in
    /// order, entries are read side by side, borrowed, in place; the first pair that
    /// differs sends the rest to matching by key ([`Walker::match_keys`]).
    ///
    /// Code of the user's that a visit runs may change either dict meanwhile: that is a
    /// problem, not a crash. So before the first child that is not a plain leaf (whose
    /// planning runs no Python code), the keys still to come are checked to pair up; a
    /// difference met after that is a change.
    #[inline(never)]
    pub(super) fn match_dicts(
        &mut self,
        dst: &Bound<'py, PyDict>,
        src: &Bound<'py, PyDict>,
    ) -> PyResult<()> {
        let (mut d, mut s) = (Entries::new(dst), Entries::new(src));
        let (mut visited, mut rest_checked) = (0, false);
        loop {
            match (d.next(), s.next()) {
                (Some((dk, dv)), Some((sk, sv))) if same_key(&dk, &sk) => {
                    let leaf = self.same_layout_arrays(&dv, &sv);
                    if leaf.is_none() && !rest_checked {
                        if !keys_pair_up(d.clone(), s.clone()) {
                            return self.match_by_key(dst, src, visited);
                        }
                        rest_checked = true;
                    }
                    self.child_of_layout(Segment::Key(dk.to_owned()), leaf, &dv, &sv)?;
                    visited += 1;
                }
                (None, None) => return Ok(()),
                _ if rest_checked => {
                    self.problem(
                        ProblemKind::Structure,
                        "a dict changed while the trees were walked",
                    );
                    return Ok(());
                }
                // No Python code has run since the dicts were first read.
                _ => return self.match_by_key(dst, src, visited),
            }
        }
    }

    /// The children of two dicts matched by key, the first `visited` of `dst`'s (paired
    /// in order with `src`'s) already visited.
    fn match_by_key(
        &mut self,
        dst: &Bound<'py, PyDict>,
        src: &Bound<'py, PyDict>,
        visited: usize,
    ) -> PyResult<()> {
        self.match_keys(keyed_dict(dst, false), keyed_dict(src, true), visited)
    }
}

/// Whether the entries still to come of two dicts have keys that pair up in order.
fn keys_pair_up(mut d: Entries<'_, '_>, mut s: Entries<'_, '_>) -> bool {
    loop {
        match (d.next(), s.next()) {
            (Some((dk, _)), Some((sk, _))) if same_key(&dk, &sk) => {}
            (None, None) => return true,
            _ => return false,
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
#[derive(Clone)]
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
