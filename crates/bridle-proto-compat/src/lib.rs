//! The wire-compatibility check of the `bridle.v1` contracts: two descriptor sets (the protos
//! as they were, and as they are) compared for the changes that break a client built from the
//! old ones. CI runs it (`cargo run -p bridle-proto-compat --bin proto-compat`) against the
//! previous commit on main.
//!
//! Refused: a removed message, enum, service or RPC; a removed field or enum value whose
//! number is not `reserved`; a field whose type or label changed; a number given a new name
//! (a renamed field or value: JSON and generated code break); a field moved to another number;
//! a new field or value on a number the old protos reserved; an RPC whose request, response
//! or streaming changed. Anything else (new messages, fields, values, RPCs; comments; options)
//! passes.
//!
//! It compiles protos with protox, in memory, and never touches the network or the files.

use std::collections::{BTreeMap, BTreeSet};

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

/// Compiles `.proto` sources given as (name, text), e.g. ("bridle/v1/common.proto", "...").
/// Imports resolve among them and the well-known `google/protobuf/*` files.
pub fn compile(sources: &BTreeMap<String, String>) -> Result<FileDescriptorSet, protox::Error> {
    let mut resolver = protox::file::ChainFileResolver::new();
    resolver.add(InMemory(sources.clone()));
    resolver.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.open_files(sources.keys())?;
    Ok(compiler.file_descriptor_set())
}

/// Every `.proto` file under `root`, by its name relative to `root` ("bridle/v1/common.proto").
pub fn sources_in(root: &std::path::Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "proto")
                && let Ok(rel) = path.strip_prefix(root)
            {
                let name = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                out.insert(name, std::fs::read_to_string(&path)?);
            }
        }
    }
    Ok(out)
}

struct InMemory(BTreeMap<String, String>);

impl protox::file::FileResolver for InMemory {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match self.0.get(name) {
            Some(text) => protox::file::File::from_source(name, text),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// One incompatible change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// The old file the element was declared in.
    pub file: String,
    /// The element's full name as the old protos had it (`bridle.v1.Run.tenant`,
    /// `bridle.v1.Orchestrator.StartRun`): what an accepted break names.
    pub symbol: String,
    pub problem: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.symbol, self.problem)
    }
}

/// Every incompatible change from `old` to `new`, in a stable order.
pub fn check(old: &FileDescriptorSet, new: &FileDescriptorSet) -> Vec<Violation> {
    let (old, new) = (Index::of(old), Index::of(new));
    let mut out = Vec::new();
    for (name, (file, m)) in &old.messages {
        let v = |symbol: String, problem: String| Violation {
            file: file.clone(),
            symbol,
            problem,
        };
        match new.messages.get(name) {
            None => out.push(v(
                name.clone(),
                "message removed (clients still send or read it; deprecate it instead)".into(),
            )),
            Some((_, n)) => out.extend(
                message(name, m, n)
                    .into_iter()
                    .map(|(symbol, problem)| v(symbol, problem)),
            ),
        }
    }
    for (name, (file, e)) in &old.enums {
        let v = |symbol: String, problem: String| Violation {
            file: file.clone(),
            symbol,
            problem,
        };
        match new.enums.get(name) {
            None => out.push(v(
                name.clone(),
                "enum removed (clients still send or read it)".into(),
            )),
            Some((_, n)) => out.extend(
                enumeration(name, e, n)
                    .into_iter()
                    .map(|(symbol, problem)| v(symbol, problem)),
            ),
        }
    }
    for (name, (file, s)) in &old.services {
        let v = |symbol: String, problem: String| Violation {
            file: file.clone(),
            symbol,
            problem,
        };
        match new.services.get(name) {
            None => out.push(v(
                name.clone(),
                "service removed (clients still call it)".into(),
            )),
            Some((_, n)) => out.extend(
                service(name, s, n)
                    .into_iter()
                    .map(|(symbol, problem)| v(symbol, problem)),
            ),
        }
    }
    out.sort();
    out
}

/// Messages, enums and services by full name (nested ones included), with their file.
#[derive(Default)]
struct Index<'a> {
    messages: BTreeMap<String, (String, &'a DescriptorProto)>,
    enums: BTreeMap<String, (String, &'a EnumDescriptorProto)>,
    services: BTreeMap<String, (String, &'a ServiceDescriptorProto)>,
}

impl<'a> Index<'a> {
    fn of(set: &'a FileDescriptorSet) -> Self {
        let mut ix = Index::default();
        for f in &set.file {
            let file = f.name().to_string();
            let package = f.package();
            for m in &f.message_type {
                ix.add_message(&file, package, m);
            }
            for e in &f.enum_type {
                ix.enums.insert(join(package, e.name()), (file.clone(), e));
            }
            for s in &f.service {
                ix.services
                    .insert(join(package, s.name()), (file.clone(), s));
            }
        }
        ix
    }

    fn add_message(&mut self, file: &str, scope: &str, m: &'a DescriptorProto) {
        let name = join(scope, m.name());
        for nested in &m.nested_type {
            self.add_message(file, &name, nested);
        }
        for e in &m.enum_type {
            self.enums
                .insert(join(&name, e.name()), (file.to_string(), e));
        }
        self.messages.insert(name, (file.to_string(), m));
    }
}

fn join(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_string()
    } else {
        format!("{scope}.{name}")
    }
}

/// A field's type as a proto file says it: `string`, `bridle.v1.Actor`.
fn type_of(f: &FieldDescriptorProto) -> String {
    match f.r#type() {
        Type::Message | Type::Enum | Type::Group => f.type_name().trim_start_matches('.').into(),
        t => t
            .as_str_name()
            .trim_start_matches("TYPE_")
            .to_ascii_lowercase(),
    }
}

fn label_of(f: &FieldDescriptorProto) -> &'static str {
    match f.label() {
        Label::Repeated => "repeated",
        Label::Required => "required",
        Label::Optional => "singular",
    }
}

fn reserved(ranges: impl IntoIterator<Item = (i32, i32)>, number: i32) -> bool {
    ranges
        .into_iter()
        .any(|(start, end)| start <= number && number < end)
}

fn fields_by_number(m: &DescriptorProto) -> BTreeMap<i32, &FieldDescriptorProto> {
    m.field.iter().map(|f| (f.number(), f)).collect()
}

/// What changed incompatibly in message `name`: (symbol, problem).
fn message(name: &str, old: &DescriptorProto, new: &DescriptorProto) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // Message reserved ranges: [start, end).
    let new_reserved = new
        .reserved_range
        .iter()
        .map(|r| (r.start(), r.end()))
        .collect::<Vec<_>>();
    let old_reserved = old
        .reserved_range
        .iter()
        .map(|r| (r.start(), r.end()))
        .collect::<Vec<_>>();
    let (olds, news) = (fields_by_number(old), fields_by_number(new));
    for (n, f) in &olds {
        let symbol = join(name, f.name());
        match news.get(n) {
            Some(g) => {
                if g.name() != f.name() {
                    out.push((
                        symbol.clone(),
                        format!(
                            "field {n} renamed from '{}' to '{}' (JSON and generated code break; add a new field instead)",
                            f.name(),
                            g.name()
                        ),
                    ));
                }
                if type_of(g) != type_of(f) {
                    out.push((
                        symbol.clone(),
                        format!(
                            "field {n} changed type from {} to {}",
                            type_of(f),
                            type_of(g)
                        ),
                    ));
                }
                if label_of(g) != label_of(f) {
                    out.push((
                        symbol,
                        format!(
                            "field {n} changed label from {} to {}",
                            label_of(f),
                            label_of(g)
                        ),
                    ));
                }
            }
            None => {
                if let Some(moved) = new.field.iter().find(|g| g.name() == f.name()) {
                    out.push((
                        symbol,
                        format!(
                            "field moved from number {n} to {} (old clients no longer read it)",
                            moved.number()
                        ),
                    ));
                } else if !reserved(new_reserved.iter().copied(), *n) {
                    out.push((
                        symbol,
                        format!(
                            "field {n} removed without reserving its number (add `reserved {n};` and `reserved \"{}\";`)",
                            f.name()
                        ),
                    ));
                }
            }
        }
    }
    for (n, g) in &news {
        if !olds.contains_key(n) && reserved(old_reserved.iter().copied(), *n) {
            out.push((
                join(name, g.name()),
                format!("field '{}' reuses number {n}, which was reserved", g.name()),
            ));
        }
    }
    out
}

/// What changed incompatibly in enum `name`: (symbol, problem).
fn enumeration(
    name: &str,
    old: &EnumDescriptorProto,
    new: &EnumDescriptorProto,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // Enum reserved ranges are inclusive: [start, end].
    let new_reserved = new
        .reserved_range
        .iter()
        .map(|r| (r.start(), r.end().saturating_add(1)))
        .collect::<Vec<_>>();
    let old_reserved = old
        .reserved_range
        .iter()
        .map(|r| (r.start(), r.end().saturating_add(1)))
        .collect::<Vec<_>>();
    // Aliases (allow_alias) put several names on one number: compare the sets of names.
    let names = |e: &EnumDescriptorProto| -> BTreeMap<i32, BTreeSet<String>> {
        let mut m: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
        for v in &e.value {
            m.entry(v.number())
                .or_default()
                .insert(v.name().to_string());
        }
        m
    };
    let (olds, news) = (names(old), names(new));
    // An enum's values are scoped to the enum's parent (`bridle.v1.APPROVAL_STATE_PENDING`),
    // but named here under the enum, which says more.
    for (n, old_names) in &olds {
        for v in old_names {
            let symbol = join(name, v);
            match news.get(n) {
                Some(new_names) if new_names.contains(v) => {}
                Some(new_names) => out.push((
                    symbol,
                    format!(
                        "value {n} renamed from {v} to {} (JSON and generated code break)",
                        new_names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )),
                None if reserved(new_reserved.iter().copied(), *n) => {}
                None => out.push((
                    symbol,
                    format!(
                        "value {n} removed without reserving its number (add `reserved {n};` and `reserved \"{v}\";`)"
                    ),
                )),
            }
        }
    }
    for (n, new_names) in &news {
        if !olds.contains_key(n) && reserved(old_reserved.iter().copied(), *n) {
            for v in new_names {
                out.push((
                    join(name, v),
                    format!("value {v} reuses number {n}, which was reserved"),
                ));
            }
        }
    }
    out
}

/// What changed incompatibly in service `name`: (symbol, problem).
fn service(
    name: &str,
    old: &ServiceDescriptorProto,
    new: &ServiceDescriptorProto,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for m in &old.method {
        let symbol = join(name, m.name());
        let Some(n) = new.method.iter().find(|n| n.name() == m.name()) else {
            out.push((symbol, "RPC removed (clients still call it)".into()));
            continue;
        };
        let shape = |x: &prost_types::MethodDescriptorProto| {
            format!(
                "({}{}) returns ({}{})",
                if x.client_streaming() { "stream " } else { "" },
                x.input_type().trim_start_matches('.'),
                if x.server_streaming() { "stream " } else { "" },
                x.output_type().trim_start_matches('.'),
            )
        };
        if shape(m) != shape(n) {
            out.push((
                symbol,
                format!("RPC changed from {} to {}", shape(m), shape(n)),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
