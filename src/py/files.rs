//! safetensors files: mapped into memory and read as NumPy arrays without a copy, and
//! written crash-safely (a temporary file in the same folder, fsync, then a rename).

use super::array::{array_over, data_address};
use super::python_function;
use crate::core::checkpoint::{describe, read_header};
use memmap2::{Mmap, MmapOptions};
use numpy::npyffi;
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyIsADirectoryError, PyOSError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use safetensors::tensor::{Dtype, Metadata, TensorInfo};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// A file mapped read-only; the arrays viewing it hold it as their base.
#[pyclass(frozen, module = "fastload._fastload")]
pub struct MappedFile {
    map: Mmap,
}

/// The arrays and the metadata of a safetensors file, in the file's order.
type FileContents<'py> = (
    Vec<(String, Bound<'py, PyAny>)>,
    Option<HashMap<String, String>>,
);

/// Maps `path` and checks its header (every check of the safetensors format: lengths,
/// JSON, offsets, dtype and shape against byte length) before any array is made. Pages
/// fault in as a copy first reads them, on its threads and alongside its reading: that
/// measured faster than mapping every page up front (`MADV_POPULATE_READ`).
#[pyfunction]
pub fn read_safetensors<'py>(py: Python<'py>, path: PathBuf) -> PyResult<FileContents<'py>> {
    // Asked before opening: opening a FIFO for reading waits for a writer.
    let is_file = std::fs::metadata(&path).map(|meta| meta.is_file());
    if let Ok(false) = is_file {
        return Err(file_error(py, &path, "not a regular file"));
    }
    let file = File::open(&path).map_err(|e| file_error(py, &path, &e.to_string()))?;
    let meta = file
        .metadata()
        .map_err(|e| file_error(py, &path, &e.to_string()))?;
    if !meta.is_file() {
        return Err(file_error(py, &path, "not a regular file"));
    }
    let len = meta.len();
    if len < 8 {
        return Err(file_error(
            py,
            &path,
            &format!("the file is {len} bytes long, too short for a header"),
        ));
    }
    // SAFETY: the map is read-only. A file changed by another process while mapped is
    // outside what a load can guard against (documented).
    let map = unsafe { MmapOptions::new().map(&file) }
        .map_err(|e| file_error(py, &path, &e.to_string()))?;
    let header = read_header(&map).map_err(|reason| file_error(py, &path, &reason))?;
    let mapped = Bound::new(py, MappedFile { map })?;
    let start = mapped.get().map.as_ptr() as usize;
    let dtype_of = python_function(py, "fastload._files", "numpy_dtype")?;
    // A checkpoint has a few dtypes and many tensors: each dtype is looked up once.
    let mut descrs: Vec<(Dtype, Bound<'py, PyArrayDescr>)> = Vec::new();
    let mut arrays = Vec::with_capacity(header.entries.len());
    for entry in header.entries {
        let descr = match descrs.iter().find(|(dtype, _)| *dtype == entry.dtype) {
            Some((_, descr)) => descr.clone(),
            None => {
                let descr = dtype_of
                    .call1((format!("{:?}", entry.dtype),))
                    .map_err(|e| file_error(py, &path, &format!("tensor {:?}: {e}", entry.name)))?
                    .cast_into::<PyArrayDescr>()?;
                descrs.push((entry.dtype, descr.clone()));
                descr
            }
        };
        // NumPy refuses some shapes the format allows (no elements, yet a dimension of
        // 2^62): a problem of the file, not of the call.
        let array = mapped_array(&mapped, descr, &entry.shape, start + entry.bytes.start)
            .map_err(|e| file_error(py, &path, &format!("tensor {:?}: {e}", entry.name)))?;
        arrays.push((entry.name, array));
    }
    Ok((arrays, header.metadata))
}

/// A read-only C-contiguous array over `addr`, inside the mapped file `base`.
fn mapped_array<'py>(
    base: &Bound<'py, MappedFile>,
    descr: Bound<'py, PyArrayDescr>,
    shape: &[usize],
    addr: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let dims: Vec<npyffi::npy_intp> = shape.iter().map(|&n| n as npyffi::npy_intp).collect();
    // SAFETY: `addr` lies inside the map (the header's offsets were validated against the
    // file's length); the array is read-only, and holds the map alive as its base.
    let array = unsafe {
        array_over(
            base.as_any(),
            descr,
            &dims,
            None,
            addr,
            npyffi::NPY_ARRAY_C_CONTIGUOUS,
        )
    };
    Ok(array?.into_any())
}

/// Writes `tensors` (C-contiguous arrays, with their safetensors dtype names) and
/// `metadata` as a safetensors file at `path`. The bytes go to a temporary file in the
/// same folder, which is flushed to disk and then renamed over `path`, so that `path`
/// holds either its old content or the whole new file, whatever happens.
///
/// With `rename=False` the flushed file stays under its temporary name, which is
/// returned: a sharded save renames its shards only once all of them are written.
///
/// A header longer than `max_header` bytes (safetensors reads none longer) is refused
/// before any file is made.
///
/// `progress(bytes_done, bytes_total)` is called every 64 MiB written, where Ctrl-C is
/// checked too, and Ctrl-C once more after the flush: an interrupted save leaves `path` as
/// it was. With `kept`, the flushed file is not renamed, but kept under its temporary name,
/// which is appended to `kept` (see [`finish`]).
#[pyfunction]
#[pyo3(signature = (path, tensors, metadata, progress, max_header, kept = None))]
pub fn write_safetensors(
    py: Python<'_>,
    path: PathBuf,
    tensors: &Bound<'_, PyList>,
    metadata: Option<HashMap<String, String>>,
    progress: Option<Bound<'_, PyAny>>,
    max_header: usize,
    kept: Option<&Bound<'_, PyList>>,
) -> PyResult<()> {
    let mut infos = Vec::with_capacity(tensors.len());
    let mut chunks: Vec<(usize, usize)> = Vec::with_capacity(tensors.len());
    let mut offset = 0;
    let mut keep = Vec::with_capacity(tensors.len());
    for item in tensors.iter() {
        let (name, dtype, array): (String, String, Bound<'_, PyUntypedArray>) = item.extract()?;
        let dtype = parse_dtype(&dtype)?;
        let nbytes = array.len() * array.dtype().itemsize();
        if !array.is_c_contiguous() {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "tensor {name:?} is not C-contiguous"
            )));
        }
        chunks.push((data_address(&array), nbytes));
        let info = TensorInfo {
            dtype,
            shape: array.shape().to_vec(),
            data_offsets: (offset, offset + nbytes),
        };
        offset += nbytes;
        infos.push((name, info));
        keep.push(array);
    }
    let header = Metadata::new(metadata, infos)
        .and_then(|m| Ok(serde_json::to_string(&m)?))
        .map_err(|e| file_error(py, &path, &describe(&e)))?;
    let mut head = header.into_bytes();
    head.resize(head.len().next_multiple_of(8), b' ');
    if head.len() > max_header {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{}: the header (tensor names, shapes and metadata) would be {} bytes, more \
             than the {max_header} that safetensors reads; save fewer entries or less \
             metadata, or shard the checkpoint",
            path.display(),
            head.len()
        )));
    }
    let mut prefix = (head.len() as u64).to_le_bytes().to_vec();
    prefix.extend(head);
    let progress = progress.map(Bound::unbind);
    let mut tick = |done: usize, total: usize| {
        Python::attach(|py| {
            py.check_signals()?;
            match &progress {
                Some(report) => report.bind(py).call1((done, total)).map(drop),
                None => Ok(()),
            }
        })
    };
    // The arrays stay alive (`keep`) while the GIL is released for the write.
    let temp = py.detach(|| write_temporary(&path, &prefix, &chunks, &mut tick));
    drop(keep);
    finish(py, temp?, &path, kept)
}

/// Writes `bytes` to `path` crash-safely, as `write_safetensors` does (for an index),
/// and likewise keeps the flushed file under its temporary name with `kept`.
#[pyfunction]
#[pyo3(signature = (path, bytes, kept = None))]
pub fn write_raw(
    py: Python<'_>,
    path: PathBuf,
    bytes: &Bound<'_, PyBytes>,
    kept: Option<&Bound<'_, PyList>>,
) -> PyResult<()> {
    let bytes = bytes.as_bytes();
    let temp = py.detach(|| write_temporary(&path, bytes, &[], &mut |_, _| Ok(())))?;
    finish(py, temp, &path, kept)
}

/// Renames the flushed `temp` over `path` ([`persist`]), or keeps it under its temporary
/// name, appended to `kept`: in the same call, so that no Ctrl-C can come between the two
/// and leave a file the caller does not know of. A Ctrl-C during the flush is honoured
/// first, removing `temp`.
fn finish(
    py: Python<'_>,
    temp: NamedTempFile,
    path: &Path,
    kept: Option<&Bound<'_, PyList>>,
) -> PyResult<()> {
    py.check_signals()?;
    match kept {
        None => py.detach(|| persist(temp, path)),
        Some(kept) => {
            let (_, name) = temp.keep().map_err(|e| write_error(path, e.error))?;
            kept.append(name)
        }
    }
}

/// Renames each flushed temporary file over its path, then flushes their folders: a
/// sharded checkpoint's shards, then its index. In one call, which Ctrl-C does not cut
/// short (it is raised once all are renamed): a save is either interrupted before its
/// first rename, leaving the old checkpoint whole, or done.
#[pyfunction]
pub fn rename_all(py: Python<'_>, renames: Vec<(PathBuf, PathBuf)>) -> PyResult<()> {
    py.detach(|| {
        // Every rename must be able to succeed before the first is done: a folder (or a
        // device) in the way would fail one midway, the old checkpoint half replaced.
        for (_, path) in &renames {
            match std::fs::symlink_metadata(path) {
                Ok(found) if found.is_dir() => {
                    return Err(PyIsADirectoryError::new_err(format!(
                        "{}: is a folder; save writes a file",
                        path.display()
                    )))
                }
                Ok(found) if !found.is_file() && !found.is_symlink() => {
                    return Err(PyOSError::new_err(format!(
                        "{}: is not a regular file (a device or a pipe); save writes one",
                        path.display()
                    )))
                }
                _ => {}
            }
        }
        for (temporary, path) in &renames {
            std::fs::rename(temporary, path).map_err(|e| write_error(path, e))?;
        }
        let mut folders: Vec<&Path> = renames.iter().map(|(_, path)| folder_of(path)).collect();
        folders.dedup();
        for folder in folders {
            File::open(folder)
                .and_then(|f| f.sync_all())
                .map_err(|e| write_error(folder, e))?;
        }
        Ok(())
    })
}

/// Bytes written between two calls of a save's progress.
const PIECE: usize = 64 << 20;

/// `prefix`, then each `(address, length)` chunk of memory, into a temporary file in
/// `path`'s folder, flushed to disk. `tick(done, total)` runs between pieces; its error
/// abandons the temporary file (dropping it removes it).
fn write_temporary(
    path: &Path,
    prefix: &[u8],
    chunks: &[(usize, usize)],
    tick: &mut dyn FnMut(usize, usize) -> PyResult<()>,
) -> PyResult<NamedTempFile> {
    let failed = |e: std::io::Error| write_error(path, e);
    let mut builder = tempfile::Builder::new();
    builder.prefix(".fastload-").suffix(".tmp");
    // A temporary file is the owner's alone; the checkpoint it becomes gets what `open`
    // gives a new file under the process's umask.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let temp = builder.tempfile_in(folder_of(path)).map_err(failed)?;
    // A file saved over keeps its permissions (a private checkpoint stays private), as
    // one written in place by `open` would.
    if let Some(old) = std::fs::metadata(path).ok().filter(|old| old.is_file()) {
        temp.as_file()
            .set_permissions(old.permissions())
            .map_err(failed)?;
    }
    let total = prefix.len() + chunks.iter().map(|c| c.1).sum::<usize>();
    let mut done = 0;
    let mut ticked = 0; // `done` at the last tick: ticks come every PIECE bytes, of any arrays
    {
        let mut out = BufWriter::with_capacity(1 << 20, temp.as_file());
        out.write_all(prefix).map_err(failed)?;
        done += prefix.len();
        for &(addr, len) in chunks.iter().filter(|c| c.1 > 0) {
            // SAFETY: each chunk is the whole memory of a C-contiguous array kept alive by
            // the caller for the duration of the write.
            let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
            for piece in bytes.chunks(PIECE) {
                out.write_all(piece).map_err(failed)?;
                done += piece.len();
                if done - ticked >= PIECE && done < total {
                    tick(done, total)?;
                    ticked = done;
                }
            }
        }
        out.flush().map_err(failed)?;
    }
    tick(total, total)?;
    temp.as_file().sync_all().map_err(failed)?;
    Ok(temp)
}

/// Renames the flushed `temp` over `path`, durably.
fn persist(temp: NamedTempFile, path: &Path) -> PyResult<()> {
    temp.persist(path).map_err(|e| write_error(path, e.error))?;
    // The rename itself is durable once the folder is flushed too.
    File::open(folder_of(path))
        .and_then(|f| f.sync_all())
        .map_err(|e| write_error(path, e))
}

/// The folder `path` is in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn write_error(path: &Path, e: std::io::Error) -> PyErr {
    PyOSError::new_err(format!("{}: cannot write: {e}", path.display()))
}

fn parse_dtype(name: &str) -> PyResult<Dtype> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!("no safetensors dtype is named {name}"))
    })
}

/// A `LoadError` naming the file and what is wrong with it.
fn file_error(py: Python<'_>, path: &Path, reason: &str) -> PyErr {
    let shown = path.display().to_string();
    let message = format!("1 problem; nothing was loaded:\n  {shown}: {reason}");
    match python_function(py, "fastload.errors", "LoadError")
        .and_then(|class| class.call1((message, vec![(shown, reason.to_owned())])))
    {
        Ok(error) => PyErr::from_value(error),
        Err(error) => error,
    }
}
