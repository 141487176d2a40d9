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
use std::ops::Range;

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

/// Destinations in host memory that both the plan and torch write: checked apart from
/// the plan's own, since the two are copied apart (torch's last). The same memory viewed
/// alike is a tied parameter, whose sources must give the same value; any other overlap
/// is refused, since torch's copy would not keep the walk's order.
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
    let mut spans: Vec<(Range<usize>, usize)> = (views.iter().enumerate())
        .filter_map(|(leaf, view)| Some((view.byte_span()?, leaf)))
        .collect();
    spans.sort_unstable_by_key(|(span, _)| span.start);
    let mut problems = Vec::new();
    for (index, position, path, addr, shape, strides, itemsize) in destinations {
        let view = ArrayView {
            addr,
            shape: shape.into(),
            strides: strides.into(),
            itemsize,
            owner: None,
        };
        let Some(span) = view.byte_span() else {
            continue;
        };
        let below = spans.partition_point(|(other, _)| other.start < span.end);
        let mut overlapping = (spans[..below].iter()).filter(|(other, _)| other.end > span.start);
        let verdict: Option<String> = match overlapping.next() {
            None => None,
            Some(&(_, leaf)) if views[leaf] == view && overlapping.next().is_none() => {
                let (dst, src) = &leaf_arrays[leaf];
                let tie_with_core = intern!(torch_copies.py(), "tie_with_core");
                (torch_copies.call_method1(tie_with_core, (index, dst, src))?).extract()?
            }
            Some(_) => Some(
                python_function(torch_copies.py(), "fastload._torch", "_UNORDERED")?.extract()?,
            ),
        };
        if let Some(message) = verdict {
            problems.push((position, Problem::new(ProblemKind::Leaf, path, message)));
        }
    }
    Ok(problems)
}
