//! Dtype casts: whether NumPy's casting rule allows one, and which kernel performs it.

use super::array::{dtype_class, dtype_text, scalar_of, DtypeClass};
use crate::core::Op;
use numpy::npyffi::NPY_TYPES;
use numpy::{PyArrayDescr, PyArrayDescrMethods};
use pyo3::prelude::*;
use rustc_hash::FxHashMap;

/// A cached decision, holding the dtypes it was made for.
struct Decision<'py> {
    op: Result<Op, String>,
    _dtypes: (Bound<'py, PyArrayDescr>, Bound<'py, PyArrayDescr>),
}

/// The casting rule of one call, with its decisions cached per dtype pair.
pub struct CastRule<'py> {
    rule: String,
    can_cast: Bound<'py, PyAny>,
    /// Decisions by the addresses of the two dtype objects, which the entry keeps alive
    /// so that the addresses cannot be reused by other dtypes meanwhile.
    decisions: FxHashMap<(usize, usize), Decision<'py>>,
}

impl<'py> CastRule<'py> {
    pub fn new(py: Python<'py>, rule: &str) -> PyResult<Self> {
        Ok(CastRule {
            rule: rule.to_owned(),
            can_cast: py.import("numpy")?.getattr("can_cast")?,
            decisions: FxHashMap::default(),
        })
    }

    /// The kernel for `src -> dst`, or the reason the cast is refused.
    pub fn decide(
        &mut self,
        src: &Bound<'py, PyArrayDescr>,
        dst: &Bound<'py, PyArrayDescr>,
    ) -> PyResult<Result<Op, String>> {
        let key = (src.as_dtype_ptr() as usize, dst.as_dtype_ptr() as usize);
        if let Some(decision) = self.decisions.get(&key) {
            return Ok(decision.op.clone());
        }
        let op = self.decide_uncached(src, dst)?;
        let decision = Decision {
            op: op.clone(),
            _dtypes: (src.clone(), dst.clone()),
        };
        self.decisions.insert(key, decision);
        Ok(op)
    }

    fn decide_uncached(
        &self,
        src: &Bound<'py, PyArrayDescr>,
        dst: &Bound<'py, PyArrayDescr>,
    ) -> PyResult<Result<Op, String>> {
        if src.is_equiv_to(dst) {
            return Ok(Ok(Op::Bytes));
        }
        let (from, to) = (dtype_text(src), dtype_text(dst));
        if dtype_class(src) == DtypeClass::Flexible || dtype_class(dst) == DtypeClass::Flexible {
            return Ok(Err(format!(
                "cannot cast {from} to {to}: string, bytes and structured arrays load only from the same dtype"
            )));
        }
        // NumPy's rules do not count `ml_dtypes`' floats (bfloat16, float8) as floats, so
        // it finds bfloat16 -> float16 "unsafe": within a kind, it is allowed here, where
        // NumPy has a cast at all.
        let rule = match self.rule == "same_kind" && is_floating(src) && is_floating(dst) {
            true => "unsafe",
            false => self.rule.as_str(),
        };
        if !self.can_cast.call1((src, dst, rule))?.is_truthy()? {
            return Ok(Err(format!(
                "cannot cast {from} to {to} under casting={:?}",
                self.rule
            )));
        }
        Ok(Ok(match (scalar_of(src), scalar_of(dst)) {
            (Some(s), Some(d)) if s.casts_natively_to(d) => Op::Cast(s, d),
            _ => Op::External,
        }))
    }
}

/// Whether a dtype holds floating-point numbers: NumPy's own, or a user type (those of
/// `ml_dtypes`) named as one.
fn is_floating(descr: &Bound<'_, PyArrayDescr>) -> bool {
    if descr.kind() == b'f' {
        return true;
    }
    if descr.num() < NPY_TYPES::NPY_USERDEF as i32 {
        return false;
    }
    let name = descr
        .typeobj()
        .name()
        .and_then(|name| name.extract::<String>());
    name.is_ok_and(|name| name.starts_with("float") || name == "bfloat16")
}
