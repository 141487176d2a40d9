//! A sequence against a mapping keyed by its indices (`0..n-1` or `"0".."n-1"`), as a
//! list against the state of one that a file or `unflatten` gives back.
//!
//! A filter drops children of both trees: a sequence's children keep the indices they had
//! in it (see [`Indices`]), which a mapping's keys name, where two sequences are matched
//! by position among the children kept.

use super::kinds::Keyed;
use super::path::Segment;
use super::walk::{key_list, plain_keys, Walker};
use crate::core::ProblemKind;
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString};

/// Where the children of a sequence stood in it: child `j` of those a filter kept is
/// child `indices[j]` of the sequence (in increasing order); all of them without a filter.
#[derive(Default)]
pub(super) struct Indices(Option<Vec<usize>>);

impl Indices {
    /// The indices of the children a filter kept.
    pub(super) fn kept(indices: Vec<usize>) -> Self {
        Indices(Some(indices))
    }

    /// The index in the sequence of child `j` of those kept.
    pub(super) fn of(&self, j: usize) -> usize {
        self.0.as_ref().map_or(j, |kept| kept[j])
    }

    /// Which of the `len` children kept stood at index `i`, if one did.
    fn position(&self, i: usize, len: usize) -> Option<usize> {
        match &self.0 {
            None => (i < len).then_some(i),
            Some(kept) => kept.binary_search(&i).ok(),
        }
    }

    /// The keys a mapping must have to match the `len` children kept, in words.
    fn expected_keys(&self, len: usize) -> String {
        match (&self.0, len) {
            (_, 0) => "no keys".to_owned(),
            (None, _) => format!("the keys 0..{}, all ints or all strings", len - 1),
            (Some(kept), _) => {
                let shown: Vec<String> = kept.iter().take(8).map(usize::to_string).collect();
                let more = if kept.len() > 8 { ", ..." } else { "" };
                format!(
                    "the keys of the indices the filter kept ({}{more}), all ints or all strings",
                    shown.join(", ")
                )
            }
        }
    }
}

impl<'py> Walker<'py> {
    /// A sequence loading from a mapping keyed by the indices of its children `at`.
    pub(super) fn sequence_from_keyed(
        &mut self,
        dst: Vec<Bound<'py, PyAny>>,
        at: Indices,
        mut src: Keyed<'py>,
    ) -> PyResult<()> {
        let index = src.index(self.py)?;
        if !plain_keys(&index) {
            self.classifier.ran_user_code = true; // see `match_keys`
        }
        let mut found = Vec::with_capacity(dst.len());
        if src.len() == dst.len() {
            // Keyed by `int`s, or by `str`s: whichever the first index is.
            let mut by_int = None;
            for j in 0..dst.len() {
                let i = at.of(j);
                let value = match by_int {
                    Some(true) => index.get_item(i)?,
                    Some(false) => index.get_item(i.to_string())?,
                    None => match index.get_item(i)? {
                        Some(v) => Some(v).inspect(|_| by_int = Some(true)),
                        None => index
                            .get_item(i.to_string())?
                            .inspect(|_| by_int = Some(false)),
                    },
                };
                match value {
                    Some(v) => found.push(v),
                    None => break,
                }
            }
        }
        if found.len() != dst.len() || src.len() != dst.len() {
            src.read_pairs();
            if !self.strict {
                return self.sequence_from_some_keys(dst, at, &src);
            }
            let keys: Vec<_> = src.pairs.iter().map(|(k, _)| k.clone()).collect();
            let message = format!(
                "Tried to load a mapping with keys {} into a sequence of {} children; expected {}",
                key_list(self.py, &keys),
                dst.len(),
                at.expected_keys(dst.len())
            );
            self.problem(ProblemKind::Structure, message);
            return Ok(());
        }
        for (j, (d, s)) in dst.iter().zip(&found).enumerate() {
            self.child(Segment::Index(at.of(j)), d, s)?;
        }
        Ok(())
    }

    /// Under `strict=False`, a sequence loading from a mapping that lacks some of its
    /// indices or has other keys: the indices it has are loaded, the rest skipped.
    fn sequence_from_some_keys(
        &mut self,
        dst: Vec<Bound<'py, PyAny>>,
        at: Indices,
        src: &Keyed<'py>,
    ) -> PyResult<()> {
        let by_int = keyed_by_int(src);
        let mut found: Vec<Option<&Bound<'py, PyAny>>> = vec![None; dst.len()];
        let mut unexpected = Vec::new();
        for (key, value) in &src.pairs {
            let position = index_key(key).and_then(|i| at.position(i, dst.len()));
            match position {
                Some(j) if found[j].is_none() && by_int == Some(key.is_instance_of::<PyInt>()) => {
                    found[j] = Some(value)
                }
                _ => unexpected.push(key.clone()),
            }
        }
        let missing = (found.iter().enumerate())
            .filter(|(_, s)| s.is_none())
            .map(|(j, _)| index_as_key(self.py, at.of(j), by_int))
            .collect::<PyResult<Vec<_>>>()?;
        self.one_sided(missing, unexpected);
        for (j, (d, s)) in dst.iter().zip(found).enumerate() {
            if let Some(s) = s {
                self.child(Segment::Index(at.of(j)), d, s)?;
            }
        }
        Ok(())
    }

    /// A mapping keyed by the indices of a sequence's children `at` loading from them;
    /// under `strict=False`, one keyed by some of those indices (and maybe other keys),
    /// which loads the indices it has and skips the rest.
    pub(super) fn keyed_from_sequence(
        &mut self,
        dst: Keyed<'py>,
        src: Vec<Bound<'py, PyAny>>,
        at: Indices,
    ) -> PyResult<()> {
        let by_int = keyed_by_int(&dst);
        let mut seen = vec![false; src.len()];
        let mut order = Vec::with_capacity(dst.pairs.len());
        let mut missing = Vec::new();
        for (key, d) in &dst.pairs {
            let position = index_key(key).and_then(|i| at.position(i, src.len()));
            match position {
                Some(j) if !seen[j] && by_int == Some(key.is_instance_of::<PyInt>()) => {
                    seen[j] = true;
                    order.push((key, d, j));
                }
                _ => missing.push(key.clone()),
            }
        }
        let unseen = seen.iter().enumerate().filter(|(_, seen)| !**seen);
        if self.strict && (!missing.is_empty() || unseen.clone().next().is_some()) {
            let keys: Vec<_> = dst.pairs.iter().map(|(k, _)| k.clone()).collect();
            let message = format!(
                "Tried to load a sequence of {} children into a mapping with keys {}; expected {}",
                src.len(),
                key_list(self.py, &keys),
                at.expected_keys(src.len())
            );
            self.problem(ProblemKind::Structure, message);
            return Ok(());
        }
        let unexpected = unseen
            .map(|(j, _)| index_as_key(self.py, at.of(j), by_int))
            .collect::<PyResult<Vec<_>>>()?;
        if !missing.is_empty() || !unexpected.is_empty() {
            self.one_sided(missing, unexpected);
        }
        for (key, d, j) in order {
            self.child(Segment::Key(key.clone()), d, &src[j])?;
        }
        Ok(())
    }
}

/// Whether a mapping is keyed by `int`s or by `str`s (not a mix): whichever its first
/// index is; `None` if it has none.
fn keyed_by_int(mapping: &Keyed<'_>) -> Option<bool> {
    (mapping.pairs.iter())
        .find(|(key, _)| index_key(key).is_some())
        .map(|(key, _)| key.is_instance_of::<PyInt>())
}

/// The index a key stands for: an `int`, or a `str` of decimal digits without leading zeros.
fn index_key(key: &Bound<'_, PyAny>) -> Option<usize> {
    if key.is_instance_of::<PyInt>() {
        return key.extract::<usize>().ok();
    }
    let text: String = key.cast::<PyString>().ok()?.extract().ok()?;
    let canonical =
        text == "0" || (!text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit()));
    if canonical && !text.is_empty() {
        text.parse().ok()
    } else {
        None
    }
}

/// Index `i` as the key a mapping keyed by `int`s (`by_int`) or by `str`s would hold it.
fn index_as_key(py: Python<'_>, i: usize, by_int: Option<bool>) -> PyResult<Bound<'_, PyAny>> {
    Ok(match by_int {
        Some(true) => i.into_pyobject(py)?.into_any(),
        _ => PyString::new(py, &i.to_string()).into_any(),
    })
}
