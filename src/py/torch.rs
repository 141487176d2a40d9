//! Leaves that torch copies (`fastload._torch.TorchCopies`): tensors on a GPU, conjugate
//! views, dtypes NumPy lacks. They are checked during the walk like any leaf and copied
//! by torch only once the whole load has passed its checks.

use super::kinds::ArrayLeaf;
use super::python_function;
use super::walk::Walker;
use crate::core::ProblemKind;
use pyo3::intern;
use pyo3::prelude::*;

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
        let path = self.path_text();
        let problem: Option<(u8, String)> = copies
            .call_method1(intern!(self.py, "add"), (dst, src, path))?
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
