//! The child view: whether an object is a leaf or a node, and its children.
//!
//! `dict`, `list`, `tuple`, NumPy arrays and Python scalars are recognised by exact type
//! without calling into Python. Any other type is classified once per call by
//! `fastload._tree.node_kind(type)` (the registry), and the decision is cached.

use super::python_function;
use super::tensors::{module_children, TensorViews};
use super::walk::plain_key;
use numpy::PyUntypedArray;
use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::type_object::PyTypeInfo;
use pyo3::types::{
    PyBool, PyBytes, PyComplex, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType,
};
use rustc_hash::FxHashMap;
use std::ops::Range;

/// How the registry classifies a type; the codes match `fastload._tree`.
#[derive(Clone)]
enum TypeKind<'py> {
    /// A leaf that `state` drops (functions, classes, unknown objects).
    Opaque,
    /// A plain-data leaf that `state` keeps (numbers, strings, NumPy scalars).
    Data,
    /// A NumPy bool scalar: a leaf that may be `False`.
    Bool,
    Mapping,
    /// Keyed by `vars(obj)`.
    Attributes,
    /// Keyed by these attribute names; unset attributes are skipped.
    Fields(Vec<Bound<'py, PyString>>),
    /// A namedtuple: keyed by its `_fields`, valued by position.
    NamedTuple(Vec<Bound<'py, PyString>>),
    /// A `list` or `tuple` subclass: a sequence.
    Sequence,
    /// A registered `children` function.
    Custom(Bound<'py, PyAny>),
    /// A `torch.Tensor`: an array leaf.
    Tensor,
    /// A `torch.nn.Module`, with `fastload._torch.module_children` for one whose children
    /// are not held as torch holds them.
    Module(Bound<'py, PyAny>),
}

/// The children of a keyed node, in its own order, with a lookup by key when needed.
pub struct Keyed<'py> {
    /// The children; for a node made by [`Keyed::lookup`], only once
    /// [`Keyed::read_pairs`] has read them.
    pub pairs: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
    index: Option<Bound<'py, PyDict>>,
    /// Whether `pairs` is still to be read from `index`.
    unread: bool,
}

impl<'py> Keyed<'py> {
    pub(super) fn new(
        pairs: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
        index: Option<Bound<'py, PyDict>>,
    ) -> Self {
        Keyed {
            pairs,
            index,
            unread: false,
        }
    }

    /// Whether every key read is a [`plain_key`], which hashes and compares without
    /// running code of the user's.
    pub(super) fn has_plain_keys(&self) -> bool {
        self.pairs.iter().all(|(key, _)| plain_key(key))
    }

    /// A dict's children, read only when asked for: a source matched key by key against
    /// a destination needs only its lookups and its size.
    fn lookup(dict: Bound<'py, PyDict>) -> Self {
        Keyed {
            pairs: Vec::new(),
            index: Some(dict),
            unread: true,
        }
    }

    /// Number of children.
    pub fn len(&self) -> usize {
        match &self.index {
            Some(index) if self.unread => index.len(),
            _ => self.pairs.len(),
        }
    }

    /// The size of the dict the children were read from, if any: read again after code of
    /// the user's ran, to tell whether that code changed it.
    pub fn dict_len(&self) -> Option<usize> {
        self.index.as_ref().map(|index| index.len())
    }

    /// The dict the children are still to be read from, for a node made by
    /// [`Keyed::lookup`].
    pub fn unread_dict(&self) -> Option<&Bound<'py, PyDict>> {
        self.index.as_ref().filter(|_| self.unread)
    }

    /// Reads the children into `pairs`, for a node made by [`Keyed::lookup`].
    pub fn read_pairs(&mut self) {
        if let (true, Some(index)) = (self.unread, &self.index) {
            self.pairs = index.iter().collect();
            self.unread = false;
        }
    }

    /// A dict from key to child, for matching against another node's keys.
    pub fn index(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if let Some(index) = &self.index {
            return Ok(index.clone());
        }
        let index = PyDict::new(py);
        for (k, v) in &self.pairs {
            index.set_item(k, v)?;
        }
        self.index = Some(index.clone());
        Ok(index)
    }

    /// Drops the children `keep` rejects.
    pub fn retain(
        &mut self,
        mut keep: impl FnMut(&Bound<'py, PyAny>) -> PyResult<bool>,
    ) -> PyResult<()> {
        self.read_pairs();
        let mut kept = Vec::with_capacity(self.pairs.len());
        for (k, v) in self.pairs.drain(..) {
            if keep(&v)? {
                kept.push((k, v));
            }
        }
        self.pairs = kept;
        self.index = None;
        Ok(())
    }
}

/// An array leaf: a NumPy array (or a NumPy view of a CPU tensor's memory), or a tensor
/// that torch copies (see `fastload._torch`).
pub enum ArrayLeaf<'py> {
    NumPy(Bound<'py, PyUntypedArray>),
    Torch(Bound<'py, PyAny>),
}

/// A tensor as an array leaf: its NumPy `view` where it has one, else itself.
fn array_leaf<'py>(
    tensor: &Bound<'py, PyAny>,
    view: Option<Bound<'py, PyUntypedArray>>,
) -> ArrayLeaf<'py> {
    match view {
        Some(array) => ArrayLeaf::NumPy(array),
        None => ArrayLeaf::Torch(tensor.clone()),
    }
}

/// An object as the walk sees it.
pub enum Node<'py> {
    Array(Bound<'py, PyUntypedArray>),
    /// A `torch.Tensor`, seen through `Classifier::tensor` when it is loaded.
    Tensor(Bound<'py, PyAny>),
    /// `True`/`False` or a NumPy bool scalar.
    Bool(bool),
    /// A leaf `state` keeps as it is.
    Data,
    /// A leaf `state` replaces by `()`.
    Opaque,
    Keyed(Keyed<'py>),
    /// A sequence; `true` when it should come back as a tuple.
    Seq(Vec<Bound<'py, PyAny>>, bool),
}

impl Node<'_> {
    pub fn is_node(&self) -> bool {
        matches!(self, Node::Keyed(_) | Node::Seq(..))
    }

    /// Number of children (0 for a leaf).
    pub fn len(&self) -> usize {
        match self {
            Node::Keyed(k) => k.len(),
            Node::Seq(items, _) => items.len(),
            _ => 0,
        }
    }
}

/// Classifies objects, caching the registry's decision per type for one call.
pub struct Classifier<'py> {
    py: Python<'py>,
    node_kind: Bound<'py, PyAny>,
    /// Decisions by type address; each entry holds its type, so that the address cannot
    /// be reused by another type meanwhile.
    cache: FxHashMap<usize, (Bound<'py, PyType>, TypeKind<'py>, bool)>,
    /// Whether reading some node's children may have run the user's Python code.
    pub ran_user_code: bool,
    /// Views of tensors' memory, once a tensor has been met.
    tensor_views: Option<TensorViews<'py>>,
    /// `numpy.ndarray`, looked up once: the walk asks about every leaf.
    ndarray: *mut pyo3::ffi::PyTypeObject,
}

impl<'py> Classifier<'py> {
    pub fn new(py: Python<'py>) -> PyResult<Self> {
        Ok(Classifier {
            py,
            node_kind: python_function(py, "fastload._tree", "node_kind")?,
            cache: FxHashMap::default(),
            ran_user_code: false,
            tensor_views: None,
            ndarray: PyUntypedArray::type_object_raw(py),
        })
    }

    /// `obj` as an array when its type is exactly `numpy.ndarray`.
    #[inline(always)]
    pub fn exact_array<'a>(
        &self,
        obj: &'a Bound<'py, PyAny>,
    ) -> Option<&'a Bound<'py, PyUntypedArray>> {
        // SAFETY: an object whose type is `numpy.ndarray` is an ndarray.
        let exact = unsafe { pyo3::ffi::Py_TYPE(obj.as_ptr()) } == self.ndarray;
        // SAFETY: checked just above.
        exact.then(|| unsafe { obj.cast_unchecked::<PyUntypedArray>() })
    }

    /// Whether a tensor was met: its memory may then have been written through NumPy
    /// views, which autograd must be told about.
    pub fn met_torch(&self) -> bool {
        self.tensor_views.is_some()
    }

    /// The storages of the tensors viewed so far, which must outlive their views.
    pub fn take_tensor_storages(&mut self) -> Vec<Bound<'py, PyAny>> {
        self.tensor_views
            .as_mut()
            .map(|views| std::mem::take(&mut views.storages))
            .unwrap_or_default()
    }

    /// The tensors viewed, with their views' addresses (see [`TensorViews::viewed`]).
    pub fn take_viewed_tensors(&mut self) -> Vec<(Bound<'py, PyAny>, usize)> {
        self.tensor_views
            .as_mut()
            .map(|views| std::mem::take(&mut views.viewed))
            .unwrap_or_default()
    }

    /// `obj` as an array leaf, or `None` when it is anything else.
    pub fn as_array(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<Option<ArrayLeaf<'py>>> {
        if let Ok(array) = obj.cast::<PyUntypedArray>() {
            return Ok(Some(ArrayLeaf::NumPy(array.clone())));
        }
        if is_builtin_leaf(obj)
            || obj.is_exact_instance_of::<PyDict>()
            || obj.is_exact_instance_of::<PyList>()
            || obj.is_exact_instance_of::<PyTuple>()
            || obj.is_exact_instance_of::<PyBool>()
        {
            return Ok(None);
        }
        match self.kind_of(obj)? {
            TypeKind::Tensor => self.tensor(obj).map(Some),
            _ => Ok(None),
        }
    }

    /// A tensor as a NumPy view of its memory where it has one.
    pub fn tensor(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<ArrayLeaf<'py>> {
        let view = self.tensor_views()?.view(obj)?;
        Ok(array_leaf(obj, view))
    }

    /// A destination tensor as a NumPy view of its memory where the core may write it
    /// (see [`TensorViews::destination_view`]).
    pub fn destination_tensor(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<ArrayLeaf<'py>> {
        let view = self.tensor_views()?.destination_view(obj)?;
        Ok(array_leaf(obj, view))
    }

    /// The values of a source tensor that has no NumPy view as it is (see
    /// [`TensorViews::resolved_values`]).
    pub fn resolved_values(
        &mut self,
        tensor: &Bound<'py, PyAny>,
    ) -> PyResult<Option<(Bound<'py, PyUntypedArray>, Range<usize>)>> {
        self.tensor_views()?.resolved_values(tensor)
    }

    fn tensor_views(&mut self) -> PyResult<&mut TensorViews<'py>> {
        let views = match self.tensor_views.take() {
            Some(views) => views,
            None => TensorViews::new(self.py)?,
        };
        Ok(self.tensor_views.insert(views))
    }

    /// `Some(value)` when `obj` is `True`/`False` or a NumPy bool scalar.
    pub fn as_bool(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<Option<bool>> {
        if let Ok(b) = obj.cast_exact::<PyBool>() {
            return Ok(Some(b.is_true()));
        }
        if is_builtin_leaf(obj) || obj.is_exact_instance_of::<PyDict>() {
            return Ok(None);
        }
        match self.kind_of(obj)? {
            TypeKind::Bool => Ok(Some(obj.is_truthy()?)),
            _ => Ok(None),
        }
    }

    /// The attributes of an object keyed by `vars(obj)`, when they are an exact dict:
    /// read as they are, without a copy of their entries.
    pub fn attribute_dict(
        &mut self,
        obj: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        if obj.cast::<PyUntypedArray>().is_ok() || is_builtin_leaf(obj) {
            return Ok(None);
        }
        if !matches!(self.kind_of(obj)?, TypeKind::Attributes) {
            return Ok(None);
        }
        let attrs = obj.getattr(intern!(self.py, "__dict__"))?;
        Ok(attrs.cast_into_exact::<PyDict>().ok())
    }

    pub fn classify(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<Node<'py>> {
        self.classify_as(obj, false)
    }

    /// [`Classifier::classify`] for a source matched against a destination: a dict's
    /// children (an object's attributes) are read only if they are asked for.
    pub fn classify_source(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<Node<'py>> {
        self.classify_as(obj, true)
    }

    fn classify_as(&mut self, obj: &Bound<'py, PyAny>, lookup: bool) -> PyResult<Node<'py>> {
        if let Ok(dict) = obj.cast_exact::<PyDict>() {
            return Ok(Node::Keyed(keyed_dict(dict, lookup)));
        }
        if let Ok(list) = obj.cast_exact::<PyList>() {
            return Ok(Node::Seq(list.iter().collect(), false));
        }
        if let Ok(tuple) = obj.cast_exact::<PyTuple>() {
            return Ok(Node::Seq(tuple.iter().collect(), true));
        }
        if let Ok(array) = obj.cast::<PyUntypedArray>() {
            return Ok(Node::Array(array.clone()));
        }
        if let Ok(b) = obj.cast_exact::<PyBool>() {
            return Ok(Node::Bool(b.is_true()));
        }
        if is_builtin_leaf(obj) {
            return Ok(Node::Data);
        }
        let kind = self.kind_of(obj)?;
        self.children_by_kind(obj, &kind, lookup)
    }

    fn kind_of(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<TypeKind<'py>> {
        let type_id = obj.get_type_ptr() as usize;
        if let Some((_, kind, runs_code)) = self.cache.get(&type_id) {
            self.ran_user_code |= *runs_code;
            return Ok(kind.clone());
        }
        let answer = self.node_kind.call1((obj.get_type(),))?;
        let (code, payload, runs_code): (u8, Bound<'py, PyAny>, bool) = answer.extract()?;
        self.ran_user_code |= runs_code;
        let names = || -> PyResult<Vec<Bound<'py, PyString>>> {
            payload
                .try_iter()?
                .map(|name| Ok(name?.cast_into::<PyString>()?))
                .collect()
        };
        let kind = match code {
            0 => TypeKind::Opaque,
            1 => TypeKind::Data,
            2 => TypeKind::Bool,
            3 => TypeKind::Mapping,
            4 => TypeKind::Attributes,
            5 => TypeKind::Fields(names()?),
            6 => TypeKind::NamedTuple(names()?),
            7 => TypeKind::Sequence,
            8 => TypeKind::Custom(payload),
            9 => TypeKind::Tensor,
            10 => TypeKind::Module(payload),
            _ => return Err(PyTypeError::new_err(format!("unknown node kind {code}"))),
        };
        self.cache
            .insert(type_id, (obj.get_type(), kind.clone(), runs_code));
        Ok(kind)
    }

    fn children_by_kind(
        &mut self,
        obj: &Bound<'py, PyAny>,
        kind: &TypeKind<'py>,
        lookup: bool,
    ) -> PyResult<Node<'py>> {
        let py = self.py;
        Ok(match kind {
            TypeKind::Opaque => Node::Opaque,
            TypeKind::Data => Node::Data,
            TypeKind::Bool => Node::Bool(obj.is_truthy()?),
            TypeKind::Mapping => {
                let keyed = mapping_children(obj)?;
                // Reading a value by its key ran the key's `__hash__` and `__eq__`.
                self.ran_user_code |= !keyed.has_plain_keys();
                Node::Keyed(keyed)
            }
            TypeKind::Attributes => {
                let attrs = obj.getattr(intern!(py, "__dict__"))?;
                match attrs.cast_exact::<PyDict>() {
                    Ok(dict) => Node::Keyed(keyed_dict(dict, lookup)),
                    Err(_) => {
                        // A `__dict__` of another class: its `keys()` may be the user's.
                        self.ran_user_code = true;
                        Node::Keyed(mapping_children(&attrs)?)
                    }
                }
            }
            TypeKind::Fields(names) => {
                let mut pairs = Vec::with_capacity(names.len());
                for name in names {
                    match obj.getattr(name) {
                        Ok(value) => pairs.push((name.clone().into_any(), value)),
                        Err(e) if e.is_instance_of::<PyAttributeError>(py) => {}
                        Err(e) => return Err(e),
                    }
                }
                Node::Keyed(Keyed::new(pairs, None))
            }
            TypeKind::NamedTuple(names) => {
                let tuple = obj.cast::<PyTuple>()?;
                let mut pairs = Vec::with_capacity(names.len());
                for (name, value) in names.iter().zip(tuple.iter()) {
                    pairs.push((name.clone().into_any(), value));
                }
                Node::Keyed(Keyed::new(pairs, None))
            }
            TypeKind::Sequence => {
                let items = obj.try_iter()?.collect::<PyResult<Vec<_>>>()?;
                Node::Seq(items, obj.is_instance_of::<PyTuple>())
            }
            TypeKind::Custom(children) => {
                let result = children.call1((obj,))?;
                self.custom_children(obj, result)?
            }
            TypeKind::Tensor => Node::Tensor(obj.clone()),
            TypeKind::Module(fallback) => match module_children(obj)? {
                Some(children) => {
                    // Names are looked up in sets and dicts: a `str` subclass's hash runs.
                    self.ran_user_code |= !children.has_plain_keys();
                    Node::Keyed(children)
                }
                None => {
                    self.ran_user_code = true;
                    let result = fallback.call1((obj,))?;
                    self.custom_children(obj, result)?
                }
            },
        })
    }

    /// Interprets what a registered `children` function returned.
    fn custom_children(
        &mut self,
        obj: &Bound<'py, PyAny>,
        result: Bound<'py, PyAny>,
    ) -> PyResult<Node<'py>> {
        if result.is_none() {
            return Ok(Node::Opaque);
        }
        if let Ok(list) = result.cast::<PyList>() {
            return Ok(Node::Seq(list.iter().collect(), false));
        }
        if let Ok(tuple) = result.cast::<PyTuple>() {
            return Ok(Node::Seq(tuple.iter().collect(), true));
        }
        if let Ok(dict) = result.cast_exact::<PyDict>() {
            return Ok(Node::Keyed(keyed_dict(dict, false)));
        }
        if matches!(self.kind_of(&result)?, TypeKind::Mapping) {
            return Ok(Node::Keyed(mapping_children(&result)?));
        }
        Err(PyTypeError::new_err(format!(
            "the children function registered for {} returned {}; expected a dict, a list, a tuple or None",
            obj.get_type().name()?,
            result.get_type().name()?
        )))
    }
}

/// A dict's children, read now or (`lookup`) only when asked for.
pub(super) fn keyed_dict<'py>(dict: &Bound<'py, PyDict>, lookup: bool) -> Keyed<'py> {
    if lookup {
        Keyed::lookup(dict.clone())
    } else {
        Keyed::new(dict.iter().collect(), Some(dict.clone()))
    }
}

/// `(key, value)` pairs of any Mapping, through its `keys()` and `__getitem__`.
fn mapping_children<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Keyed<'py>> {
    // `keys` of the class: an `OrderedDict`'s own attributes may hold another.
    let keys: Vec<Bound<'py, PyAny>> = obj
        .get_type()
        .getattr(intern!(obj.py(), "keys"))?
        .call1((obj,))?
        .try_iter()?
        .collect::<PyResult<_>>()?;
    let mut pairs = Vec::with_capacity(keys.len());
    for key in keys {
        let value = obj.get_item(&key)?;
        pairs.push((key, value));
    }
    Ok(Keyed::new(pairs, None))
}

/// Exact built-in types that are plain-data leaves (`bool` is handled before).
fn is_builtin_leaf(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_none()
        || obj.is_exact_instance_of::<PyFloat>()
        || obj.is_exact_instance_of::<PyInt>()
        || obj.is_exact_instance_of::<PyString>()
        || obj.is_exact_instance_of::<PyBytes>()
        || obj.is_exact_instance_of::<PyComplex>()
}

/// The child view of `x`: `None` for a leaf, a `dict` for a keyed node, a `tuple` for a
/// sequence.
#[pyfunction]
pub fn children<'py>(py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let mut classifier = Classifier::new(py)?;
    Ok(match classifier.classify(x)? {
        Node::Keyed(keyed) => {
            let dict = PyDict::new(py);
            for (k, v) in keyed.pairs {
                dict.set_item(k, v)?;
            }
            dict.into_any()
        }
        Node::Seq(items, _) => PyTuple::new(py, items)?.into_any(),
        _ => py.None().into_bound(py),
    })
}
