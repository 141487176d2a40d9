//! Flat dotted keys (`h.0.attn.weight`, as a `state_dict` or a checkpoint names arrays)
//! and nested state, both ways; and a flat source nested for loading into a destination.

use super::array::{dtype_key, view_of};
use super::depth::too_deep;
use super::flat_like::nest_like;
use super::python_function;
use crate::core::layout::Parameter;
use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use rustc_hash::{FxHashMap, FxHashSet};

/// Nested dicts made from flat keys, as a table of nodes (the root first, every node after
/// its parent), so that no key is too deep to build, convert or drop without recursion.
/// The nodes are the dicts made here: a value that is a dict is a value, never a node.
struct Tree<'py> {
    nodes: Vec<Node<'py>>,
}

/// A node's children in the order their keys first appeared.
#[derive(Default)]
struct Node<'py> {
    children: Vec<(String, Child<'py>)>,
    index: FxHashMap<String, usize>,
}

enum Child<'py> {
    /// A node, by its place in the tree's table.
    Node(usize),
    Value(Bound<'py, PyAny>),
}

impl<'py> Tree<'py> {
    const ROOT: usize = 0;

    fn new() -> Self {
        Tree {
            nodes: vec![Node::default()],
        }
    }

    fn child(&self, node: usize, part: &str) -> Option<&Child<'py>> {
        let node = &self.nodes[node];
        node.index.get(part).map(|&at| &node.children[at].1)
    }

    fn push(&mut self, node: usize, part: &str, child: Child<'py>) {
        let node = &mut self.nodes[node];
        node.index.insert(part.to_owned(), node.children.len());
        node.children.push((part.to_owned(), child));
    }

    /// The node at `part` below `node`, made if there is none; `None` when a value is
    /// there.
    fn node_at(&mut self, node: usize, part: &str) -> Option<usize> {
        match self.child(node, part) {
            Some(Child::Node(inner)) => Some(*inner),
            Some(Child::Value(_)) => None,
            None => {
                self.nodes.push(Node::default());
                let inner = self.nodes.len() - 1;
                self.push(node, part, Child::Node(inner));
                Some(inner)
            }
        }
    }

    /// The tree as nested dicts, made from the leaves up.
    fn into_dict(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut dicts: Vec<Option<Bound<'py, PyDict>>> = vec![None; self.nodes.len()];
        for (at, node) in self.nodes.into_iter().enumerate().rev() {
            let dict = PyDict::new(py);
            for (part, child) in node.children {
                match child {
                    Child::Node(inner) => dict.set_item(part, dicts[inner].take())?,
                    Child::Value(value) => dict.set_item(part, value)?,
                }
            }
            dicts[at] = Some(dict);
        }
        Ok(dicts[Self::ROOT].take().expect("the root is made last"))
    }
}

/// Refuses to recurse deeper than a walk may (see `depth`): the state these functions
/// read was built within that bound, but on a thread whose stack may be small.
fn deep_enough(depth: usize) -> PyResult<()> {
    match too_deep(depth) {
        Some(reason) => Err(PyValueError::new_err(reason)),
        None => Ok(()),
    }
}

/// The `(key, value)` pairs of a mapping, in its order.
fn items<'py>(
    mapping: &Bound<'py, PyAny>,
) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    if let Ok(dict) = mapping.cast_exact::<PyDict>() {
        return Ok(dict.iter().collect());
    }
    mapping
        .call_method0("items")?
        .try_iter()?
        .map(|pair| {
            let mut pair = pair?.try_iter()?;
            let mut next = || pair.next().transpose();
            match (next()?, next()?, next()?) {
                (Some(key), Some(value), None) => Ok((key, value)),
                _ => Err(PyValueError::new_err(
                    "items() must give (key, value) pairs",
                )),
            }
        })
        .collect()
}

/// A key's text, refused where it is no UTF-8 (a lone surrogate, as from a file name read
/// with `surrogateescape`): paths and checkpoints name leaves by UTF-8 text.
fn utf8<'a>(key: &'a Bound<'_, PyString>) -> PyResult<std::borrow::Cow<'a, str>> {
    key.to_cow().map_err(|_| {
        let shown = key.repr().map(|r| r.to_string()).unwrap_or_default();
        PyValueError::new_err(format!(
            "key {shown} holds a lone surrogate, which no path of leaves can: rename it"
        ))
    })
}

/// A string as Python shows it (`repr`), for messages.
fn quoted(py: Python<'_>, text: &str) -> String {
    let text = PyString::new(py, text);
    text.repr()
        .map_or_else(|_| format!("{text}"), |r| r.to_string())
}

/// Nests `pairs` by their keys split at `sep`, refusing keys that cannot be the paths of
/// one tree.
fn nest<'py>(pairs: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>, sep: &str) -> PyResult<Tree<'py>> {
    let mut tree = Tree::new();
    for (key, value) in pairs {
        let Ok(name) = key.cast::<PyString>() else {
            let shown = key.repr()?;
            return Err(PyTypeError::new_err(format!(
                "unflatten() needs string keys, got {shown}"
            )));
        };
        let name = utf8(name)?;
        let shown = || key.repr().map(|r| r.to_string()).unwrap_or_default();
        let parts: Vec<&str> = name.split(sep).collect();
        if parts.iter().any(|part| part.is_empty()) {
            return Err(PyValueError::new_err(format!(
                "key {} has an empty part between separators {}",
                shown(),
                quoted(key.py(), sep)
            )));
        }
        let (last, above) = parts.split_last().expect("split gives one part at least");
        let mut node = Tree::ROOT;
        for (depth, part) in above.iter().enumerate() {
            node = match tree.node_at(node, part) {
                Some(inner) => inner,
                None => {
                    let prefix = parts[..=depth].join(sep);
                    return Err(PyValueError::new_err(format!(
                        "key {} is below {}, which holds a value",
                        shown(),
                        quoted(key.py(), &prefix)
                    )));
                }
            };
        }
        if tree.child(node, last).is_some() {
            return Err(PyValueError::new_err(format!(
                "key {} is also the prefix of other keys",
                shown()
            )));
        }
        tree.push(node, last, Child::Value(value));
    }
    Ok(tree)
}

/// Nested dicts from a mapping with keys joined by `sep` (`fastload.unflatten`).
#[pyfunction]
pub fn unflatten<'py>(flat: &Bound<'py, PyAny>, sep: &str) -> PyResult<Bound<'py, PyDict>> {
    nest(items(flat)?, sep)?.into_dict(flat.py())
}

/// The leaves of a state under their paths joined by `sep`, in walk order.
fn leaves<'py>(state: &Bound<'py, PyAny>, sep: &str) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
    leaves_as(state, sep, Flattening::Leaves)
}

/// What a flattening keeps.
#[derive(Clone, Copy, PartialEq)]
enum Flattening {
    /// The leaves: nodes without children are left out, and keys are named by `str`.
    Leaves,
    /// Everything, for a checkpoint: nodes without children (`()`, `[]`, `{}`) are kept as
    /// values, and a dict key that is not a string is refused, since a string would not
    /// load back as it.
    Everything,
}

fn leaves_as<'py>(
    state: &Bound<'py, PyAny>,
    sep: &str,
    how: Flattening,
) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
    fn visit<'py>(
        node: &Bound<'py, PyAny>,
        path: &mut String,
        (sep, how): (&str, Flattening),
        out: &mut Vec<(String, Bound<'py, PyAny>)>,
        depth: usize,
    ) -> PyResult<()> {
        deep_enough(depth)?;
        let Some(children) = children(node, how)? else {
            out.push((path.clone(), node.clone()));
            return Ok(());
        };
        if children.is_empty() && depth > 0 && how == Flattening::Everything {
            out.push((path.clone(), node.clone()));
        }
        for (part, child) in children {
            if part.contains(sep) {
                let py = node.py();
                return Err(PyValueError::new_err(format!(
                    "key {} contains the separator {}",
                    quoted(py, &part),
                    quoted(py, sep)
                )));
            }
            if overlaps_separator(&part, sep) {
                let py = node.py();
                return Err(PyValueError::new_err(format!(
                    "key {} begins or ends with part of the separator {}, so a path joining \
                     it would split elsewhere",
                    quoted(py, &part),
                    quoted(py, sep)
                )));
            }
            // Below the root, parts are joined by `sep`, even after an empty part.
            let len = path.len();
            if depth > 0 {
                path.push_str(sep);
            }
            path.push_str(&part);
            visit(&child, path, (sep, how), out, depth + 1)?;
            path.truncate(len);
        }
        Ok(())
    }
    let mut out = Vec::new();
    visit(state, &mut String::new(), (sep, how), &mut out, 0)?;
    Ok(out)
}

/// A state node's children under their names (`str` of a key, the index in a sequence),
/// or `None` for a leaf.
#[allow(clippy::type_complexity)]
fn children<'py>(
    node: &Bound<'py, PyAny>,
    how: Flattening,
) -> PyResult<Option<Vec<(String, Bound<'py, PyAny>)>>> {
    let named = |(i, child)| (usize::to_string(&i), child);
    Ok(Some(if let Ok(dict) = node.cast::<PyDict>() {
        // A key's `str` may run code that changes the dict: its items are taken first.
        let mut out = Vec::with_capacity(dict.len());
        for item in dict.items().iter() {
            let (key, child): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item.extract()?;
            if how == Flattening::Everything && !key.is_instance_of::<PyString>() {
                return Err(PyTypeError::new_err(format!(
                    "key {} is not a string: a checkpoint names its entries by strings, \
                     which would not load back as this key",
                    key.repr()?
                )));
            }
            out.push((utf8(&key.str()?)?.into_owned(), child));
        }
        out
    } else if let Ok(list) = node.cast::<PyList>() {
        list.iter().enumerate().map(named).collect()
    } else if let Ok(tuple) = node.cast::<PyTuple>() {
        tuple.iter().enumerate().map(named).collect()
    } else {
        return Ok(None);
    }))
}

/// Whether `part` (which does not contain `sep`) and a `sep` beside it hold `sep`
/// somewhere else than where it was put: `"a:"` before `"::"`, or `":b"` after it.
/// A longer occurrence cannot span a whole separator, so the two sides are all there is.
fn overlaps_separator(part: &str, sep: &str) -> bool {
    if sep.chars().nth(1).is_none() {
        return false; // one character: `part` would contain it
    }
    let after = format!("{part}{sep}");
    let before = format!("{sep}{part}");
    after.find(sep) != Some(part.len()) || before.rfind(sep) != Some(0)
}

/// The leaves of `state` under their paths joined by `sep` (`fastload.flatten`); with
/// `everything`, nodes without children too, and only string keys (for a checkpoint).
#[pyfunction]
#[pyo3(signature = (state, sep, everything = false))]
pub fn flatten<'py>(
    state: &Bound<'py, PyAny>,
    sep: &str,
    everything: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(state.py());
    let how = match everything {
        true => Flattening::Everything,
        false => Flattening::Leaves,
    };
    let py = state.py();
    for (path, leaf) in leaves_as(state, sep, how)? {
        // Refused as `unflatten` (and a checkpoint's reader) would refuse them.
        if path.split(sep).any(str::is_empty) {
            return Err(PyValueError::new_err(format!(
                "key {} has an empty part between separators {}: paths join non-empty keys \
                 (is the state a bare leaf, or has a dict a key ''?)",
                quoted(py, &path),
                quoted(py, sep)
            )));
        }
        if dict.contains(&path)? {
            return Err(PyValueError::new_err(format!(
                "two entries flatten to the path {}: keys are named by their str(), which \
                 is the same for both (as for 1 and '1'); rename one",
                quoted(py, &path)
            )));
        }
        dict.set_item(path, leaf)?;
    }
    Ok(dict)
}

/// A flat source (arrays under dotted keys, each tied array possibly once) nested for
/// loading into the destination whose state is `dst_state`:
/// - a key the source lacks whose destination array is tied to one the source has takes
///   that key's array;
/// - a part of the destination that holds no arrays (a flag, an empty module, an absent
///   parameter), which such a source cannot name, is taken from the destination, so that
///   it is not missing.
///
/// `array_types` are the types of array leaves (a type or a tuple, for `isinstance`).
#[pyfunction]
pub fn nest_flat<'py>(
    dst_state: &Bound<'py, PyAny>,
    flat: &Bound<'py, PyAny>,
    array_types: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let py = flat.py();
    let arrays = Arrays { types: array_types };
    if let Some(nested) = nest_like(dst_state, flat, &arrays)? {
        return Ok(nested);
    }
    let mut pairs = items(flat)?;
    let mut present: FxHashMap<String, usize> = FxHashMap::default();
    for (at, (key, _)) in pairs.iter().enumerate() {
        if let Ok(key) = key.cast::<PyString>() {
            present.insert(utf8(key)?.into_owned(), at);
        }
    }
    for paths in tied_paths(dst_state, &arrays, &present)?
        .iter()
        .filter(|paths| paths.len() > 1)
    {
        let Some(first) = paths.iter().find_map(|path| present.get(path).copied()) else {
            continue;
        };
        let value = pairs[first].1.clone();
        for path in paths {
            if !present.contains_key(path) {
                present.insert(path.clone(), pairs.len());
                pairs.push((PyString::new(py, path).into_any(), value.clone()));
            }
        }
    }
    let mut tree = nest(pairs, ".")?;
    fill_arrayless(&mut tree, Tree::ROOT, dst_state, &arrays, 0)?;
    tree.into_dict(py)
}

/// What makes two arrays of a destination one tied parameter: the same object, or (for
/// NumPy arrays) the same memory viewed the same way, which an array without elements
/// never shares.
#[derive(Hash, PartialEq, Eq)]
enum TieKey {
    Object(usize),
    Memory(Parameter),
}

/// The destination's arrays grouped into tied parameters (the same object, or the same
/// memory viewed the same way, as two tensors over one storage), in walk order, each with
/// every path it is at; none when the source names every array (`present`), since the
/// groups only serve to fill a name it lacks.
fn tied_paths<'py>(
    dst_state: &Bound<'py, PyAny>,
    arrays: &Arrays<'py>,
    present: &FxHashMap<String, usize>,
) -> PyResult<Vec<Vec<String>>> {
    let py = dst_state.py();
    let mut found = Vec::new();
    for (path, leaf) in leaves(dst_state, ".")? {
        if arrays.is_array(&leaf)? {
            found.push((path, leaf));
        }
    }
    if found.iter().all(|(path, _)| present.contains_key(path)) {
        return Ok(Vec::new());
    }
    // A tensor may be tied through its memory only to one at its address: those at the
    // address of a tensor the source lacks are keyed by `fastload._torch.tie_key` (key ->
    // group), the others by identity.
    let address = |leaf: &Bound<'py, PyAny>| match leaf.is_instance_of::<PyUntypedArray>() {
        true => None,
        // Refused by sparse and lazy tensors, which have no memory to share.
        false => (leaf.call_method0(intern!(py, "data_ptr")).ok())
            .and_then(|address| address.extract::<usize>().ok())
            .filter(|&address| address != 0),
    };
    let addresses: Vec<Option<usize>> = found.iter().map(|(_, leaf)| address(leaf)).collect();
    let wanted: FxHashSet<usize> = (found.iter().zip(&addresses))
        .filter(|((path, _), _)| !present.contains_key(path))
        .filter_map(|(_, &address)| address)
        .collect();
    let mut tie_key = None;
    let tensor_groups = PyDict::new(py);
    let mut groups: FxHashMap<TieKey, usize> = FxHashMap::default();
    let mut tied: Vec<Vec<String>> = Vec::new();
    for ((path, leaf), address) in found.into_iter().zip(addresses) {
        let next = tied.len();
        let group = if let Ok(array) = leaf.cast::<PyUntypedArray>() {
            let key = match array.shape().iter().product::<usize>() {
                0 => TieKey::Object(leaf.as_ptr() as usize),
                _ => TieKey::Memory(view_of(array).parameter(dtype_key(&array.dtype()))),
            };
            *groups.entry(key).or_insert(next)
        } else if !address.is_some_and(|address| wanted.contains(&address)) {
            *groups
                .entry(TieKey::Object(leaf.as_ptr() as usize))
                .or_insert(next)
        } else {
            let tie_key = match &tie_key {
                Some(function) => function,
                None => tie_key.insert(python_function(py, "fastload._torch", "tie_key")?),
            };
            let key = tie_key.call1((&leaf,))?;
            match tensor_groups.get_item(&key)? {
                Some(group) => group.extract()?,
                None => {
                    tensor_groups.set_item(key, next)?;
                    next
                }
            }
        };
        if group == next {
            tied.push(Vec::new());
        }
        tied[group].push(path);
    }
    Ok(tied)
}

/// Completes `node` with the children of `dst` it lacks that hold no arrays.
fn fill_arrayless<'py>(
    tree: &mut Tree<'py>,
    node: usize,
    dst: &Bound<'py, PyAny>,
    arrays: &Arrays<'py>,
    depth: usize,
) -> PyResult<()> {
    deep_enough(depth)?;
    let Some(children) = children(dst, Flattening::Leaves)? else {
        return Ok(());
    };
    for (part, child) in children {
        match tree.child(node, &part) {
            Some(Child::Node(inner)) => fill_arrayless(tree, *inner, &child, arrays, depth + 1)?,
            Some(Child::Value(_)) => {}
            None if !arrays.within(&child, depth + 1)? => {
                tree.push(node, &part, Child::Value(child))
            }
            None => {}
        }
    }
    Ok(())
}

/// Tells arrays from other leaves: instances of the types `fastload._flat` counts as arrays
/// (NumPy arrays, and tensors once torch is imported).
pub(super) struct Arrays<'py> {
    types: Bound<'py, PyAny>,
}

impl<'py> Arrays<'py> {
    pub(super) fn is_array(&self, leaf: &Bound<'py, PyAny>) -> PyResult<bool> {
        leaf.is_instance(&self.types)
    }

    /// Whether any leaf of a state node is an array.
    fn within(&self, node: &Bound<'py, PyAny>, depth: usize) -> PyResult<bool> {
        deep_enough(depth)?;
        let Some(children) = children(node, Flattening::Leaves)? else {
            return self.is_array(node);
        };
        for (_, child) in children {
            if self.within(&child, depth + 1)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
