//! YAML in and out, for every crate of the workspace: the one place that names the YAML crate
//! (serde-saphyr) and sets how YAML is read, so manifests, price tables, script files and the
//! CLI read YAML the same way.
//!
//! How YAML is read (kept as the workspace read it before, with serde_yaml 0.9):
//! - YAML 1.2 scalars: only `true`/`false` (any case) are booleans, `yes`, `no`, `on` and `off`
//!   are strings; `010` and `1_000` are strings where a value's type is open (`parameters`);
//!   a plain `~`, `null` or nothing read into a text field is that text.
//! - A key written twice in one mapping is an error at the second one's line.
//! - `<<` is an ordinary key (no merge), so in a manifest it is an unknown field; tags are
//!   ignored (`!!binary` text is kept as written, not decoded).
//! - An integer that does not fit in 64 bits is refused, never turned into a float.
//! - At most [`MAX_DEPTH`] levels of nesting; deeper input is refused as soon as the parser
//!   reaches that depth, before the rest is read.
//!
//! Parsing runs on a thread of its own with [`PARSER_STACK`] bytes of stack: the parser's
//! frames are large (about 60 KiB a level for [`Node`] in a debug build), so a document at the
//! depth limit would overflow a service worker's 2 MiB stack. The thread is scoped: the call
//! returns when parsing is done, and no parse outlives its caller.
//!
//! What it gives that serde_yaml did not: the line and column of every node ([`Node`]), so an
//! error found after parsing (a manifest's semantic checks) points at the field in any style,
//! flow mappings and lists included.

use std::fmt;

use serde::Serialize;
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Error as SaphyrError, Spanned};

use crate::redact::quote;

/// Deepest nesting of mappings and lists accepted.
pub const MAX_DEPTH: usize = 128;

/// Stack of the thread that parses: room for [`MAX_DEPTH`] levels in a debug build, twice over.
/// Reserved, not committed: only the pages a parse touches take memory.
pub const PARSER_STACK: usize = 16 << 20;

/// Runs `f` on a scoped thread with [`PARSER_STACK`] of stack and waits for it.
fn on_parser_stack<R: Send>(f: impl FnOnce() -> Result<R, Error> + Send) -> Result<R, Error> {
    let failed = |what: String| Error {
        path: String::new(),
        line: None,
        column: None,
        message: what,
    };
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("yaml-parse".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(s, f)
            .map_err(|e| failed(format!("cannot start the YAML parser's thread: {e}")))?;
        handle
            .join()
            .map_err(|_| failed("the YAML parser failed (a bug: it must not panic)".into()))?
    })
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        null_as_string: true,
        ignore_binary_tag_for_string: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        merge_keys: serde_saphyr::MergeKeyPolicy::AsOrdinary,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            flow_nesting_limit: MAX_DEPTH,
        },
    }
}

/// What is wrong with a YAML text: where (the path of the field when known, the line and
/// column in the text, 1-based) and what, in the writer's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// Dotted path of the field ("spec.budget.maxSteps", "prices[3].input"); empty when the
    /// problem is the text itself.
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", quote(&self.path))?;
        }
        write!(f, "{}", self.message)?;
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, " at line {l} column {c}"),
            (Some(l), None) => write!(f, " at line {l}"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    fn new(text: &str, path: String, e: &SaphyrError) -> Self {
        let e = e.without_snippet();
        let loc = e.location();
        // serde_path_to_error writes "." for the whole document and "?" for a key it could
        // not read: the path stops at the last field that is known.
        let path = path.trim_end_matches('?').trim_end_matches('.').to_string();
        Error {
            path,
            line: loc
                .and_then(|l| usize::try_from(l.line()).ok())
                .filter(|l| *l > 0),
            column: loc
                .and_then(|l| usize::try_from(l.column()).ok())
                .filter(|c| *c > 0),
            message: message(text, e),
        }
    }
}

/// Reads one YAML document into `T`. A second document in the text is an error.
pub fn from_str<T: DeserializeOwned + Send>(text: &str) -> Result<T, Error> {
    on_parser_stack(|| {
        let mut path = String::new();
        serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
            serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
                path = e.path().to_string();
                e.into_inner()
            })
        })
        .map_err(|e| Error::new(text, path, &e))
    })
}

/// `value` as YAML that [`from_str`] reads back to the same value.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| e.to_string())
}

/// One node of a YAML document and where it is (1-based line and column of the text).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub line: usize,
    pub column: usize,
    pub value: Value,
}

/// What a [`Node`] holds. Scalars other than strings keep no value: what reads them is the
/// typed deserialization, this tree is for finding things and where they are.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Entries in the document's order, each with its key's node.
    Map(Vec<(Node, Node)>),
    Seq(Vec<Node>),
    Str(String),
    /// A number, a boolean or null.
    Scalar,
}

impl Node {
    /// Parses one document into nodes with their positions.
    pub fn parse(text: &str) -> Result<Node, Error> {
        on_parser_stack(|| {
            let raw: Spanned<Raw> = serde_saphyr::from_str_with_options(text, options())
                .map_err(|e| Error::new(text, String::new(), &e))?;
            Node::from_raw(text, raw)
        })
    }

    fn from_raw(text: &str, raw: Spanned<Raw>) -> Result<Node, Error> {
        let loc = raw.referenced;
        let line = usize::try_from(loc.line()).unwrap_or(0);
        let column = usize::try_from(loc.column()).unwrap_or(0);
        let value = match raw.value {
            Raw::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| Ok((Node::from_raw(text, k)?, Node::from_raw(text, v)?)))
                    .collect::<Result<_, Error>>()?,
            ),
            Raw::Seq(items) => Value::Seq(
                items
                    .into_iter()
                    .map(|i| Node::from_raw(text, i))
                    .collect::<Result<_, Error>>()?,
            ),
            Raw::Str(s) => Value::Str(s),
            Raw::Scalar => Value::Scalar,
            Raw::Float => {
                // The parser reads an integer too large for 64 bits as a float: refused, as an
                // integer is never silently made approximate.
                let written = source_text(text, &loc).unwrap_or_default();
                if is_integer(written) {
                    return Err(Error {
                        path: String::new(),
                        line: Some(line).filter(|l| *l > 0),
                        column: Some(column).filter(|c| *c > 0),
                        message: too_large(written),
                    });
                }
                Value::Scalar
            }
        };
        Ok(Node {
            line,
            column,
            value,
        })
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key's node of `key` in a mapping (where the field is written).
    pub fn key(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, _)| k),
            _ => None,
        }
    }

    /// Line and column of a field given by its dotted path ("spec.targets[1].apiKey"): of its
    /// key for a mapping's entry, of the item for a list's. None when the path is not in the
    /// document.
    pub fn locate(&self, path: &str) -> Option<(usize, usize)> {
        let mut node = self;
        let mut at = None;
        for seg in path.split('.') {
            let (key, indices) = match seg.find('[') {
                Some(i) => (&seg[..i], &seg[i..]),
                None => (seg, ""),
            };
            if !key.is_empty() {
                at = Some(node.key(key)?);
                node = node.get(key)?;
            }
            for index in indices.split('[').skip(1) {
                let n: usize = index.strip_suffix(']')?.parse().ok()?;
                let Value::Seq(items) = &node.value else {
                    return None;
                };
                node = items.get(n)?;
                at = Some(node);
            }
        }
        at.map(|n| (n.line, n.column))
    }
}

/// The text a location's span covers, when it is known.
fn source_text<'a>(text: &'a str, loc: &serde_saphyr::Location) -> Option<&'a str> {
    let span = loc.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    text.get(start..start.checked_add(len)?)
}

fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn too_large(n: &str) -> String {
    format!(
        "the number {} is too large (numbers must fit in 64 bits)",
        quote(n)
    )
}

/// The parser's message in the writer's terms, without its location (given apart).
fn message(text: &str, e: &SaphyrError) -> String {
    let written = || {
        e.location()
            .and_then(|l| source_text(text, &l))
            .map(str::trim)
            .unwrap_or_default()
    };
    match e {
        SaphyrError::SerdeUnknownField {
            field, expected, ..
        } => format!(
            "unknown field `{}`, {}",
            quote(field),
            expected_one_of(expected, "fields")
        ),
        SaphyrError::SerdeUnknownVariant {
            variant, expected, ..
        } => format!(
            "unknown variant `{}`, {}",
            quote(variant),
            expected_one_of(expected, "variants")
        ),
        SaphyrError::DuplicateMappingKey { key, .. } => match key {
            Some(k) => format!("the key `{}` is written twice in one mapping", quote(k)),
            None => "a key is written twice in one mapping".into(),
        },
        SaphyrError::InvalidScalar { ty, .. } => {
            let w = written();
            if is_integer(w) && ty.starts_with('u') && w.starts_with('-') {
                format!(
                    "invalid value: {}, expected a number zero or more",
                    quote(w)
                )
            } else if is_integer(w) && w.trim_start_matches(['-', '+']).len() > 18 {
                too_large(w)
            } else if is_integer(w) {
                format!("invalid value: {} is out of range for {ty}", quote(w))
            } else {
                format!("invalid type: `{}`, expected {}", quote(w), what_is(ty))
            }
        }
        SaphyrError::InvalidBooleanStrict { .. } => format!(
            "invalid type: `{}`, expected a boolean (true or false)",
            quote(written())
        ),
        SaphyrError::Unexpected { expected, .. } => {
            let w = written();
            let found = if matches!(w, "" | "~" | "null" | "Null" | "NULL") {
                "nothing (write [] for an empty list, {} for an empty mapping, or leave the \
                 field out)"
                    .to_string()
            } else {
                format!("`{}`", quote(w))
            };
            let expected = expected
                .strip_suffix(" start")
                .map(|k| match k {
                    "sequence" => "a list",
                    "mapping" => "a mapping",
                    other => other,
                })
                .unwrap_or(expected);
            format!("expected {expected}, found {found}")
        }
        SaphyrError::Budget {
            breach: serde_saphyr::budget::BudgetBreach::Depth { .. },
            ..
        } => nested_too_deeply(),
        SaphyrError::NonFiniteFloat { value, .. } => format!(
            "{} is not a finite number (JSON has no NaN or infinity); quote it for a string",
            quote(value)
        ),
        other => {
            let m = strip_location(&other.to_string());
            if m.contains("recursion limit exceeded") {
                nested_too_deeply()
            } else {
                bound_quoted(&m)
            }
        }
    }
}

fn nested_too_deeply() -> String {
    format!("nested too deeply: at most {MAX_DEPTH} levels of mappings and lists")
}

/// serde's wording: "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`".
fn expected_one_of(names: &[&str], what: &str) -> String {
    match names {
        [] => format!("there are no {what}"),
        [a] => format!("expected `{a}`"),
        [a, b] => format!("expected `{a}` or `{b}`"),
        _ => format!(
            "expected one of {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn what_is(ty: &str) -> &str {
    match ty {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number zero or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "bool" => "a boolean (true or false)",
        "char" => "a single character",
        other => other,
    }
}

/// The parser appends " at line X, column Y"; the location is kept apart.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Messages quote the input between backquotes: each quoted part is bounded as every error
/// bounds what it quotes.
fn bound_quoted(msg: &str) -> String {
    let parts: Vec<&str> = msg.split('`').collect();
    if parts.len() < 3 {
        return msg.to_string();
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i % 2 == 1 && i + 1 < parts.len() {
                quote(p)
            } else {
                (*p).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}

/// The document as the parser reads it, each node with its location.
enum Raw {
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
    Seq(Vec<Spanned<Raw>>),
    Str(String),
    Scalar,
    Float,
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Raw, E> {
        Ok(Raw::Scalar)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Raw, E> {
        Ok(Raw::Scalar)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Raw, E> {
        Ok(Raw::Scalar)
    }
    // Past 64 bits: checked against the text as a float is (an integer too large).
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(if i64::try_from(v).is_ok() {
            Raw::Scalar
        } else {
            Raw::Float
        })
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        Ok(if u64::try_from(v).is_ok() {
            Raw::Scalar
        } else {
            Raw::Float
        })
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Raw, E> {
        Ok(Raw::Float)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Scalar)
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Scalar)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = a.next_entry()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = a.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
}

#[cfg(test)]
mod tests;
