//! PyTorch objects read without calling `fastload._torch`: a module's children and NumPy
//! views of plain CPU tensors. Both are what `_torch.module_children` and `_torch.as_numpy`
//! give, which remain the fallback for anything laid out otherwise; calling them costs
//! about a microsecond a tensor, more than the rest of a leaf's walk.
//!
//! A tensor's layout comes from its DLPack capsule (see `dlpack`): one call into torch,
//! where its address, device, layout, shape and strides take one call each (measured at
//! GPT-2's layout: 0.84 -> 0.65 ms a load of 149 small tensors from a `state_dict`).

use super::array::{array_over, is_c_contiguous, view_of};
use super::dlpack;
use super::kinds::Keyed;
use super::python_function;
use crate::core::ArrayView;
use numpy::npyffi::NPY_ARRAY_WRITEABLE;
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray};
use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PySet, PyString, PyType};
use std::ops::Range;

/// A module's children under their `state_dict` names, read from the dicts in which torch
/// keeps them: parameters (`False` for a `None` one), persistent buffers, submodules.
/// `None` when the module does not hold them as torch does.
pub fn module_children<'py>(module: &Bound<'py, PyAny>) -> PyResult<Option<Keyed<'py>>> {
    let py = module.py();
    let Ok(attributes) = module
        .getattr(intern!(py, "__dict__"))?
        .cast_into_exact::<PyDict>()
    else {
        return Ok(None);
    };
    let dict = |name: &Bound<'py, PyString>| -> PyResult<Option<Bound<'py, PyDict>>> {
        Ok(attributes
            .get_item(name)?
            .and_then(|d| d.cast_into_exact::<PyDict>().ok()))
    };
    let parameters = dict(intern!(py, "_parameters"))?;
    let buffers = dict(intern!(py, "_buffers"))?;
    let modules = dict(intern!(py, "_modules"))?;
    let transient = attributes
        .get_item(intern!(py, "_non_persistent_buffers_set"))?
        .and_then(|s| s.cast_into_exact::<PySet>().ok());
    let (Some(parameters), Some(buffers), Some(modules), Some(transient)) =
        (parameters, buffers, modules, transient)
    else {
        return Ok(None);
    };
    let mut pairs = Vec::with_capacity(parameters.len() + buffers.len() + modules.len());
    for (name, parameter) in parameters.iter() {
        let child = match parameter.is_none() {
            true => PyBool::new(py, false).to_owned().into_any(),
            false => parameter,
        };
        pairs.push((name, child));
    }
    for (name, buffer) in buffers.iter() {
        if !buffer.is_none() && !transient.contains(&name)? {
            pairs.push((name, buffer));
        }
    }
    pairs.extend(modules.iter().filter(|(_, sub)| !sub.is_none()));
    Ok(Some(Keyed::new(pairs, None)))
}

/// Makes NumPy views of CPU tensors' memory for one walk.
pub struct TensorViews<'py> {
    /// `fastload._torch.as_numpy`, for tensors of other types.
    as_numpy: Bound<'py, PyAny>,
    /// `fastload._torch.resolved_values`, for sources that have no view as they are.
    resolve: Bound<'py, PyAny>,
    /// The tensor types read here: `torch.Tensor` and `torch.nn.Parameter` exactly, whose
    /// methods run no code of the user's.
    plain_types: Vec<Bound<'py, PyType>>,
    /// The NumPy dtype of each torch dtype that has one (`_torch.VIEW_DTYPES`).
    dtypes: Bound<'py, PyDict>,
    /// The storage of each tensor viewed here: a view points into it, so it must stay
    /// alive even if the tensor is given other memory (`param.data = ...`) meanwhile,
    /// until the load is refused for it.
    pub storages: Vec<Bound<'py, PyAny>>,
    /// Each tensor viewed here, with the address its view starts at: code of the user's
    /// that the walk runs may resize its storage, which frees the memory viewed (see
    /// [`moved_tensors`]).
    pub viewed: Vec<(Bound<'py, PyAny>, usize)>,
    /// `torch.utils.dlpack.to_dlpack`: a tensor's address, device, shape and strides in
    /// one call, where reading them takes one call each.
    to_dlpack: Bound<'py, PyAny>,
    /// Whether torch's inference mode is on: inference tensors may then be written.
    inference_mode: bool,
}

impl<'py> TensorViews<'py> {
    pub fn new(py: Python<'py>) -> PyResult<Self> {
        let plain_types = python_function(py, "fastload._torch", "PLAIN_TENSOR_TYPES")?;
        Ok(TensorViews {
            as_numpy: python_function(py, "fastload._torch", "as_numpy")?,
            resolve: python_function(py, "fastload._torch", "resolved_values")?,
            plain_types: plain_types.extract()?,
            dtypes: python_function(py, "fastload._torch", "VIEW_DTYPES")?.cast_into()?,
            storages: Vec::new(),
            viewed: Vec::new(),
            to_dlpack: python_function(py, "torch.utils.dlpack", "to_dlpack")?,
            inference_mode: python_function(py, "torch", "is_inference_mode_enabled")?
                .call0()?
                .is_truthy()?,
        })
    }

    /// [`TensorViews::view`] of a destination, or `None` where torch must copy it or
    /// `_torch.TorchCopies` refuse it, as torch refuses to write it in place: an inference
    /// tensor outside inference mode, or one whose elements may share memory (`expand`,
    /// `as_strided`). A view would write either silently.
    pub fn destination_view(
        &mut self,
        tensor: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyUntypedArray>>> {
        let Some(view) = self.view(tensor)? else {
            return Ok(None);
        };
        // A contiguous view, the common case, cannot overlap itself.
        if !is_c_contiguous(&view) && view_of(&view).may_self_overlap() {
            return Ok(None);
        }
        if !self.inference_mode
            && tensor
                .call_method0(intern!(tensor.py(), "is_inference"))?
                .is_truthy()?
        {
            return Ok(None);
        }
        Ok(Some(view))
    }

    /// The values of a CPU tensor that has no NumPy view as it is (a conjugate or negative
    /// view) as a new array, with the bytes they were read from; `None` for a tensor torch
    /// must copy itself.
    pub fn resolved_values(
        &self,
        tensor: &Bound<'py, PyAny>,
    ) -> PyResult<Option<(Bound<'py, PyUntypedArray>, Range<usize>)>> {
        let resolved = self.resolve.call1((tensor,))?;
        if resolved.is_none() {
            return Ok(None);
        }
        let (values, start, end): (Bound<'py, PyAny>, usize, usize) = resolved.extract()?;
        Ok(Some((values.cast_into()?, start..end)))
    }

    /// What `_torch.as_numpy` makes of `tensor`: its view where it has one.
    fn view_by_python(
        &mut self,
        tensor: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyUntypedArray>>> {
        let view = self.as_numpy.call1((tensor,))?.cast_into().ok();
        // A view of no elements has memory of NumPy's own, which nothing is written to.
        if let Some(view) = view.as_ref().filter(|view| view_of(view).nbytes() > 0) {
            self.viewed.push((tensor.clone(), view_of(view).addr));
        }
        Ok(view)
    }

    /// A writeable NumPy view of `tensor`'s memory, or `None` where torch must copy it
    /// (on a GPU, a conjugate or negative view, a dtype NumPy lacks, a lazy parameter).
    pub fn view(
        &mut self,
        tensor: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyUntypedArray>>> {
        let ty = tensor.get_type();
        if !self.plain_types.iter().any(|plain| ty.is(plain)) {
            return self.view_by_python(tensor);
        }
        let py = tensor.py();
        let method = |name| tensor.call_method0(name);
        let Some(dtype) = self
            .dtypes
            .get_item(tensor.getattr(intern!(py, "dtype"))?)?
        else {
            return Ok(None);
        };
        let dtype = dtype.cast_into::<PyArrayDescr>()?;
        // Only complex tensors can be conjugate views; any can be a negative one.
        if (dtype.kind() == b'c' && method(intern!(py, "is_conj"))?.is_truthy()?)
            || method(intern!(py, "is_neg"))?.is_truthy()?
        {
            return Ok(None);
        }
        let Some(memory) = dlpack_view(&self.to_dlpack, tensor, dtype)? else {
            return self.view_by_python(tensor);
        };
        // The capsule holds the tensor, not its memory, which `p.data = ...` can replace.
        self.storages.push(memory.storage);
        self.viewed.push((tensor.clone(), memory.address));
        Ok(Some(memory.view))
    }
}

/// A CPU tensor's memory: a view of it, the storage it lies in, its first address.
struct TensorMemory<'py> {
    view: Bound<'py, PyUntypedArray>,
    storage: Bound<'py, PyAny>,
    address: usize,
}

/// A writeable NumPy view of a CPU tensor's memory, as its DLPack capsule describes it.
/// The tensor is the view's base, as with `Tensor.numpy()`: its owner, whose version
/// counter autograd reads. Unlike `Tensor.numpy()`, the storage stays resizable (FSDP
/// frees parameters so; observers resize their empty buffers): the view is for one load
/// or save, during which the caller keeps the storage alive. `None` where the capsule
/// describes no such view: torch refuses one for sparse and meta tensors (and older
/// releases for float8 ones), on a GPU, for no elements (a null address), and where the
/// storage was freed or shrunk.
fn dlpack_view<'py>(
    to_dlpack: &Bound<'py, PyAny>,
    tensor: &Bound<'py, PyAny>,
    dtype: Bound<'py, PyArrayDescr>,
) -> PyResult<Option<TensorMemory<'py>>> {
    let py = tensor.py();
    let capsule = match to_dlpack.call1((tensor,)) {
        Ok(capsule) => capsule,
        Err(err) if err.is_instance_of::<PyException>(py) => return Ok(None),
        Err(err) => return Err(err),
    };
    let Some(layout) = dlpack::layout(&capsule, dtype.itemsize()) else {
        return Ok(None);
    };
    if layout.address == 0 {
        return Ok(None); // NumPy would allocate memory of its own for a null pointer
    }
    let storage = tensor.call_method0(intern!(py, "untyped_storage"))?;
    let extent = ArrayView {
        addr: layout.address,
        shape: layout.shape.iter().map(|&n| n as usize).collect(),
        strides: layout.byte_strides.iter().copied().collect(),
        itemsize: dtype.itemsize(),
        owner: None,
    };
    if !holds(&storage, &extent)? {
        return Ok(None);
    }
    // SAFETY: the address, shape and strides are the tensor's own and lie inside its
    // storage, which the caller keeps alive while the view is used.
    let view = unsafe {
        array_over(
            tensor,
            dtype,
            &layout.shape,
            Some(&layout.byte_strides),
            layout.address,
            NPY_ARRAY_WRITEABLE,
        )
    }?;
    Ok(Some(TensorMemory {
        view,
        storage,
        address: layout.address,
    }))
}

/// [`dlpack_view`] of a CPU tensor, as NumPy dtype `dtype` (`_torch.as_numpy`'s view).
#[pyfunction]
pub fn tensor_view<'py>(
    tensor: &Bound<'py, PyAny>,
    dtype: Bound<'py, PyArrayDescr>,
) -> PyResult<Option<Bound<'py, PyUntypedArray>>> {
    let to_dlpack = python_function(tensor.py(), "torch.utils.dlpack", "to_dlpack")?;
    Ok(dlpack_view(&to_dlpack, tensor, dtype)?.map(|memory| memory.view))
}

/// Whether `storage` (a tensor's `untyped_storage()`) holds every byte of `view`.
fn holds(storage: &Bound<'_, PyAny>, view: &ArrayView) -> PyResult<bool> {
    let Some(span) = view.byte_span() else {
        return Ok(true);
    };
    let py = storage.py();
    let start: usize = storage.call_method0(intern!(py, "data_ptr"))?.extract()?;
    let len: usize = storage.call_method0(intern!(py, "nbytes"))?.extract()?;
    Ok(start <= span.start && span.end <= start.saturating_add(len))
}

/// How many of the tensors viewed for a load no longer start where their views do: code
/// of the user's that the walk ran resized their storage (which frees the memory viewed)
/// or gave them other memory.
pub fn moved_tensors(viewed: &[(Bound<'_, PyAny>, usize)]) -> usize {
    let starts_at = |tensor: &Bound<'_, PyAny>| {
        let address = tensor.call_method0(intern!(tensor.py(), "data_ptr"));
        address.and_then(|address| address.extract::<usize>()).ok()
    };
    viewed
        .iter()
        .filter(|(tensor, address)| starts_at(tensor) != Some(*address))
        .count()
}
