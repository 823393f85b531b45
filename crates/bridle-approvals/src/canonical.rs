//! The arguments hash an approval binds to: sha256 of the arguments in canonical JSON, so a
//! model that emits the same object with its keys in another order, or with other whitespace,
//! is still asking for the same call.
//!
//! Canonical form: object keys sorted by code point (recursively), no whitespace, strings and
//! numbers as serde_json writes them. Text that is not JSON is hashed as its raw bytes: it still
//! binds, just without normalisation.

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

impl<'a> From<&'a Value> for Canon<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Array(items) => Canon::Array(items.iter().map(Canon::from).collect()),
            Value::Object(map) => Canon::Object(
                map.iter()
                    .map(|(k, v)| (k.as_str(), Canon::from(v)))
                    .collect(),
            ),
            other => Canon::Leaf(other),
        }
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
    serde_json::to_string(&Canon::from(&value)).ok()
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
mod tests;
