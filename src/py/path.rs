//! Key paths (`layers.1.weight`), kept as keys and rendered only when a problem is found.

use super::array::{dtype_text, shape_text};
use super::walk::plain_key;
use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString};

/// One step down the tree.
pub enum Segment<'py> {
    Key(Bound<'py, PyAny>),
    Index(usize),
}

/// The path from the root to the node being visited.
#[derive(Default)]
pub struct KeyPath<'py> {
    segments: Vec<Segment<'py>>,
}

impl<'py> KeyPath<'py> {
    pub fn push(&mut self, segment: Segment<'py>) {
        self.segments.push(segment);
    }

    pub fn pop(&mut self) -> Option<Segment<'py>> {
        self.segments.pop()
    }

    pub fn depth(&self) -> usize {
        self.segments.len()
    }

    /// Whether rendering the path may run code of the user's: a key that is not an exact
    /// `str` or `int` is rendered by its own `repr` or `str`.
    pub fn renders_with_user_code(&self) -> bool {
        (self.segments.iter())
            .any(|segment| matches!(segment, Segment::Key(key) if !plain_key(key)))
    }

    /// `layers.1.weight`; `<root>` for the root. String keys print as they are, integers
    /// as numbers, any other key as its `repr`.
    pub fn render(&self) -> String {
        if self.segments.is_empty() {
            return "<root>".to_owned();
        }
        let parts: Vec<String> = self.segments.iter().map(render_segment).collect();
        parts.join(".")
    }
}

fn render_segment(segment: &Segment<'_>) -> String {
    match segment {
        Segment::Index(i) => i.to_string(),
        Segment::Key(key) => {
            let text = if key.is_instance_of::<PyString>() || key.is_instance_of::<PyInt>() {
                key.str()
            } else {
                key.repr()
            };
            text.and_then(|t| t.extract::<String>())
                .unwrap_or_else(|_| "<key>".to_owned())
        }
    }
}

/// A short description of a value for messages: its `repr` when short, else its type.
pub fn describe(obj: &Bound<'_, PyAny>) -> String {
    const SHORT: usize = 60;
    if let Ok(array) = obj.cast::<PyUntypedArray>() {
        return format!(
            "a {} array of size {}",
            dtype_text(&array.dtype()),
            shape_text(array.shape())
        );
    }
    let type_name = obj
        .get_type()
        .name()
        .and_then(|n| n.extract::<String>())
        .unwrap_or_else(|_| "object".to_owned());
    match obj.repr().and_then(|r| r.extract::<String>()) {
        Ok(text) if text.chars().count() <= SHORT => text,
        _ => format!("a {type_name} object"),
    }
}
