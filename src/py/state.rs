//! `state`: a tree of plain containers and arrays with the nesting of the model.

use super::depth::too_deep;
use super::dicts::Entries;
use super::errors::{load_error, state_error};
use super::kinds::{Classifier, Node};
use super::path::{KeyPath, Segment};
use super::room::LastSize;
use crate::core::{LoadFailure, Problem, ProblemKind};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use rustc_hash::{FxHashMap, FxHashSet};

/// The state of `x`: keyed nodes become dicts, lists stay lists, tuples stay tuples,
/// arrays and plain data are kept as they are, and every other leaf becomes `()`. Nodes
/// that cannot be walked are all listed in one exception: that of a refused load where
/// the state is taken `for_load`.
#[pyfunction]
#[pyo3(signature = (x, for_load = false))]
pub fn state<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    for_load: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let room = STATE_NODES.room();
    let mut builder = StateBuilder {
        py,
        classifier: Classifier::new(py)?,
        path: KeyPath::default(),
        on_path: FxHashSet::default(),
        done: FxHashMap::with_capacity_and_hasher(room, Default::default()),
        problems: Vec::new(),
    };
    let out = builder.build(x);
    STATE_NODES.remember(builder.done.len());
    let out = out?;
    if !builder.problems.is_empty() {
        let failure = LoadFailure {
            problems: std::mem::take(&mut builder.problems),
        };
        return Err(match for_load {
            true => load_error(py, &failure),
            false => state_error(py, &failure),
        });
    }
    Ok(out)
}

/// Nodes of the last state built, as the room to make in the next one's table of nodes
/// done.
static STATE_NODES: LastSize = LastSize::new(1 << 16);

struct StateBuilder<'py> {
    py: Python<'py>,
    classifier: Classifier<'py>,
    path: KeyPath<'py>,
    on_path: FxHashSet<usize>,
    /// Nodes already converted, so that a shared node stays shared; holding the input
    /// keeps its address from being reused by another object meanwhile.
    done: FxHashMap<usize, (Bound<'py, PyAny>, Bound<'py, PyAny>)>,
    /// The nodes whose state cannot be taken: every one is found, and listed, before the
    /// call is refused.
    problems: Vec<Problem>,
}

impl<'py> StateBuilder<'py> {
    /// Records a problem at the current path; `()` stands for the node meanwhile.
    fn refuse(&mut self, message: String) -> Bound<'py, PyAny> {
        let problem = Problem::new(ProblemKind::Structure, self.path.render(), message);
        self.problems.push(problem);
        PyTuple::empty(self.py).into_any()
    }

    fn build(&mut self, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        // Most leaves are arrays: kept without building their node (and, as they do not
        // recurse, without asking how much stack is left).
        if self.classifier.exact_array(x).is_some() {
            return Ok(x.clone());
        }
        if let Some(reason) = too_deep(self.path.depth()) {
            return Ok(self.refuse(reason));
        }
        // Most nodes are lists: read in place, without collecting their items first.
        if let Ok(list) = x.cast_exact::<PyList>() {
            return self.build_once(x, |this| this.build_list(list));
        }
        // An exception of the object's own (a children function, a property) is a problem
        // at this path, as in `loadmodel`.
        // A dict's children (an object's attributes) are read from the dict itself.
        let node = match self.classifier.classify_source(x) {
            Err(err) if err.is_instance_of::<PyException>(self.py) => {
                return Ok(self.refuse(format!("cannot walk this node: {err}")));
            }
            other => other?,
        };
        match node {
            Node::Array(_) | Node::Tensor(_) | Node::Bool(_) | Node::Data => Ok(x.clone()),
            Node::Opaque => Ok(PyTuple::empty(self.py).into_any()),
            node => self.build_once(x, |this| this.build_node(node)),
        }
    }

    /// The state of node `x` by `build`, made once however often `x` is met (a shared
    /// node stays shared), and refused where `x` contains itself.
    fn build_once(
        &mut self,
        x: &Bound<'py, PyAny>,
        build: impl FnOnce(&mut Self) -> PyResult<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = x.as_ptr() as usize;
        if let Some((_, out)) = self.done.get(&id) {
            return Ok(out.clone());
        }
        if !self.on_path.insert(id) {
            return Ok(self.refuse("the tree has a cycle: this node contains itself".to_owned()));
        }
        let out = build(self);
        self.on_path.remove(&id);
        let out = out?;
        self.done.insert(id, (x.clone(), out.clone()));
        Ok(out)
    }

    /// The states of `len` items, each under its index; `item(i)` reads item `i` only in
    /// its turn (`None` where there is none any more).
    fn build_items(
        &mut self,
        len: usize,
        mut item: impl FnMut(usize) -> Option<Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            self.path.push(Segment::Index(i));
            let built = match item(i) {
                Some(item) => self.build(&item),
                None => Ok(self.refuse("the list shrank while its state was built".to_owned())),
            };
            self.path.pop();
            out.push(built?);
        }
        Ok(out)
    }

    /// The states of `list`'s items, as a new list. Each item is read in its turn, so
    /// user code run meanwhile (a children function) may have resized the list: that is
    /// an error.
    fn build_list(&mut self, list: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyAny>> {
        // Built aside, not in a list filled as it goes: that user code must never meet a
        // list with empty slots (say through `gc`).
        let len = list.len();
        let out = self.build_items(len, |i| list.get_item(i).ok())?;
        if list.len() != len {
            self.refuse("the list grew while its state was built".to_owned());
        }
        Ok(PyList::new(self.py, out)?.into_any())
    }

    /// The state of a dict's entries, as a new dict. Most children are arrays, which are
    /// their own state: the dict is copied whole (its table, not entry by entry), and only
    /// the entries whose state is another object are set again. The copy is also the
    /// snapshot read: user code run meanwhile (a children function) may change `dict`,
    /// not the entries read.
    fn build_dict(&mut self, dict: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
        let out = dict.copy()?;
        for (key, value) in Entries::new(&out) {
            if self.classifier.exact_array(&value).is_some() {
                continue;
            }
            // Held: the entry's value is replaced below, and user code may run meanwhile.
            let value = value.to_owned();
            let (key, built) = self.build_under(key.to_owned(), &value);
            let built = built?;
            if !built.is(&value) {
                // The key is in the copy already: its value is replaced in place, which
                // leaves the entries still to be read where they are.
                out.set_item(key, built)?;
            }
        }
        Ok(out.into_any())
    }

    /// The state of `value`, built with `key` on the path; the key is handed back.
    fn build_under(
        &mut self,
        key: Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
    ) -> (Bound<'py, PyAny>, PyResult<Bound<'py, PyAny>>) {
        self.path.push(Segment::Key(key));
        let built = self.build(value);
        let Some(Segment::Key(key)) = self.path.pop() else {
            unreachable!("the segment pushed above")
        };
        (key, built)
    }

    fn build_node(&mut self, node: Node<'py>) -> PyResult<Bound<'py, PyAny>> {
        match node {
            Node::Keyed(keyed) => {
                if let Some(dict) = keyed.unread_dict().cloned() {
                    return self.build_dict(&dict);
                }
                let dict = PyDict::new(self.py);
                for (key, value) in keyed.pairs {
                    let (key, built) = self.build_under(key, &value);
                    dict.set_item(key, built?)?;
                }
                Ok(dict.into_any())
            }
            Node::Seq(items, as_tuple) => {
                let out = self.build_items(items.len(), |i| items.get(i).cloned())?;
                Ok(if as_tuple {
                    PyTuple::new(self.py, out)?.into_any()
                } else {
                    PyList::new(self.py, out)?.into_any()
                })
            }
            _ => unreachable!("leaves return before build_node"),
        }
    }
}
