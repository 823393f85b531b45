//! The reference under `docs/src/reference` and the manifests' JSON Schemas under
//! `docs/schema` are generated from the code, so that they cannot drift from it: every manifest
//! kind and field (from the manifest types' JSON Schema), every option of every service with
//! its default and environment variable (from the options types), every CLI command (from
//! clap's own help), every gRPC service, message and field with its comment (from the
//! descriptor set). This test regenerates them and fails when a committed copy differs;
//!
//!     BRIDLE_WRITE_REFERENCE=1 cargo nextest run -p bridle-cli --test reference
//!
//! writes them instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

const GENERATED: &str = "<!-- generated from the code by crates/bridle-cli/tests/reference.rs: do not edit; \
BRIDLE_WRITE_REFERENCE=1 cargo nextest run -p bridle-cli --test reference rewrites it -->\n\n";

// ------------------------------------------------------------------ JSON Schema to tables

/// A definition a `$ref` names, from the schema's `$defs`.
fn resolve<'a>(defs: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            defs.get(name).map_or(v, |d| resolve(defs, d))
        }
        None => v,
    }
}

/// The non-null alternative of an optional (`anyOf: [T, null]`), or the schema itself.
fn unwrap_optional<'a>(defs: &'a Value, v: &'a Value) -> &'a Value {
    let v = resolve(defs, v);
    if let Some(alts) = v.get("anyOf").and_then(Value::as_array) {
        let real: Vec<&Value> = alts
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
            .collect();
        if real.len() == 1 {
            return resolve(defs, real[0]);
        }
    }
    v
}

fn type_label(defs: &Value, v: &Value) -> String {
    let v = unwrap_optional(defs, v);
    if let Some(values) = v.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(|x| format!("`{}`", x.as_str().map_or(x.to_string(), str::to_string)))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    if let Some(c) = v.get("const") {
        return format!("`{}`", c.as_str().map_or(c.to_string(), str::to_string));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = v.get(key).and_then(Value::as_array) {
            return alts
                .iter()
                .map(|a| type_label(defs, a))
                .collect::<Vec<_>>()
                .join(" \\| ");
        }
    }
    let ty = match v.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str())
            .filter(|t| *t != "null")
            .map(str::to_string)
            .collect(),
        _ => vec![],
    };
    match ty.first().map(String::as_str) {
        Some("array") => match v.get("items") {
            Some(items) => format!("list of {}", type_label(defs, items)),
            None => "list".into(),
        },
        Some("object") => match v.get("additionalProperties") {
            Some(Value::Bool(false)) | None => "object".into(),
            Some(Value::Bool(true)) => "map".into(),
            Some(inner) => format!("map of {}", type_label(defs, inner)),
        },
        Some(t) => t.to_string(),
        None => "any".into(),
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ").trim().to_string()
}

/// The description of a field: its own, else its type's.
fn description(defs: &Value, field: &Value) -> String {
    field
        .get("description")
        .or_else(|| unwrap_optional(defs, field).get("description"))
        .and_then(Value::as_str)
        .map(cell)
        .unwrap_or_default()
}

struct Row {
    path: String,
    ty: String,
    default: String,
    description: String,
}

/// Every field under `schema`, depth first, as dotted paths (`[]` for a list's items, `<key>`
/// for a map's values).
fn rows(defs: &Value, schema: &Value, prefix: &str, depth: usize, out: &mut Vec<Row>) {
    if depth > 10 {
        return;
    }
    let s = unwrap_optional(defs, schema);
    // Variants (a tagged or untagged choice): each variant's fields under the same prefix.
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            for a in alts {
                rows(defs, a, prefix, depth + 1, out);
            }
        }
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (name, field) in props {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            if out.iter().any(|r| r.path == path) {
                continue;
            }
            out.push(Row {
                path: path.clone(),
                ty: type_label(defs, field),
                default: field
                    .get("default")
                    .filter(|d| !d.is_null())
                    .map(|d| format!("`{}`", cell(&d.to_string())))
                    .unwrap_or_default(),
                description: description(defs, field),
            });
            rows(defs, field, &path, depth + 1, out);
        }
    }
    match s.get("type").and_then(Value::as_str) {
        Some("array") => {
            if let Some(items) = s.get("items") {
                rows(defs, items, &format!("{prefix}[]"), depth + 1, out);
            }
        }
        Some("object") => {
            if let Some(inner @ Value::Object(_)) = s.get("additionalProperties") {
                rows(defs, inner, &format!("{prefix}.<key>"), depth + 1, out);
            }
        }
        _ => {}
    }
}

fn schema_of<T: schemars::JsonSchema>() -> Value {
    schemars::schema_for!(T).to_value()
}

// ------------------------------------------------------------------ manifests

fn manifests(out: &mut BTreeMap<PathBuf, String>) {
    use bridle_core::manifest as m;
    let kinds: [(&str, Value); 6] = [
        ("Agent", schema_of::<m::Agent>()),
        ("Tool", schema_of::<m::Tool>()),
        ("ModelRoute", schema_of::<m::ModelRoute>()),
        ("Policy", schema_of::<m::Policy>()),
        ("SecretBinding", schema_of::<m::SecretBinding>()),
        ("Budget", schema_of::<m::Budget>()),
    ];
    let mut md = String::from(GENERATED);
    md.push_str(
        "# Manifests\n\nEvery kind Bridle applies, and every field of it, from the manifest \
         types themselves. Field names are as written in YAML; a field Bridle does not know is \
         an error. `apiVersion` is `bridle.dev/v1`. Each kind's JSON Schema is published in \
         `docs/schema/` for editors that validate YAML (for example with a \
         `# yaml-language-server: $schema=...` comment).\n\n",
    );
    for (kind, schema) in &kinds {
        let file = format!("{}.json", kind.to_lowercase());
        out.insert(
            PathBuf::from("docs/schema").join(&file),
            serde_json::to_string_pretty(schema).unwrap() + "\n",
        );
        let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
        let mut r = Vec::new();
        rows(&defs, schema, "", 0, &mut r);
        let _ = write!(
            md,
            "## {kind}\n\nSchema: `docs/schema/{file}`.\n\n| field | type | default | description |\n|---|---|---|---|\n"
        );
        for row in r {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} |",
                row.path, row.ty, row.default, row.description
            );
        }
        md.push('\n');
    }
    out.insert(PathBuf::from("docs/src/reference/manifests.md"), md);
}

// ------------------------------------------------------------------ options

/// The value at a dotted path of the defaults, shown compactly.
fn default_at(defaults: &Value, path: &str) -> String {
    let mut v = defaults;
    for part in path.split('.') {
        match v.get(part) {
            Some(x) => v = x,
            None => return String::new(),
        }
    }
    match v {
        Value::Null => String::new(),
        Value::Object(m) if m.is_empty() => String::new(),
        Value::Array(a) if a.is_empty() => String::new(),
        Value::Object(_) => String::new(),
        other => format!("`{}`", cell(&other.to_string())),
    }
}

fn service_options<T: bridle_core::config::Options>(md: &mut String) {
    let schema = schema_of::<T>();
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let defaults = serde_json::to_value(T::default()).unwrap();
    let mut r = Vec::new();
    rows(&defs, &schema, "", 0, &mut r);
    let service = T::SERVICE;
    let prefix = format!("BRIDLE_{}_", service.to_ascii_uppercase());
    let _ = write!(
        md,
        "## {service}\n\nEnvironment: `{prefix}<KEY>` (or `BRIDLE_<KEY>` for every service); a \
         nested key joins its parts with `__`.\n\n| key | environment | type | default | description |\n|---|---|---|---|---|\n"
    );
    for row in r {
        let env = if row.path.contains('[') || row.path.contains('<') {
            String::new()
        } else {
            format!(
                "`{prefix}{}`",
                row.path.replace('.', "__").to_ascii_uppercase()
            )
        };
        let default = match default_at(&defaults, &row.path) {
            d if d.is_empty() => row.default,
            d => d,
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} |",
            row.path, env, row.ty, default, row.description
        );
    }
    md.push('\n');
}

fn options(out: &mut BTreeMap<PathBuf, String>) {
    let mut md = String::from(GENERATED);
    md.push_str(
        "# Service options\n\nEvery option of every service, with its default, from the \
         options types. Options come, lowest first, from the defaults, a TOML file \
         (`--config`), `BRIDLE_*` variables, `BRIDLE_<SERVICE>_*` variables, then flags; an \
         unknown key or variable is refused by name.\n\n",
    );
    service_options::<bridle_orchestrator::Options>(&mut md);
    service_options::<bridle_router::Options>(&mut md);
    service_options::<bridle_tools::Options>(&mut md);
    service_options::<bridle_approvals::Options>(&mut md);
    service_options::<bridle_secrets::Options>(&mut md);
    out.insert(PathBuf::from("docs/src/reference/options.md"), md);
}

// ------------------------------------------------------------------ CLI

fn help(bin: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(bin)
        .args(args)
        .arg("--help")
        // clap shows the value of an option's variable when it is set: none is.
        .env_clear()
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(out.status.success(), "bridle {args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a help text lists under "Commands:".
fn subcommands(help: &str) -> Vec<String> {
    let mut in_commands = false;
    let mut out = Vec::new();
    for line in help.lines() {
        if line.trim_end() == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                break;
            }
            // A command's line starts two spaces in; wrapped description lines further.
            if line.starts_with("   ") {
                continue;
            }
            if let Some(name) = line.split_whitespace().next()
                && name != "help"
            {
                out.push(name.to_string());
            }
        }
    }
    out
}

fn cli_page(bin: &Path, path: &mut Vec<String>, md: &mut String) {
    let args: Vec<&str> = path.iter().map(String::as_str).collect();
    let text = help(bin, &args);
    let title = if path.is_empty() {
        "bridle".to_string()
    } else {
        format!("bridle {}", path.join(" "))
    };
    let _ = write!(md, "## {title}\n\n```text\n{}\n```\n\n", text.trim_end());
    for sub in subcommands(&text) {
        path.push(sub);
        cli_page(bin, path, md);
        path.pop();
    }
}

fn cli(out: &mut BTreeMap<PathBuf, String>) {
    let bin = bridle_testkit::paths::binary("bridle").unwrap();
    let mut md = String::from(GENERATED);
    md.push_str(
        "# The `bridle` command\n\nEvery command and flag, as `bridle ... --help` prints them.\n\n",
    );
    cli_page(&bin, &mut Vec::new(), &mut md);
    out.insert(PathBuf::from("docs/src/reference/cli.md"), md);
}

// ------------------------------------------------------------------ gRPC

/// Comments by source path (the descriptor's `SourceCodeInfo`).
fn comments(file: &prost_types::FileDescriptorProto) -> BTreeMap<Vec<i32>, String> {
    let mut out = BTreeMap::new();
    if let Some(info) = &file.source_code_info {
        for loc in &info.location {
            let text = loc
                .leading_comments
                .clone()
                .or_else(|| loc.trailing_comments.clone())
                .unwrap_or_default();
            let text: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            if !text.is_empty() {
                out.insert(loc.path.clone(), text.join(" "));
            }
        }
    }
    out
}

fn field_type(f: &prost_types::FieldDescriptorProto) -> String {
    use prost_types::field_descriptor_proto::{Label, Type};
    let base = match f.r#type() {
        Type::Message | Type::Enum => f
            .type_name
            .clone()
            .unwrap_or_default()
            .trim_start_matches(".bridle.v1.")
            .trim_start_matches('.')
            .to_string(),
        t => format!("{t:?}").to_lowercase(),
    };
    if f.label() == Label::Repeated {
        format!("repeated {base}")
    } else if f.proto3_optional == Some(true) {
        format!("optional {base}")
    } else {
        base
    }
}

fn message(
    md: &mut String,
    notes: &BTreeMap<Vec<i32>, String>,
    m: &prost_types::DescriptorProto,
    name: &str,
    path: &[i32],
) {
    let _ = writeln!(md, "### {name}\n");
    if let Some(c) = notes.get(path) {
        let _ = writeln!(md, "{c}\n");
    }
    if !m.field.is_empty() {
        md.push_str("| field | number | type | description |\n|---|---|---|---|\n");
        for (i, f) in m.field.iter().enumerate() {
            let mut p = path.to_vec();
            p.extend([2, i as i32]);
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} |",
                f.name(),
                f.number(),
                field_type(f),
                notes.get(&p).map(|c| cell(c)).unwrap_or_default()
            );
        }
        md.push('\n');
    }
    for (i, e) in m.enum_type.iter().enumerate() {
        let mut p = path.to_vec();
        p.extend([4, i as i32]);
        enumeration(md, notes, e, &format!("{name}.{}", e.name()), &p);
    }
    for (i, n) in m.nested_type.iter().enumerate() {
        if n.options.as_ref().is_some_and(|o| o.map_entry()) {
            continue;
        }
        let mut p = path.to_vec();
        p.extend([3, i as i32]);
        message(md, notes, n, &format!("{name}.{}", n.name()), &p);
    }
}

fn enumeration(
    md: &mut String,
    notes: &BTreeMap<Vec<i32>, String>,
    e: &prost_types::EnumDescriptorProto,
    name: &str,
    path: &[i32],
) {
    let _ = writeln!(md, "### enum {name}\n");
    if let Some(c) = notes.get(path) {
        let _ = writeln!(md, "{c}\n");
    }
    md.push_str("| value | number | description |\n|---|---|---|\n");
    for (i, v) in e.value.iter().enumerate() {
        let mut p = path.to_vec();
        p.extend([2, i as i32]);
        let _ = writeln!(
            md,
            "| `{}` | {} | {} |",
            v.name(),
            v.number(),
            notes.get(&p).map(|c| cell(c)).unwrap_or_default()
        );
    }
    md.push('\n');
}

fn grpc(out: &mut BTreeMap<PathBuf, String>) {
    let set: prost_types::FileDescriptorSet =
        prost::Message::decode(bridle_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut md = String::from(GENERATED);
    md.push_str(
        "# gRPC API\n\nEvery service, method, message and field of package `bridle.v1`, with \
         the comments of `proto/bridle/v1`.\n\n",
    );
    let mut files: Vec<&prost_types::FileDescriptorProto> = set
        .file
        .iter()
        .filter(|f| f.package() == "bridle.v1")
        .collect();
    files.sort_by_key(|f| f.name().to_string());
    for f in files {
        let notes = comments(f);
        let _ = writeln!(md, "## {}\n", f.name());
        for (si, s) in f.service.iter().enumerate() {
            let _ = writeln!(md, "### service {}\n", s.name());
            if let Some(c) = notes.get(&vec![6, si as i32]) {
                let _ = writeln!(md, "{c}\n");
            }
            md.push_str("| method | request | response | description |\n|---|---|---|---|\n");
            for (mi, m) in s.method.iter().enumerate() {
                let stream = |yes: bool| if yes { "stream " } else { "" };
                let _ = writeln!(
                    md,
                    "| `{}` | {}{} | {}{} | {} |",
                    m.name(),
                    stream(m.client_streaming()),
                    m.input_type().trim_start_matches(".bridle.v1."),
                    stream(m.server_streaming()),
                    m.output_type().trim_start_matches(".bridle.v1."),
                    notes
                        .get(&vec![6, si as i32, 2, mi as i32])
                        .map(|c| cell(c))
                        .unwrap_or_default()
                );
            }
            md.push('\n');
        }
        for (i, m) in f.message_type.iter().enumerate() {
            message(&mut md, &notes, m, m.name(), &[4, i as i32]);
        }
        for (i, e) in f.enum_type.iter().enumerate() {
            enumeration(&mut md, &notes, e, e.name(), &[5, i as i32]);
        }
    }
    out.insert(PathBuf::from("docs/src/reference/grpc.md"), md);
}

// ------------------------------------------------------------------ the check

#[test]
fn the_committed_reference_matches_the_code() {
    let mut out = BTreeMap::new();
    manifests(&mut out);
    options(&mut out);
    cli(&mut out);
    grpc(&mut out);
    let root = bridle_testkit::paths::workspace_root();
    let write = std::env::var_os("BRIDLE_WRITE_REFERENCE").is_some();
    let mut stale = Vec::new();
    for (path, content) in &out {
        let full = root.join(path);
        let committed = std::fs::read_to_string(&full).unwrap_or_default();
        if committed == *content {
            continue;
        }
        if write {
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, content).unwrap();
        } else {
            let line = committed
                .lines()
                .zip(content.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| committed.lines().count().min(content.lines().count()));
            stale.push(format!(
                "{} differs from the code from line {} (committed {:?}, generated {:?})",
                path.display(),
                line + 1,
                committed.lines().nth(line).unwrap_or("<end>"),
                content.lines().nth(line).unwrap_or("<end>"),
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "the reference is out of date; rewrite it with \
         BRIDLE_WRITE_REFERENCE=1 cargo nextest run -p bridle-cli --test reference:\n{}",
        stale.join("\n")
    );
    // Every manifest field and option is findable: the tables are not empty.
    for page in ["manifests", "options", "grpc", "cli"] {
        let text = &out[&PathBuf::from(format!("docs/src/reference/{page}.md"))];
        assert!(
            text.lines().count() > 50,
            "{page} has {} lines",
            text.lines().count()
        );
    }
}
