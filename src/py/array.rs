//! NumPy arrays as the core sees them: address, shape, strides, dtype and flags.

use crate::core::{ArrayView, Scalar};
use numpy::npyffi::{self, NPY_TYPES};
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::type_object::PyTypeInfo;
use smallvec::SmallVec;
use std::num::NonZeroUsize;

/// What a dtype is, for the rules of the leaf table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtypeClass {
    /// `object`: never copied.
    Object,
    /// Fixed-width strings, bytes and structured records: copied only to the same dtype.
    Flexible,
    /// Numbers, bools, dates, and user types such as `ml_dtypes.bfloat16`.
    Numeric,
}

pub fn dtype_class(descr: &Bound<'_, PyArrayDescr>) -> DtypeClass {
    let num = descr.num();
    if num == NPY_TYPES::NPY_OBJECT as i32 || descr.has_object() {
        DtypeClass::Object
    } else if num == NPY_TYPES::NPY_STRING as i32
        || num == NPY_TYPES::NPY_UNICODE as i32
        || num == NPY_TYPES::NPY_VOID as i32
    {
        DtypeClass::Flexible
    } else {
        DtypeClass::Numeric
    }
}

/// The native element type of a dtype, if the kernels convert it.
pub fn scalar_of(descr: &Bound<'_, PyArrayDescr>) -> Option<Scalar> {
    if descr.is_native_byteorder() == Some(false) || descr.has_fields() || descr.has_subarray() {
        return None;
    }
    let scalar = match (descr.kind(), descr.itemsize()) {
        (b'b', 1) => Scalar::Bool,
        (b'i', 1) => Scalar::I8,
        (b'i', 2) => Scalar::I16,
        (b'i', 4) => Scalar::I32,
        (b'i', 8) => Scalar::I64,
        (b'u', 1) => Scalar::U8,
        (b'u', 2) => Scalar::U16,
        (b'u', 4) => Scalar::U32,
        (b'u', 8) => Scalar::U64,
        (b'f', 2) => Scalar::F16,
        (b'f', 4) => Scalar::F32,
        (b'f', 8) => Scalar::F64,
        (_, 2) if descr.num() >= NPY_TYPES::NPY_USERDEF as i32 => {
            let name = descr.typeobj().name().ok()?.extract::<String>().ok()?;
            if name != "bfloat16" {
                return None;
            }
            Scalar::BF16
        }
        _ => return None,
    };
    Some(scalar)
}

/// A key that is equal for equivalent dtypes, for recognising tied parameters.
pub fn dtype_key(descr: &Bound<'_, PyArrayDescr>) -> u64 {
    if descr.num() == NPY_TYPES::NPY_VOID as i32 {
        // Records: equal dtypes hash alike (NumPy makes a new dtype object for each
        // `np.dtype([...])`); one that cannot be hashed is only its very own object.
        return match descr.hash() {
            Ok(hash) => (hash as u64) ^ ((descr.itemsize() as u64) << 48),
            Err(_) => descr.as_dtype_ptr() as u64,
        };
    }
    if matches!(descr.kind(), b'M' | b'm') {
        // Dates and durations differ by unit, which only the dtype's text shows.
        let mut hasher = rustc_hash::FxHasher::default();
        std::hash::Hash::hash(&dtype_text(descr), &mut hasher);
        return std::hash::Hasher::finish(&hasher);
    }
    let order = match descr.is_native_byteorder() {
        Some(false) => 1,
        _ => 0,
    };
    ((descr.num() as u64) << 40) | ((descr.itemsize() as u64) << 8) | order
}

/// The core's view of an array's memory.
///
/// Called for every array of a load, so the array's fields are read once, in place.
#[inline(always)]
pub fn view_of(array: &Bound<'_, PyUntypedArray>) -> ArrayView {
    view_with_itemsize(array, descr_of(array).itemsize())
}

/// [`view_of`] for an array whose dtype's item size the caller knows.
#[inline(always)]
pub fn view_with_itemsize(array: &Bound<'_, PyUntypedArray>, itemsize: usize) -> ArrayView {
    // SAFETY: `array` is a live ndarray, so its fields are initialised, and its shape and
    // strides hold `nd` entries each; a 0-d array may have null pointers there instead.
    let (fields, shape, strides) = unsafe {
        let fields = &*npyffi::_PyArray_GET_ITEM_DATA(array.as_array_ptr());
        match fields.nd.max(0) as usize {
            0 => (fields, &[][..], &[][..]),
            nd => (
                fields,
                std::slice::from_raw_parts(fields.dimensions as *const usize, nd),
                std::slice::from_raw_parts(fields.strides as *const isize, nd),
            ),
        }
    };
    let owner = if fields.base.is_null() {
        let owns = fields.flags & npyffi::NPY_ARRAY_OWNDATA != 0;
        NonZeroUsize::new(array.as_ptr() as usize).filter(|_| owns)
    } else {
        owner_of(array)
    };
    ArrayView {
        addr: fields.data as usize,
        shape: small_copy(shape),
        strides: small_copy(strides),
        itemsize,
        owner,
    }
}

/// `values` as a `SmallVec`, built in place while they fit inline (the common case, where
/// a bulk copy would cost more than the elements).
#[inline(always)]
fn small_copy<T: Copy + Default>(values: &[T]) -> SmallVec<[T; 2]> {
    match *values {
        [] => SmallVec::new(),
        [a] => SmallVec::from_buf_and_len([a, T::default()], 1),
        [a, b] => SmallVec::from_buf([a, b]),
        _ => SmallVec::from_slice(values),
    }
}

/// The ndarray that allocated this array's memory, found through its chain of bases, as
/// an id; `None` when the memory comes from elsewhere (a buffer, a memory map, C code),
/// where any two arrays may share bytes.
fn owner_of(array: &Bound<'_, PyUntypedArray>) -> Option<NonZeroUsize> {
    let py = array.py();
    let mut at = array.as_array_ptr();
    loop {
        // SAFETY: `at` is a live ndarray: `array` itself, or a base it holds a reference
        // to (a base lives as long as the arrays viewing it).
        let fields = unsafe { &*npyffi::_PyArray_GET_ITEM_DATA(at) };
        if fields.base.is_null() {
            let owns = fields.flags & npyffi::NPY_ARRAY_OWNDATA != 0;
            return NonZeroUsize::new(at as usize).filter(|_| owns);
        }
        // SAFETY: `fields.base` is a live object (see above).
        if unsafe { npyffi::PyArray_Check(py, fields.base) } == 0 {
            return None;
        }
        at = fields.base as *mut npyffi::PyArrayObject;
    }
}

/// The object that is not an ndarray at the end of an array's chain of bases (a tensor,
/// a buffer), if any.
pub fn memory_owner<'py>(array: &Bound<'py, PyUntypedArray>) -> Option<Bound<'py, PyAny>> {
    let mut at = array.clone().into_any();
    loop {
        let base = at.cast::<PyUntypedArray>().ok()?;
        // SAFETY: `base` is a live ndarray, so its fields are initialised.
        let next = unsafe { (*npyffi::_PyArray_GET_ITEM_DATA(base.as_array_ptr())).base };
        if next.is_null() {
            return None;
        }
        // SAFETY: an ndarray holds a reference to its base, which is alive while it is.
        let next = unsafe { Bound::from_borrowed_ptr(array.py(), next) };
        if next.cast::<PyUntypedArray>().is_err() {
            return Some(next);
        }
        at = next;
    }
}

/// An array's dtype, borrowed from the array without touching reference counts.
pub fn descr_of<'a, 'py>(array: &'a Bound<'py, PyUntypedArray>) -> Borrowed<'a, 'py, PyArrayDescr> {
    let descr = raw_descr(array) as *mut pyo3::ffi::PyObject;
    // SAFETY: an ndarray always holds a reference to its dtype, a `PyArrayDescr`, and the
    // borrow cannot outlive the array.
    unsafe { Borrowed::from_ptr(array.py(), descr).cast_unchecked::<PyArrayDescr>() }
}

/// The address of an array's dtype object, read without taking a reference.
pub fn raw_descr(array: &Bound<'_, PyUntypedArray>) -> usize {
    // SAFETY: `array` is a live ndarray, so its fields are initialised.
    unsafe { (*npyffi::_PyArray_GET_ITEM_DATA(array.as_array_ptr())).descr as usize }
}

/// The address of an array's first element.
pub fn data_address(array: &Bound<'_, PyUntypedArray>) -> usize {
    // SAFETY: `array` is a live ndarray, so its fields are initialised.
    unsafe { (*npyffi::_PyArray_GET_ITEM_DATA(array.as_array_ptr())).data as usize }
}

pub fn is_writeable(array: &Bound<'_, PyUntypedArray>) -> bool {
    flags_of(array) & npyffi::NPY_ARRAY_WRITEABLE != 0
}

/// Whether the array allocated its memory itself (it is no view).
pub fn owns_data(array: &Bound<'_, PyUntypedArray>) -> bool {
    flags_of(array) & npyffi::NPY_ARRAY_OWNDATA != 0
}

/// Whether NumPy has found the array's elements to lie in C order with no gaps.
pub fn is_c_contiguous(array: &Bound<'_, PyUntypedArray>) -> bool {
    flags_of(array) & npyffi::NPY_ARRAY_C_CONTIGUOUS != 0
}

fn flags_of(array: &Bound<'_, PyUntypedArray>) -> std::os::raw::c_int {
    // SAFETY: `array` is a live ndarray, so its fields are initialised.
    unsafe { (*npyffi::_PyArray_GET_ITEM_DATA(array.as_array_ptr())).flags }
}

/// `(3, 4)`, `(3,)` or `()`: a shape as Python prints it.
pub fn shape_text(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `float32`: a dtype as Python prints it.
pub fn dtype_text(descr: &Bound<'_, PyArrayDescr>) -> String {
    descr
        .str()
        .and_then(|s| s.extract::<String>())
        .unwrap_or_else(|_| "?".to_owned())
}

/// A NumPy array over memory it does not own: `shape` elements of `descr` at `address`,
/// `byte_strides` apart (C order for `None`), with `flags` (`NPY_ARRAY_WRITEABLE` for a
/// writeable one), holding `base` as its base. NumPy works out its contiguity and
/// alignment.
///
/// # Safety
/// The memory must be valid for those elements, for reads (and writes, if writeable), for
/// as long as the array may be used.
pub unsafe fn array_over<'py>(
    base: &Bound<'py, PyAny>,
    descr: Bound<'py, PyArrayDescr>,
    shape: &[npyffi::npy_intp],
    byte_strides: Option<&[npyffi::npy_intp]>,
    address: usize,
    flags: std::os::raw::c_int,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let py = base.py();
    let mut dims = shape.to_vec();
    let mut strides = byte_strides.map(<[_]>::to_vec);
    let strides_ptr = strides
        .as_mut()
        .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr());
    // SAFETY: as the caller promises for the memory; `PyArray_NewFromDescr` takes the
    // dtype's reference (`into_ptr`) and `PyArray_SetBaseObject` the base's.
    unsafe {
        let array = npyffi::PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            PyUntypedArray::type_object_raw(py),
            descr.into_ptr().cast(),
            dims.len() as std::os::raw::c_int,
            dims.as_mut_ptr(),
            strides_ptr,
            address as *mut std::ffi::c_void,
            flags,
            std::ptr::null_mut(),
        );
        let array = Bound::from_owned_ptr_or_err(py, array)?;
        let owner = base.clone().into_ptr();
        if npyffi::PY_ARRAY_API.PyArray_SetBaseObject(py, array.as_ptr().cast(), owner) != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(array.cast_into_unchecked())
    }
}

/// `array` as an exact `numpy.ndarray` over the same memory: itself, or for a subclass a
/// plain view, made without its methods (`view`, `__array_finalize__`). NumPy's functions
/// called on a subclass would dispatch to its `__array_function__`: code of the user's,
/// which must not run once the plan is checked.
pub fn exact_view<'py>(array: &Bound<'py, PyUntypedArray>) -> PyResult<Bound<'py, PyUntypedArray>> {
    let py = array.py();
    let ndarray = PyUntypedArray::type_object_raw(py);
    if array.get_type_ptr() == ndarray {
        return Ok(array.clone());
    }
    // SAFETY: a live array; a view of it as an exact ndarray with its own dtype (null),
    // whose new reference `from_owned_ptr_or_err` takes.
    unsafe {
        let view = npyffi::PY_ARRAY_API.PyArray_View(
            py,
            array.as_ptr().cast(),
            std::ptr::null_mut(),
            ndarray,
        );
        Ok(Bound::from_owned_ptr_or_err(py, view)?.cast_into_unchecked())
    }
}
