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
use pyo3::types::{PyDict, PyInt, PyString};

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

    /// Whether a filter dropped children, so that indices and positions may differ.
    fn is_filtered(&self) -> bool {
        self.0.is_some()
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
                let renumbered = kept.iter().enumerate().any(|(j, &i)| i != j);
                let or = if renumbered {
                    format!(" or 0..{}", len - 1)
                } else {
                    String::new()
                };
                format!(
                    "the keys of the indices the filter kept ({}{more}){or}, all ints or all strings",
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
        // By the indices the children kept had, else (as the spec has it, a sequence being
        // renumbered after a filter drops children) by their positions among those kept.
        let mut found = None;
        if src.len() == dst.len() {
            found = find_indexed(&index, dst.len(), |j| at.of(j))?;
            if found.is_none() && at.is_filtered() {
                found = find_indexed(&index, dst.len(), |j| j)?;
            }
        }
        let Some(found) = found else {
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
        };
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

    /// A mapping keyed by the indices of a sequence's children `at` loading from them, or
    /// by their positions among those a filter kept (as in `sequence_from_keyed`); under
    /// `strict=False`, one keyed by some of those indices (and maybe other keys), which
    /// loads the indices it has and skips the rest.
    pub(super) fn keyed_from_sequence(
        &mut self,
        dst: Keyed<'py>,
        src: Vec<Bound<'py, PyAny>>,
        at: Indices,
    ) -> PyResult<()> {
        let mut matched = KeysMatch::new(&dst, &at, src.len());
        if !matched.is_complete() && at.is_filtered() {
            let by_position = KeysMatch::new(&dst, &Indices::default(), src.len());
            if by_position.is_complete() {
                matched = by_position;
            }
        }
        if self.strict && !matched.is_complete() {
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
        let by_int = keyed_by_int(&dst);
        let unexpected = (matched.seen.iter().enumerate())
            .filter(|(_, seen)| !**seen)
            .map(|(j, _)| index_as_key(self.py, at.of(j), by_int))
            .collect::<PyResult<Vec<_>>>()?;
        if !matched.missing.is_empty() || !unexpected.is_empty() {
            self.one_sided(matched.missing, unexpected);
        }
        for (key, d, j) in matched.order {
            self.child(Segment::Key(key.clone()), d, &src[j])?;
        }
        Ok(())
    }
}

/// A mapping's keys against the `len` children of a sequence that stood at indices `at`.
struct KeysMatch<'a, 'py> {
    /// Each key naming a child, its value and the child's position among those kept.
    order: Vec<(&'a Bound<'py, PyAny>, &'a Bound<'py, PyAny>, usize)>,
    /// The keys that name no child.
    missing: Vec<Bound<'py, PyAny>>,
    /// Which children a key named.
    seen: Vec<bool>,
}

impl<'a, 'py> KeysMatch<'a, 'py> {
    fn new(mapping: &'a Keyed<'py>, at: &Indices, len: usize) -> Self {
        let by_int = keyed_by_int(mapping);
        let mut matched = KeysMatch {
            order: Vec::with_capacity(mapping.pairs.len()),
            missing: Vec::new(),
            seen: vec![false; len],
        };
        for (key, value) in &mapping.pairs {
            let position = index_key(key).and_then(|i| at.position(i, len));
            match position {
                Some(j) if !matched.seen[j] && by_int == Some(key.is_instance_of::<PyInt>()) => {
                    matched.seen[j] = true;
                    matched.order.push((key, value, j));
                }
                _ => matched.missing.push(key.clone()),
            }
        }
        matched
    }

    /// Whether every key names a child and every child is named.
    fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.seen.iter().all(|seen| *seen)
    }
}

/// The values of `index` at the keys of indices `of(0)..of(len - 1)`, all `int`s or all
/// `str`s (whichever the first is), if it has them all.
fn find_indexed<'py>(
    index: &Bound<'py, PyDict>,
    len: usize,
    of: impl Fn(usize) -> usize,
) -> PyResult<Option<Vec<Bound<'py, PyAny>>>> {
    let mut found = Vec::with_capacity(len);
    let mut by_int = None;
    for j in 0..len {
        let i = of(j);
        let value = match by_int {
            Some(true) => index.get_item(i)?,
            Some(false) => index.get_item(i.to_string())?,
            None => match index.get_item(i)? {
                Some(v) => Some(v).inspect(|_| by_int = Some(true)),
                None => (index.get_item(i.to_string())?).inspect(|_| by_int = Some(false)),
            },
        };
        match value {
            Some(v) => found.push(v),
            None => return Ok(None),
        }
    }
    Ok(Some(found))
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
