//! A tensor's memory layout read from its DLPack capsule (`torch.utils.dlpack.to_dlpack`):
//! the address, device, shape and strides that would otherwise take a call into torch
//! each.
//!
//! The capsule is the legacy, unversioned kind (named `dltensor`), which holds a
//! `DLManagedTensor` whose first field is a `DLTensor`; torch frees it when the capsule
//! is dropped unconsumed. Anything else is left to torch's own copy.

use numpy::npyffi::npy_intp;
use pyo3::ffi;
use pyo3::prelude::*;
use smallvec::SmallVec;
use std::os::raw::{c_char, c_void};

/// `DLTensor` of `dlpack.h`.
#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device_type: i32,
    device_id: i32,
    ndim: i32,
    dtype_code: u8,
    dtype_bits: u8,
    dtype_lanes: u16,
    shape: *const i64,
    strides: *const i64,
    byte_offset: u64,
}

const CAPSULE_NAME: &[u8] = b"dltensor\0";
/// `kDLCPU`.
const CPU: i32 = 1;

/// Where a CPU tensor's elements lie, as NumPy takes them.
pub struct Layout {
    /// The first element's address.
    pub address: usize,
    pub shape: SmallVec<[npy_intp; 4]>,
    pub byte_strides: SmallVec<[npy_intp; 4]>,
}

/// The layout described by a `dltensor` capsule of a CPU tensor of `itemsize`-byte
/// elements; `None` for another device, another element size, or anything else.
pub fn layout(capsule: &Bound<'_, PyAny>, itemsize: usize) -> Option<Layout> {
    // SAFETY: a live object; `PyCapsule_GetPointer` checks that it is a capsule of this
    // name, and gives null (with an error set, cleared below) if not.
    let pointer = unsafe {
        ffi::PyCapsule_GetPointer(capsule.as_ptr(), CAPSULE_NAME.as_ptr() as *const c_char)
    };
    if pointer.is_null() {
        drop(PyErr::take(capsule.py()));
        return None;
    }
    // SAFETY: a `dltensor` capsule points to a `DLManagedTensor`, which starts with its
    // `DLTensor`, alive (shape and strides included) while the capsule is.
    let tensor = unsafe { &*(pointer as *const DLTensor) };
    let ndim = usize::try_from(tensor.ndim).ok()?;
    let one_element = tensor.dtype_lanes == 1 && usize::from(tensor.dtype_bits) == itemsize * 8;
    let described = ndim == 0 || !(tensor.shape.is_null() || tensor.strides.is_null());
    if tensor.device_type != CPU || !one_element || !described {
        return None;
    }
    let (shape, strides): (&[i64], &[i64]) = match ndim {
        0 => (&[], &[]),
        // SAFETY: `ndim` entries each, per the DLPack contract.
        _ => unsafe {
            (
                std::slice::from_raw_parts(tensor.shape, ndim),
                std::slice::from_raw_parts(tensor.strides, ndim),
            )
        },
    };
    let itemsize = npy_intp::try_from(itemsize).ok()?;
    Some(Layout {
        address: (tensor.data as usize).checked_add(usize::try_from(tensor.byte_offset).ok()?)?,
        shape: shape.iter().map(|&n| n as npy_intp).collect(),
        byte_strides: strides.iter().map(|&s| s as npy_intp * itemsize).collect(),
    })
}
