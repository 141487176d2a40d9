//! Leaves of `loadmodel`'s walk: the leaf table of SPEC section 2 and the plan entries
//! (with ties) of the arrays that pass it.

use super::array::{
    data_address, descr_of, dtype_class, dtype_key, dtype_text, exact_view, is_c_contiguous,
    is_writeable, owns_data, raw_descr, shape_text, view_of, view_with_itemsize, DtypeClass,
};
use super::casting::CastRule;
use super::kinds::{ArrayLeaf, Node};
use super::path::describe;
use super::python_function;
use super::walk::{references, LeafArrays, Walked, Walker};
use crate::core::layout::{fits, span};
use crate::core::{ArrayView, LeafCopy, Op, Plan, Problem, ProblemKind, Run, TieEntry};
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;

/// Why a conjugate or negative view is refused when the load writes its memory first: its
/// values were resolved during the walk, before any leaf is written.
const RESOLVED_TOO_EARLY: &str = "this conjugate or negative view reads memory that an \
    earlier leaf of this load writes, and is resolved before anything is written; load \
    from a resolved copy (tensor.resolve_conj().resolve_neg())";

/// A dtype's class (for the leaf table), its key (for recognising tied parameters) and
/// its item size.
#[derive(Clone, Copy)]
pub struct DtypeInfo {
    class: DtypeClass,
    tie_key: u64,
    itemsize: usize,
}

/// The common leaf, found by [`Walker::same_layout_arrays`].
pub(super) struct SameLayout<'a, 'py> {
    dst: &'a Bound<'py, PyUntypedArray>,
    src: &'a Bound<'py, PyUntypedArray>,
    dtype: DtypeInfo,
    /// Whether both arrays are C-contiguous, so that the copy is one run of bytes.
    contiguous: bool,
}

impl<'py> Walker<'py> {
    /// Two exact ndarrays with the same dtype object and shape, the destination writeable
    /// and not of object dtype: the common leaf, planned without the checks of
    /// `load_array` (which every other pair goes through).
    #[inline(always)]
    pub(super) fn same_layout_arrays<'a>(
        &mut self,
        dst: &'a Bound<'py, PyAny>,
        src: &'a Bound<'py, PyAny>,
    ) -> Option<SameLayout<'a, 'py>> {
        let dst = self.classifier.exact_array(dst)?;
        let src = self.classifier.exact_array(src)?;
        let same_dtype = raw_descr(dst) == raw_descr(src);
        if !same_dtype || !is_writeable(dst) || !same_shape(dst.shape(), src.shape()) {
            return None;
        }
        // A dtype not met before takes the general path once, which learns it.
        let dtype = self.known_dtype_info(dst)?;
        (dtype.class != DtypeClass::Object).then(|| SameLayout {
            dst,
            src,
            dtype,
            contiguous: is_c_contiguous(dst) && is_c_contiguous(src),
        })
    }

    /// Plans the common leaf (see [`Walker::same_layout_arrays`]). Two C-contiguous
    /// arrays need no layout worked out: their bytes are one run each, which is all the
    /// plan keeps of them (see [`Plan::add_compact`]). Other layouts, empty arrays, and
    /// runs that reach outside the address space (`as_strided` can claim any shape) go
    /// through [`Walker::plan_leaf`], which refuses the last.
    #[inline(always)]
    pub(super) fn plan_same_layout(&mut self, pair: SameLayout<'_, 'py>) -> PyResult<()> {
        let SameLayout {
            dst,
            src,
            dtype,
            contiguous,
        } = pair;
        let itemsize = dtype.itemsize;
        let len = dst.shape().iter().product::<usize>() * itemsize;
        let (at, src_at) = (data_address(dst), data_address(src));
        let in_memory = |addr: usize| fits(Some((addr as i128, addr as i128 + len as i128)));
        let run =
            Run::new(at, src_at, len).filter(|_| contiguous && in_memory(at) && in_memory(src_at));
        let Some(run) = run else {
            return self.plan_leaf(dst, Some(src), Op::Bytes, dtype.tie_key);
        };
        self.enter_alone_leaves();
        let alone = self.unique && !self.alone_closed() && alone(dst);
        let Walked {
            plan, leaf_arrays, ..
        } = &mut self.out;
        let entry = match alone {
            true => {
                let entry = plan.add_compact_alone(run);
                if let TieEntry::New(leaf) = entry {
                    match self.alone_leaves.last_mut() {
                        Some(leaves) if leaves.end == leaf => leaves.end += 1,
                        _ => self.alone_leaves.push(leaf..leaf + 1),
                    }
                }
                entry
            }
            false => plan.add_compact(
                run,
                dtype.tie_key,
                &|leaf| view_of(&leaf_arrays[leaf].0),
                || view_with_itemsize(dst, itemsize),
                || LeafCopy {
                    dst: view_with_itemsize(dst, itemsize),
                    src: Some(view_with_itemsize(src, itemsize)),
                    op: Op::Bytes,
                },
            ),
        };
        self.settle(entry, dst, Some(src), Op::Bytes)
    }

    /// What the walk needs of an array's dtype, worked out once per dtype object.
    fn dtype_info(&mut self, array: &Bound<'py, PyUntypedArray>) -> DtypeInfo {
        if let Some(info) = self.known_dtype_info(array) {
            return info;
        }
        let dtype = array.dtype();
        let info = DtypeInfo {
            class: dtype_class(&dtype),
            tie_key: dtype_key(&dtype),
            itemsize: dtype.itemsize(),
        };
        // The entry holds the dtype, so that its address is not reused meanwhile.
        self.dtypes.push((dtype, info));
        self.last_dtype = Some((raw_descr(array), info));
        info
    }

    /// [`Walker::dtype_info`] of a dtype met before in this walk, without Python code:
    /// working out a new one may call into Python (a date's unit is read from its text),
    /// which the common leaf's path must not (see [`Walker::child`]).
    #[inline(always)]
    fn known_dtype_info(&mut self, array: &Bound<'py, PyUntypedArray>) -> Option<DtypeInfo> {
        let descr = raw_descr(array);
        // Neighbouring leaves nearly always share their dtype.
        if let Some((_, info)) = self.last_dtype.filter(|&(last, _)| last == descr) {
            return Some(info);
        }
        let known = self
            .dtypes
            .iter()
            .find(|d| d.0.as_ptr() as usize == descr)?
            .1;
        self.last_dtype = Some((descr, known));
        Some(known)
    }

    /// A non-array leaf destination: only an array source can be a problem.
    pub(super) fn load_plain(
        &mut self,
        dst_node: &Node<'py>,
        dst: &Bound<'py, PyAny>,
        src: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        match self.classifier.as_array(src)? {
            None => return Ok(()),
            Some(ArrayLeaf::NumPy(array)) if dtype_class(&array.dtype()) == DtypeClass::Object => {
                return Ok(()); // object arrays are plain leaves
            }
            Some(_) => {}
        }
        match dst_node {
            Node::Bool(false) => {} // an inactive parameter ignores what is loaded
            Node::Bool(true) => self.problem(
                ProblemKind::Leaf,
                "Cannot load an array into a parameter that is True; only False marks an absent parameter",
            ),
            _ => {
                let message = format!("Tried to copy an array to {}; this is not allowed", describe(dst));
                self.problem(ProblemKind::Leaf, message);
            }
        }
        Ok(())
    }

    pub(super) fn load_array(
        &mut self,
        dst: &Bound<'py, PyUntypedArray>,
        src: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        let dst_dtype = dst.dtype();
        let mut src_leaf = self.classifier.as_array(src)?;
        if let Some(ArrayLeaf::Torch(tensor)) = &src_leaf {
            // A conjugate or negative view on the CPU, resolved: its leaf is then planned
            // like any other, in the tie table.
            if let Some((values, span)) = self.classifier.resolved_values(tensor)? {
                let (path, position) = (self.path_text(), self.out.problems.len());
                self.out
                    .plan
                    .read_ahead(span, path, RESOLVED_TOO_EARLY.to_owned(), position);
                src_leaf = Some(ArrayLeaf::NumPy(values));
            }
        }
        let src_array = match src_leaf {
            Some(ArrayLeaf::NumPy(array)) => Some(array),
            Some(ArrayLeaf::Torch(tensor)) => {
                if dtype_class(&dst_dtype) == DtypeClass::Object {
                    self.problem(ProblemKind::Leaf, "Tried to load a tensor into an object array; object arrays are never copied");
                } else if self.writeable(dst) {
                    self.plan_torch(dst.as_any(), Some(&tensor))?;
                }
                return Ok(());
            }
            None => None,
        };
        if dtype_class(&dst_dtype) == DtypeClass::Object {
            if let Some(src_array) = src_array {
                if dtype_class(&src_array.dtype()) != DtypeClass::Object {
                    let message = format!(
                        "Tried to load a {} array into an object array; object arrays are never copied",
                        dtype_text(&src_array.dtype())
                    );
                    self.problem(ProblemKind::Leaf, message);
                }
            }
            return Ok(());
        }
        if let Some(src_array) = src_array {
            let src_dtype = src_array.dtype();
            if dtype_class(&src_dtype) == DtypeClass::Object {
                let message = format!(
                    "Tried to load an object array into a {} array; object arrays are never copied",
                    dtype_text(&dst_dtype)
                );
                self.problem(ProblemKind::Leaf, message);
                return Ok(());
            }
            if src_array.shape() != dst.shape() {
                let message = format!(
                    "Tried to load size {} array into size {}",
                    shape_text(src_array.shape()),
                    shape_text(dst.shape())
                );
                self.problem(ProblemKind::Shape, message);
                return Ok(());
            }
            let op = match self.out.casting.decide(&src_dtype, &dst_dtype)? {
                Ok(op) => op,
                Err(message) => {
                    self.problem(ProblemKind::Leaf, message);
                    return Ok(());
                }
            };
            if self.writeable(dst) {
                let tie_key = self.dtype_info(dst).tie_key;
                self.plan_leaf(dst, Some(&src_array), op, tie_key)?;
            }
        } else if let Some(value) = self.classifier.as_bool(src)? {
            if value {
                self.refuse_true();
            } else if self.writeable(dst) {
                let tie_key = self.dtype_info(dst).tie_key;
                self.plan_leaf(dst, None, Op::Zeros, tie_key)?;
            }
        } else {
            self.refuse_non_array(src);
        }
        Ok(())
    }

    /// `True` loaded into an array.
    pub(super) fn refuse_true(&mut self) {
        self.problem(
            ProblemKind::Leaf,
            "Cannot load True into an array; only False (an absent parameter) is allowed",
        );
    }

    /// Something that is neither an array nor `False` loaded into an array.
    pub(super) fn refuse_non_array(&mut self, src: &Bound<'py, PyAny>) {
        let message = format!(
            "Tried to copy {} into an array destination; this is not allowed",
            describe(src)
        );
        self.problem(ProblemKind::Leaf, message);
    }

    fn writeable(&mut self, dst: &Bound<'py, PyUntypedArray>) -> bool {
        let writeable = is_writeable(dst);
        if !writeable {
            self.problem(ProblemKind::Leaf, "the destination array is read-only");
        }
        writeable
    }

    pub(super) fn plan_leaf(
        &mut self,
        dst: &Bound<'py, PyUntypedArray>,
        src: Option<&Bound<'py, PyUntypedArray>>,
        op: Op,
        tie_key: u64,
    ) -> PyResult<()> {
        self.enter_alone_leaves();
        let leaf = LeafCopy {
            dst: view_of(dst),
            src: src.map(view_of),
            op,
        };
        // The destination's extent is worked out once, for this check and for the plan.
        let extent = leaf.dst.extent();
        if !fits(extent) || !leaf.src.as_ref().is_none_or(|s| s.fits_in_memory()) {
            self.problem(
                ProblemKind::Leaf,
                "the array's strides reach outside the address space",
            );
            return Ok(());
        }
        let run = leaf.run();
        let Walked {
            plan, leaf_arrays, ..
        } = &mut self.out;
        let views = |leaf: usize| view_of(&leaf_arrays[leaf].0);
        let entry = plan.add_spanned(leaf, tie_key, span(extent), run, &views);
        self.settle(entry, dst, src, op)
    }

    /// Enters the leaves planned without the tie table in it, once code of the user's has
    /// run (it could hand one of their arrays back: the same array, or a view of it) or the
    /// root was met again. They are the first leaves at their addresses.
    #[inline(always)]
    fn enter_alone_leaves(&mut self) {
        if self.alone_closed() && !self.alone_leaves.is_empty() {
            self.enter_alone_leaves_now();
        }
    }

    /// Whether leaves may no longer be planned alone: code of the user's ran, or the
    /// root was met again, either of which can reach an array a second time.
    #[inline(always)]
    fn alone_closed(&self) -> bool {
        self.classifier.ran_user_code || self.root_met_again
    }

    #[cold]
    fn enter_alone_leaves_now(&mut self) {
        for leaf in std::mem::take(&mut self.alone_leaves).into_iter().flatten() {
            let dst = self.out.leaf_arrays[leaf].0.clone();
            let tie_key = self.dtype_info(&dst).tie_key;
            self.out.plan.enter_first(data_address(&dst), tie_key, leaf);
        }
    }

    /// Records where the plan put a leaf: a new parameter, or a later source of a tied one.
    #[inline(always)]
    fn settle(
        &mut self,
        entry: TieEntry,
        dst: &Bound<'py, PyUntypedArray>,
        src: Option<&Bound<'py, PyUntypedArray>>,
        op: Op,
    ) -> PyResult<()> {
        match entry {
            TieEntry::New(leaf) => {
                self.out.leaf_arrays.push((dst.clone(), src.cloned()));
                if let (Op::External, Some(src)) = (op, src) {
                    // Cast by NumPy's functions, which must not run a subclass's code.
                    let pair = (
                        exact_view(dst)?.into_any().unbind(),
                        exact_view(src)?.into_any().unbind(),
                    );
                    self.out.external.insert(leaf, pair);
                }
            }
            TieEntry::Tied { first, leaf } => {
                let LeafCopy {
                    dst: first_dst,
                    src: later,
                    ..
                } = *leaf;
                let (view, op, read) = match (op, src) {
                    (Op::External, Some(src)) => {
                        let staged =
                            self.stage(exact_view(src)?.as_any(), exact_view(dst)?.as_any())?;
                        (Some(view_of(&staged)), Op::Bytes, None)
                    }
                    _ => (later, op, src.cloned()),
                };
                self.stage_first_value(first)?;
                // Only once nothing can fail: one entry per tie check.
                self.out.tie_arrays.push(read);
                let position = self.out.problems.len();
                let path = self.path_text();
                self.out
                    .plan
                    .check_tie(first, first_dst, view, op, path, position);
            }
        }
        Ok(())
    }

    /// For a tie whose first copy NumPy casts, the first value in the destination's dtype.
    fn stage_first_value(&mut self, first: usize) -> PyResult<()> {
        let Some((dst, src)) = self.out.external.get(&first) else {
            return Ok(());
        };
        if !self.staged.insert(first) {
            return Ok(());
        }
        let (dst, src) = (dst.bind(self.py).clone(), src.bind(self.py).clone());
        let staged = self.stage(&src, &dst)?;
        self.out.plan.stage_tie_value(first, view_of(&staged));
        Ok(())
    }

    /// `src` cast by NumPy into a new array of `dst`'s dtype, kept alive with the plan.
    fn stage(
        &mut self,
        src: &Bound<'py, PyAny>,
        dst: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyUntypedArray>> {
        let staged = stage_cast(src, dst)?;
        self.out.keep_alive.push(staged.clone().into_any());
        Ok(staged)
    }
}

/// Whether no other leaf can reach `array`'s memory, given that its container is reached
/// by one path of the tree only (`Walker::unique`): the array owns that memory, and its
/// container's reference to it (the walk borrows it) is the only one. Any other array over
/// that memory (a view, the same array elsewhere, a tensor made from it) would hold a
/// reference to it. So its leaf cannot be a tie, nor overlap another.
#[inline(always)]
fn alone(array: &Bound<'_, PyUntypedArray>) -> bool {
    references(array.as_any()) == 1 && owns_data(array)
}

/// Whether two shapes are equal, compared in place: shapes are short, and a call to
/// `memcmp` costs more than the comparison.
fn same_shape(a: &[usize], b: &[usize]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// `src` cast by NumPy into a new C-contiguous array of `dst`'s dtype.
pub fn stage_cast<'py>(
    src: &Bound<'py, PyAny>,
    dst: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let stage = python_function(src.py(), "fastload._cast", "staged")?;
    Ok(stage.call1((src, dst))?.cast_into::<PyUntypedArray>()?)
}

/// Arrays that no longer match the plan made from them: code of the user's that the walk
/// ran (a property, a registered children function, a filter) resized, reshaped, retyped
/// or froze an array planned earlier. Copying by the plan would write into memory the
/// array no longer owns, or write bytes its dtype does not read as the values, so each
/// such array is a problem.
pub fn changed_arrays<'py>(
    plan: &Plan,
    leaf_arrays: &LeafArrays<'py>,
    tie_arrays: &[Option<Bound<'py, PyUntypedArray>>],
    casting: &mut CastRule<'py>,
) -> PyResult<Vec<Problem>> {
    let mut leaves = Vec::with_capacity(2 * leaf_arrays.len());
    for ((leaf, run), (dst, src)) in plan.each_leaf().zip(&plan.runs).zip(leaf_arrays) {
        leaves.extend(match (leaf, run, src) {
            (Some(leaf), _, _) => {
                let dst_ok = view_of(dst) == leaf.dst && is_writeable(dst);
                let src_ok = match (src, &leaf.src) {
                    (Some(array), Some(view)) => {
                        let op = casting.decide(&descr_of(array), &descr_of(dst))?;
                        view_of(array) == *view && op == Ok(leaf.op)
                    }
                    _ => true,
                };
                [dst_ok, src_ok]
            }
            (None, Some(run), Some(src)) => still_one_run(run, dst, src),
            (None, _, _) => [false, false], // a compact leaf is a run between two arrays
        });
    }
    let ties = plan
        .tie_sources()
        .zip(tie_arrays)
        .map(|(view, array)| match (view, array) {
            (Some(view), Some(array)) => view_of(array) == *view,
            _ => true,
        });
    // A tie's first destination as it was when the tie was found: a compact leaf's own
    // check does not see its arrays reshaped alike, which a tie check would read wrongly.
    let tied = plan
        .tie_destinations()
        .map(|(first, dst)| view_of(&leaf_arrays[first].0).same_elements(dst));
    let changed = leaves
        .into_iter()
        .chain(ties)
        .chain(tied)
        .filter(|ok| !ok)
        .count();
    if changed == 0 {
        return Ok(Vec::new());
    }
    let message = format!(
        "{changed} array(s) changed while the trees were walked (resized, reshaped, retyped \
         or made read-only by code the walk ran); load again once they stay put"
    );
    Ok(vec![Problem::new(ProblemKind::Leaf, "<walk>", message)])
}

/// Whether `dst` and `src`, planned as the compact leaf `run`, still are: the same bytes,
/// C-contiguous, of one shape and dtype, the destination writeable. The copy of `run` is
/// then what planning them again would give.
fn still_one_run(
    run: &Run,
    dst: &Bound<'_, PyUntypedArray>,
    src: &Bound<'_, PyUntypedArray>,
) -> [bool; 2] {
    let (dst_view, src_view) = (view_of(dst), view_of(src));
    let one_run = |view: &ArrayView, at: usize| {
        view.addr == at && view.is_c_contiguous() && view.nbytes() == run.len
    };
    let dst_ok = one_run(&dst_view, run.dst.get()) && is_writeable(dst);
    let alike = raw_descr(dst) == raw_descr(src) && dst_view.shape == src_view.shape;
    [dst_ok, one_run(&src_view, run.src) && alike]
}

/// Writes out the plan's compact leaves (see [`Plan::write_out`]) from the arrays they
/// were planned from.
pub fn write_out_compact(plan: &mut Plan, leaf_arrays: &LeafArrays<'_>) {
    plan.write_out(|leaf| {
        let (dst, src) = &leaf_arrays[leaf];
        LeafCopy {
            dst: view_of(dst),
            src: src.as_ref().map(view_of),
            op: Op::Bytes,
        }
    });
}
