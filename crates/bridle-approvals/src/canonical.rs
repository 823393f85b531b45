//! The arguments hash an approval binds to: sha256 of the arguments in canonical JSON, so a
//! model that emits the same object with its keys in another order, or with other whitespace,
//! is still asking for the same call.
//!
//! Canonical form: object keys sorted by code point (recursively), no whitespace, strings and
//! numbers as serde_json writes them. Text that is not JSON (or nests deeper than [`MAX_DEPTH`]) is
//! hashed as its raw bytes: it still binds, just without normalisation.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A JSON value whose objects serialise with sorted keys, whatever map type serde_json was
/// built with (`preserve_order` may be switched on by another crate in the build).
enum Canon<'a> {
    Leaf(&'a Value),
    Array(Vec<Canon<'a>>),
    Object(BTreeMap<&'a str, Canon<'a>>),
}

/// Deepest arguments walked, in nested arrays and objects. serde_json refuses text nested deeper
/// (its own limit is the same), so only a value built in code can go past it; the walks over
/// arguments (here and `cedar::input`) recurse once per level and stop there rather than
/// overflow the stack.
pub const MAX_DEPTH: usize = 128;

impl<'a> Canon<'a> {
    /// `depth`: the arrays and objects around `v`. None past [`MAX_DEPTH`].
    fn new(v: &'a Value, depth: usize) -> Option<Self> {
        let inner = depth + 1;
        Some(match v {
            Value::Array(_) | Value::Object(_) if depth >= MAX_DEPTH => return None,
            Value::Array(items) => Canon::Array(
                items
                    .iter()
                    .map(|v| Canon::new(v, inner))
                    .collect::<Option<_>>()?,
            ),
            Value::Object(map) => Canon::Object(
                map.iter()
                    .map(|(k, v)| Canon::new(v, inner).map(|c| (k.as_str(), c)))
                    .collect::<Option<_>>()?,
            ),
            other => Canon::Leaf(other),
        })
    }
}

impl Serialize for Canon<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Canon::Leaf(v) => v.serialize(s),
            Canon::Array(items) => s.collect_seq(items),
            Canon::Object(map) => s.collect_map(map),
        }
    }
}

/// The canonical JSON text of `raw`, or None when `raw` is not JSON.
pub fn canonical_json(raw: &str) -> Option<String> {
    let value: Value = serde_json::from_str(raw).ok()?;
    canonical_value(&value)
}

/// The canonical JSON text of `value`, or None when it nests deeper than [`MAX_DEPTH`].
pub fn canonical_value(value: &Value) -> Option<String> {
    serde_json::to_string(&Canon::new(value, 0)?).ok()
}

/// Hex sha256 of the canonical arguments (of the raw bytes when they are not JSON).
pub fn arguments_sha256(raw: &str) -> String {
    let digest = match canonical_json(raw) {
        Some(c) => Sha256::digest(c.as_bytes()),
        None => Sha256::digest(raw.as_bytes()),
    };
    hex::encode(digest)
}

#[cfg(test)]
pub(crate) mod tests;
