//! The common flat source: a `state_dict`, or a file's arrays, that names every array of
//! the destination under its path and holds nothing else. It is nested in the
//! destination's shape in one pass of lookups by path, without parsing its keys; any other
//! source takes the general nesting (`flat::nest_flat`), which also explains what is wrong.

use super::depth::too_deep;
use super::flat::Arrays;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

/// `flat` nested in the shape of `dst_state`, or `None` where the general nesting must
/// decide: `flat` is not a dict or an `OrderedDict`, lacks an array of the destination
/// (a tie stored once, a missing key), holds a key that no leaf of the destination has,
/// or the destination has a key that is not a string or holds a dot.
///
/// A part of the destination that holds no arrays and that `flat` does not name is taken
/// from the destination, as the general nesting does.
pub(super) fn nest_like<'py>(
    dst_state: &Bound<'py, PyAny>,
    flat: &Bound<'py, PyAny>,
    arrays: &Arrays<'py>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let py = flat.py();
    let Ok(flat) = flat.cast::<PyDict>() else {
        return Ok(None);
    };
    if !flat.is_exact_instance_of::<PyDict>()
        && !flat
            .get_type()
            .is(py.import("collections")?.getattr("OrderedDict")?)
    {
        return Ok(None); // its own `__getitem__` may disagree with the dict's entries
    }
    let mut pass = Pass {
        flat,
        arrays,
        dot: intern!(py, "."),
        found: 0,
    };
    match pass.node(dst_state, None, 0)? {
        Some(Nested::Node(nested)) if pass.found == flat.len() => Ok(Some(nested)),
        _ => Ok(None),
    }
}

/// One pass over the destination's state, counting the entries of `flat` it took.
struct Pass<'a, 'py> {
    flat: &'a Bound<'py, PyDict>,
    arrays: &'a Arrays<'py>,
    dot: &'a Bound<'py, PyString>,
    found: usize,
}

enum Nested<'py> {
    /// The node's source.
    Node(Bound<'py, PyDict>),
    /// `dst_state` is a leaf.
    Leaf,
}

impl<'py> Pass<'_, 'py> {
    /// The source of `node` (at `path`), or `None` for the general nesting.
    fn node(
        &mut self,
        node: &Bound<'py, PyAny>,
        path: Option<&Bound<'py, PyString>>,
        depth: usize,
    ) -> PyResult<Option<Nested<'py>>> {
        if too_deep(depth).is_some() {
            return Ok(None); // the general nesting refuses it
        }
        let Some(children) = named_children(node)? else {
            let container = node.is_instance_of::<PyDict>()
                || node.is_instance_of::<PyList>()
                || node.is_instance_of::<PyTuple>();
            return Ok((!container).then_some(Nested::Leaf));
        };
        let py = node.py();
        let nested = PyDict::new(py);
        let above = match path {
            Some(path) => Some(concat(path, self.dot)?),
            None => None,
        };
        for (name, child) in children {
            let Some(name) = name else {
                return Ok(None);
            };
            if name.contains(self.dot)? {
                return Ok(None);
            }
            let path = match &above {
                Some(above) => concat(above, &name)?,
                None => name.clone(),
            };
            let found = self.found;
            match self.node(&child, Some(&path), depth + 1)? {
                None => return Ok(None),
                // A part with nothing from `flat` holds no arrays (a missing one ends the
                // pass): it is taken from the destination.
                Some(Nested::Node(_)) if self.found == found => nested.set_item(name, child)?,
                Some(Nested::Node(inner)) => nested.set_item(name, inner)?,
                Some(Nested::Leaf) => match self.flat.get_item(&path)? {
                    Some(value) => {
                        self.found += 1;
                        nested.set_item(name, value)?;
                    }
                    None if self.arrays.is_array(&child)? => return Ok(None),
                    None => nested.set_item(name, child)?,
                },
            }
        }
        Ok(Some(Nested::Node(nested)))
    }
}

/// The children of an exact dict, list or tuple under their names (`None` for a key that
/// is not a string; an index of a sequence as a string), or `None` for anything else.
#[allow(clippy::type_complexity)]
fn named_children<'py>(
    node: &Bound<'py, PyAny>,
) -> PyResult<Option<Vec<(Option<Bound<'py, PyString>>, Bound<'py, PyAny>)>>> {
    let py = node.py();
    let index =
        |(i, child): (usize, Bound<'py, PyAny>)| (Some(PyString::new(py, &i.to_string())), child);
    Ok(Some(if let Ok(dict) = node.cast_exact::<PyDict>() {
        dict.iter()
            .map(|(key, child)| (key.cast_into_exact::<PyString>().ok(), child))
            .collect()
    } else if let Ok(list) = node.cast_exact::<PyList>() {
        list.iter().enumerate().map(index).collect()
    } else if let Ok(tuple) = node.cast_exact::<PyTuple>() {
        tuple.iter().enumerate().map(index).collect()
    } else {
        return Ok(None);
    }))
}

fn concat<'py>(
    a: &Bound<'py, PyString>,
    b: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyString>> {
    // SAFETY: both are live strings; the result is a new reference or null with an error.
    unsafe {
        Bound::from_owned_ptr_or_err(a.py(), pyo3::ffi::PyUnicode_Concat(a.as_ptr(), b.as_ptr()))
            .map(|s| s.cast_into_unchecked())
    }
}
