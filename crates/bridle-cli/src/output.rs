//! `-o json|yaml|wide|name`: how read commands print what they read. The machine formats are
//! a contract (docs/src/reference/cli-output.md): a protobuf message prints in its canonical
//! proto3 JSON form (lowerCamelCase names, enums by name, 64-bit integers as strings, fields
//! at their default left out), a manifest as the document `bridle apply` takes; a list is
//! `{"items": [...]}` in JSON and one YAML document per item.

use std::sync::OnceLock;

use anyhow::Context as _;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;

use crate::out;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A table for people (the default).
    Table,
    /// The table with more columns.
    Wide,
    /// JSON: one object, or `{"items": [...]}` for a list.
    Json,
    /// YAML: one document per object.
    Yaml,
    /// `Kind/name` per line, for scripts (`bridle get agents -o name | xargs ...`).
    Name,
}

/// A usage error found after parsing (a kind that does not exist, a format a command cannot
/// print): exits 2, like clap's own.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

fn pool() -> anyhow::Result<&'static DescriptorPool> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(bridle_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| anyhow::anyhow!("the CLI's own protobuf descriptors do not load: {e}"))
}

/// `m` (the message `bridle.v1.{name}`) in canonical proto3 JSON.
pub fn proto_json<M: prost::Message>(name: &str, m: &M) -> anyhow::Result<Value> {
    let full = format!("bridle.v1.{name}");
    let desc = pool()?
        .get_message_by_name(&full)
        .with_context(|| format!("no message {full} in the CLI's descriptors"))?;
    let dynamic = DynamicMessage::decode(desc, m.encode_to_vec().as_slice())
        .with_context(|| format!("re-reading a {full}"))?;
    let v = dynamic
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .with_context(|| format!("writing a {full} as JSON"))?;
    Ok(v)
}

/// A value as YAML. The one place YAML is written, so the YAML crate can change in one place.
pub fn yaml(v: &Value) -> anyhow::Result<String> {
    bridle_core::yaml::to_string(v)
        .map_err(anyhow::Error::msg)
        .context("writing YAML")
}

/// Reads a manifest's canonical YAML into a JSON value.
pub fn yaml_to_json(text: &str) -> anyhow::Result<Value> {
    bridle_core::yaml::from_str(text)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("reading a manifest's YAML")
}

/// One object read, as the machine formats print it.
pub struct Item {
    /// `Kind/name`, for `-o name`.
    pub name: String,
    pub value: Value,
    /// The YAML to print as is (a manifest's canonical YAML); else `value` as YAML.
    pub yaml: Option<String>,
}

/// Prints `items` in a machine format. `single`: one object was asked for by name, so JSON
/// prints the object rather than a list of one.
pub fn print_items(format: Format, items: &[Item], single: bool) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let v = match (single, items) {
                (true, [one]) => one.value.clone(),
                _ => serde_json::json!({
                    "items": items.iter().map(|i| i.value.clone()).collect::<Vec<_>>()
                }),
            };
            out::line(&serde_json::to_string_pretty(&v).context("writing JSON")?);
        }
        Format::Yaml => {
            for (n, i) in items.iter().enumerate() {
                if n > 0 {
                    out::line("---");
                }
                let text = match &i.yaml {
                    Some(y) => y.clone(),
                    None => yaml(&i.value)?,
                };
                out::text(&text);
                if !text.ends_with('\n') {
                    out::line("");
                }
            }
        }
        Format::Name => {
            for i in items {
                out::line(&i.name);
            }
        }
        Format::Table | Format::Wide => {
            anyhow::bail!("internal: print_items called for a table")
        }
    }
    Ok(())
}

/// Rows as left-aligned columns; the last column is not padded.
pub fn table(rows: &[Vec<String>]) -> Vec<String> {
    crate::models::table(rows)
}

/// An RFC 3339 time (seconds), or "-" when unset.
pub fn when(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into())
}

/// "-" for an empty cell.
pub fn cell(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// A format as `-o` takes it.
pub fn name_of(f: Format) -> &'static str {
    match f {
        Format::Table => "table",
        Format::Wide => "wide",
        Format::Json => "json",
        Format::Yaml => "yaml",
        Format::Name => "name",
    }
}

/// Refuses the formats a report (one message, not a list of named objects) cannot print:
/// wide and name. Checked before anyone is asked.
pub fn check_report(format: Format, command: &str) -> anyhow::Result<()> {
    match format {
        Format::Wide | Format::Name => Err(usage(format!(
            "{command} prints a report, not named objects: -o {} does not apply (use -o json \
             or -o yaml)",
            name_of(format)
        ))),
        _ => Ok(()),
    }
}

/// A report printed for `-o json|yaml` (true); the table is left to the caller (false).
pub fn report<M: prost::Message>(format: Format, message: &str, m: &M) -> anyhow::Result<bool> {
    if !matches!(format, Format::Json | Format::Yaml) {
        return Ok(false);
    }
    let item = Item {
        name: String::new(),
        value: proto_json(message, m)?,
        yaml: None,
    };
    print_items(format, &[item], true)?;
    Ok(true)
}
