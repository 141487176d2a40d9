//! Leaves that torch copies (`fastload._torch.TorchCopies`): tensors on a GPU, conjugate
//! views, dtypes NumPy lacks. They are checked during the walk like any leaf and copied
//! by torch only once the whole load has passed its checks.

use super::array::view_of;
use super::kinds::ArrayLeaf;
use super::python_function;
use super::walk::{LeafArrays, Walker};
use crate::core::{ArrayView, Problem, ProblemKind};
use pyo3::intern;
use pyo3::prelude::*;
use rustc_hash::FxHashMap;

impl<'py> Walker<'py> {
    /// A destination tensor that torch copies into.
    pub(super) fn load_torch(
        &mut self,
        dst: &Bound<'py, PyAny>,
        src: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        match self.classifier.as_array(src)? {
            Some(ArrayLeaf::NumPy(array)) => self.plan_torch(dst, Some(array.as_any())),
            Some(ArrayLeaf::Torch(tensor)) => self.plan_torch(dst, Some(&tensor)),
            None => {
                match self.classifier.as_bool(src)? {
                    Some(false) => return self.plan_torch(dst, None),
                    Some(true) => self.refuse_true(),
                    None => self.refuse_non_array(src),
                }
                Ok(())
            }
        }
    }

    /// Plans `dst <- src` (zeros for `None`) where torch copies: one of them is such a
    /// tensor.
    pub(super) fn plan_torch(
        &mut self,
        dst: &Bound<'py, PyAny>,
        src: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        let copies = match &self.out.torch_copies {
            Some(copies) => copies.clone(),
            None => {
                let class = python_function(self.py, "fastload._torch", "TorchCopies")?;
                let copies = class.call1((self.casting_name.as_str(),))?;
                self.out.torch_copies = Some(copies.clone());
                copies
            }
        };
        let (path, position) = (self.path_text(), self.out.problems.len());
        let problem: Option<(u8, String)> = copies
            .call_method1(intern!(self.py, "add"), (dst, src, path, position))?
            .extract()?;
        if let Some((kind, message)) = problem {
            let kind = match kind {
                1 => ProblemKind::Shape,
                _ => ProblemKind::Leaf,
            };
            self.problem(kind, message);
        }
        Ok(())
    }
}

/// Parameters tied between a leaf of the plan and one torch copies (the same memory,
/// viewed alike): checked apart from the plan's own ties, since the two are copied apart
/// (torch's last). Their sources must give the same value, as any tie's; the same memory
/// viewed as another dtype is refused, since torch's copy would not keep walk order.
pub fn ties_across_torch(
    leaf_arrays: &LeafArrays<'_>,
    torch_copies: &Bound<'_, PyAny>,
) -> PyResult<Vec<(usize, Problem)>> {
    type Destination = (usize, usize, String, usize, Vec<usize>, Vec<isize>, usize);
    let destinations: Vec<Destination> =
        torch_copies.call_method0("host_destinations")?.extract()?;
    if destinations.is_empty() || leaf_arrays.is_empty() {
        return Ok(Vec::new());
    }
    // The plan's destinations, from the arrays themselves (its compact leaves keep none).
    let views: Vec<ArrayView> = leaf_arrays.iter().map(|(dst, _)| view_of(dst)).collect();
    let mut planned = FxHashMap::default();
    for (leaf, dst) in views.iter().enumerate() {
        let key = (dst.addr, &dst.shape[..], &dst.strides[..], dst.itemsize);
        planned.entry(key).or_insert(leaf);
    }
    let mut problems = Vec::new();
    for (index, position, path, addr, shape, strides, itemsize) in &destinations {
        let Some(&leaf) = planned.get(&(*addr, &shape[..], &strides[..], *itemsize)) else {
            continue;
        };
        let (dst, src) = &leaf_arrays[leaf];
        let tie_with_core = intern!(torch_copies.py(), "tie_with_core");
        let verdict: Option<String> = torch_copies
            .call_method1(tie_with_core, (*index, dst, src))?
            .extract()?;
        if let Some(message) = verdict {
            let problem = Problem::new(ProblemKind::Leaf, path.clone(), message);
            problems.push((*position, problem));
        }
    }
    Ok(problems)
}
