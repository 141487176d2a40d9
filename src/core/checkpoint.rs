//! The header of a safetensors file, read and checked: where each tensor's bytes are.
//!
//! The safetensors crate parses and validates the header (lengths, JSON, contiguous
//! offsets, dtype and shape against byte length, the data ending at the end of the file).
//! This module turns that into byte ranges of the file and errors into plain words, and is
//! what the fuzz target (`examples/fuzz_header.rs`) exercises.

use rustc_hash::FxHashSet;
use safetensors::tensor::{Dtype, SafeTensorError};
use safetensors::SafeTensors;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

/// One tensor of a file: its name, dtype, shape, and its bytes within the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Range<usize>,
}

/// What a checked header says.
#[derive(Debug)]
pub struct Header {
    /// In the order of their bytes in the file.
    pub entries: Vec<Entry>,
    pub metadata: Option<HashMap<String, String>>,
}

/// Reads the header of the whole file `file`. On success every entry's bytes lie within
/// `file` and match its dtype and shape.
pub fn read_header(file: &[u8]) -> Result<Header, String> {
    let (header_len, metadata) = SafeTensors::read_metadata(file).map_err(|e| match e {
        // The crate's words for JSON that is not a header are those for text that is not JSON.
        SafeTensorError::InvalidHeaderDeserialization(reason) if is_json(header_of(file)) => {
            let reason = reason.to_string();
            if reason.contains("hex escape") {
                // Valid JSON whose strings the reader refuses: an escape of half a
                // character (`\ud800`), which is no text.
                return format!(
                    "the header holds a \\u escape that is no character (a lone surrogate): \
                     {reason}"
                );
            }
            // The crate's type names, in the format's words.
            let reason = reason
                .replace("struct HashMetadata", "an object of tensor entries")
                .replace(
                    "struct TensorInfo",
                    "a tensor entry (dtype, shape, data_offsets)",
                );
            format!("the header is JSON but not a safetensors header: {reason}")
        }
        e => describe(&e),
    })?;
    let data_start = 8 + header_len;
    if let Some(name) = name_listed_twice(&file[8..data_start]) {
        // The crate keeps one of them, where another reader may keep the other.
        return Err(format!("the header lists {name:?} twice"));
    }
    let infos = metadata.tensors();
    let entries = metadata
        .offset_keys()
        .into_iter()
        .map(|name| {
            let info = infos[&name];
            let (start, end) = info.data_offsets;
            Entry {
                dtype: info.dtype,
                shape: info.shape.clone(),
                bytes: data_start + start..data_start + end,
                name,
            }
        })
        .collect();
    Ok(Header {
        entries,
        metadata: metadata.metadata().clone(),
    })
}

/// The header's bytes as its length field gives them, as far as the file holds them.
fn header_of(file: &[u8]) -> &[u8] {
    let len = file
        .get(..8)
        .map_or(0, |n| u64::from_le_bytes(n.try_into().expect("8 bytes")));
    let end = usize::try_from(len).map_or(file.len(), |len| len.saturating_add(8));
    file.get(8..end.min(file.len())).unwrap_or_default()
}

fn is_json(text: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(text).is_ok()
}

/// The first name the header's object lists twice, if any.
fn name_listed_twice(header: &[u8]) -> Option<String> {
    struct Names;
    impl<'de> Visitor<'de> for Names {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = FxHashSet::default();
            while let Some(Name(name)) = map.next_key()? {
                map.next_value::<IgnoredAny>()?;
                if seen.contains(&name) {
                    return Ok(Some(name.into_owned()));
                }
                seen.insert(name);
            }
            Ok(None)
        }
    }
    let mut json = serde_json::Deserializer::from_slice(header);
    json.deserialize_map(Names).ok().flatten()
}

/// A name of the header, borrowed from it unless it holds escapes: a header may list
/// hundreds of thousands, each read here a second time.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Name<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// What is wrong with a file, in words.
pub fn describe(error: &SafeTensorError) -> String {
    use SafeTensorError::*;
    match error {
        HeaderTooLarge => concat!(
            "the header is larger than 100 MB, as its length (the first 8 bytes) reads: ",
            "a corrupt file, or not a safetensors one"
        )
        .to_owned(),
        HeaderTooSmall => "the file is too short for a header".to_owned(),
        InvalidHeaderLength => {
            "the header length is beyond the end of the file (truncated?)".to_owned()
        }
        InvalidHeader(e) => format!("the header is not UTF-8: {e}"),
        InvalidHeaderDeserialization(e) => format!("the header is not valid JSON: {e}"),
        InvalidOffset(name) => {
            format!("tensor {name:?} has offsets that overlap, leave gaps or are out of range")
        }
        TensorInvalidInfo => "a tensor's dtype and shape disagree with its byte length".to_owned(),
        MetadataIncompleteBuffer => {
            "the tensors' offsets do not end at the end of the file (truncated or padded)"
                .to_owned()
        }
        ValidationOverflow => "a tensor's shape overflows".to_owned(),
        MisalignedSlice => "a tensor's size is not a whole number of bytes".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn entries_come_in_file_order_with_their_byte_ranges() {
        let header = r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"U8","shape":[3],"data_offsets":[8,11]},"__metadata__":{"k":"v"}}"#;
        let bytes = file(header, &[0; 11]);
        let read = read_header(&bytes).unwrap();
        let start = 8 + header.len();
        assert_eq!(read.entries[0].name, "b");
        assert_eq!(read.entries[0].bytes, start..start + 8);
        assert_eq!(read.entries[1].bytes, start + 8..start + 11);
        assert_eq!(read.metadata.unwrap()["k"], "v");
    }

    #[test]
    fn bad_headers_are_described() {
        let cases = [
            (vec![1, 2], "too short"),
            (file("{}", &[]).split_at(5).0.to_vec(), "too short"),
            (file("{not json", &[]), "not valid JSON"),
            (
                file(
                    r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                    &[0; 8],
                ),
                "do not end at the end of the file",
            ),
            (
                file(
                    r#"{"w":{"dtype":"F64","shape":[4],"data_offsets":[0,16]}}"#,
                    &[0; 16],
                ),
                "disagree with its byte length",
            ),
        ];
        for (bytes, expected) in cases {
            let error = read_header(&bytes).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
        let twice = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"w":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}}"#;
        let error = read_header(&file(twice, &[0; 16])).unwrap_err();
        assert_eq!(error, r#"the header lists "w" twice"#);
        // Once written with an escape, which the reader cannot borrow.
        let escaped = twice.replacen(r#""w""#, r#""\u0077""#, 1);
        let error = read_header(&file(&escaped, &[0; 16])).unwrap_err();
        assert_eq!(error, r#"the header lists "w" twice"#);
        let not_a_header = r#"{"w":{"dtype":"F32","shape":[4]}}"#;
        let error = read_header(&file(not_a_header, &[0; 16])).unwrap_err();
        assert!(
            error.contains("JSON but not a safetensors header"),
            "{error}"
        );
        let lone = r#"{"w\ud800":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let error = read_header(&file(lone, &[0; 16])).unwrap_err();
        assert!(error.contains("no character (a lone surrogate)"), "{error}");
        let error = read_header(&file(r#"{"w":5}"#, &[])).unwrap_err();
        assert!(error.contains("expected a tensor entry (dtype"), "{error}");
        let error = read_header(&file("[]", &[])).unwrap_err();
        assert!(
            error.contains("expected an object of tensor entries"),
            "{error}"
        );
        let mut huge = file("{}", &[]);
        huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(read_header(&huge)
            .unwrap_err()
            .contains("larger than 100 MB"));
    }
}
