//! From Policy manifests to one Cedar policy set: parse, check against the schema, check the
//! annotations Bridle reads, and rename every policy `<manifest>.<id>` so a decision can say
//! which manifest and which policy made it. Problems carry their line in the Cedar text.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use cedar_policy::{Effect, Policy, PolicyId, PolicySet, ValidationMode, Validator};
use miette::Diagnostic;

use super::schema;
use crate::error::quote;

/// The annotation that turns a permit into "allowed once a person approves".
pub const REQUIRE_APPROVAL: &str = "require_approval";
/// The sentence shown to the model, the approver and the audit when this policy decides.
pub const REASON: &str = "reason";
/// The policy's name within its manifest (default: its position, `0`, `1`, ...).
pub const ID: &str = "id";
const KNOWN_ANNOTATIONS: [&str; 3] = [ID, REASON, REQUIRE_APPROVAL];

/// One problem in a manifest's Cedar text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CedarProblem {
    /// 1-based line and column within the Cedar text, when Cedar says where.
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub message: String,
}

/// What Bridle reads from one policy besides its Cedar meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyMeta {
    pub manifest: String,
    pub effect: Effect,
    /// Some (with the annotation's text, possibly empty) for `@require_approval` permits.
    pub approval: Option<String>,
    pub reason: Option<String>,
}

/// A tenant's policies, ready to evaluate.
#[derive(Debug)]
pub struct Compiled {
    pub set: PolicySet,
    pub meta: HashMap<PolicyId, PolicyMeta>,
    /// Which argument forms some policy may read; the others are not built (for large
    /// arguments, building them is most of a decision's cost).
    pub reads: Reads,
}

/// Which forms of the arguments the policies name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// `context.arguments` (the record).
    pub arguments: bool,
    /// `context.argumentsJson`.
    pub json: bool,
    /// `context.argumentsValid`.
    pub valid: bool,
}

impl Reads {
    pub const ALL: Reads = Reads {
        arguments: true,
        json: true,
        valid: true,
    };
}

/// True when `text` names the context attribute `word` anywhere (comments included: a false
/// positive only costs time).
fn mentions(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, m)| {
        !text[i + m.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

fn reads_of(text: &str) -> Reads {
    Reads {
        arguments: mentions(text, "arguments"),
        json: mentions(text, "argumentsJson"),
        valid: mentions(text, "argumentsValid"),
    }
}

fn validator() -> Result<&'static Validator, String> {
    static V: OnceLock<Result<Validator, String>> = OnceLock::new();
    V.get_or_init(|| {
        schema::schema()
            .map(|s| Validator::new(s.clone()))
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// 1-based (line, column) of a byte offset.
fn position(text: &str, offset: usize) -> (u32, u32) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

fn message(d: &dyn Diagnostic) -> String {
    plain(&match d.help() {
        Some(h) => format!("{d} ({h})"),
        None => d.to_string(),
    })
}

/// A Cedar message in the author's terms. Cedar's type checker names its internal types
/// (`__cedar::internal::AnyEntity`, `OpenRecord`, `Union<..>`) and calls policies by the ids
/// it gave them (`policy0`); Bridle numbers them the same way from 0 (their default `@id`).
pub(crate) fn plain(message: &str) -> String {
    const UNION: &str = "__cedar::internal::Union<";
    let mut out = message.to_string();
    // A union's members are entity types (no `>` inside): "A or B".
    while let Some(start) = out.find(UNION) {
        let body = start + UNION.len();
        let Some(len) = out[body..].find('>') else {
            break;
        };
        let members = out[body..body + len].replace(", ", " or ");
        out.replace_range(start..body + len + 1, &members);
    }
    for (internal, plain) in [
        ("Set<__cedar::internal::AnyEntity>", "a set of entities"),
        ("Set<__cedar::internal::Any>", "a set"),
        ("__cedar::internal::AnyEntity", "an entity"),
        ("__cedar::internal::OpenRecord{}", "a record"),
        ("__cedar::internal::OpenRecord{", "a record {"),
        ("__cedar::internal::True", "true"),
        ("__cedar::internal::False", "false"),
        ("__cedar::internal::Never", "no value"),
        ("__cedar::internal::", ""),
    ] {
        out = out.replace(internal, plain);
    }
    // "for policy `policy3`, x" -> "policy 3: x"
    const FOR_POLICY: &str = "for policy `policy";
    let mut from = 0;
    while let Some(i) = out[from..].find(FOR_POLICY).map(|i| from + i) {
        let digits = i + FOR_POLICY.len();
        let n = out[digits..].bytes().take_while(u8::is_ascii_digit).count();
        let end = digits + n;
        if n > 0 && out[end..].starts_with("`, ") {
            let replacement = format!("policy {}: ", &out[digits..end]);
            out.replace_range(i..end + 3, &replacement);
            from = i + replacement.len();
        } else {
            from = digits;
        }
    }
    out
}

fn first_span(d: &dyn Diagnostic) -> Option<(usize, usize)> {
    d.labels()?.next().map(|l| (l.offset(), l.len()))
}

/// Cedar quotes the text it stumbles on ("invalid variable: <the word>"), which can be as long
/// as the text: every word past `bridle_core::redact::QUOTE_CHARS` characters is cut there, and
/// the message to a few lines.
fn bounded(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(1024));
    let mut rest = message;
    while !rest.is_empty() {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        out.push_str(&quote(&rest[..end]));
        let spaces = rest[end..]
            .find(|c: char| !c.is_whitespace())
            .map_or(rest.len(), |i| end + i);
        out.push_str(&rest[end..spaces]);
        rest = &rest[spaces..];
    }
    bridle_core::redact::preview(&out, 1000)
}

fn problem(text: &str, d: &dyn Diagnostic) -> CedarProblem {
    let (line, column) = match first_span(d) {
        Some((offset, _)) => {
            let (l, c) = position(text, offset);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    CedarProblem {
        line,
        column,
        message: bounded(&message(d)),
    }
}

/// The diagnostic and the ones related to it (Cedar puts the 2nd..nth parse error there).
fn problems(text: &str, d: &dyn Diagnostic) -> Vec<CedarProblem> {
    let mut out = vec![problem(text, d)];
    if let Some(related) = d.related() {
        out.extend(related.map(|r| problem(text, r)));
    }
    out
}

/// True when the error is about an access under `context.arguments`, whose shape the schema
/// cannot know (see `schema::SCHEMA`).
fn is_argument_access(text: &str, d: &dyn Diagnostic) -> bool {
    let Some((offset, len)) = first_span(d) else {
        return false;
    };
    let snippet: String = text
        .get(offset..offset.saturating_add(len))
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    snippet.starts_with("context.arguments.") || snippet.starts_with("context[\"arguments\"]")
}

#[cfg(test)]
#[test]
fn argument_reads_are_found() {
    let mentions_arguments = |t: &str| reads_of(t).arguments;
    assert!(mentions_arguments("when { context.arguments.x == 1 }"));
    assert!(mentions_arguments("when { context has arguments }"));
    assert!(mentions_arguments("when { context[\"arguments\"] has x }"));
    assert!(!mentions_arguments(
        "when { context.argumentsJson like \"*rm*\" }"
    ));
    assert!(!mentions_arguments("when { context.argumentsValid }"));
    assert_eq!(
        reads_of("when { context.argumentsValid && context.argumentsJson like \"*x*\" }"),
        Reads {
            arguments: false,
            json: true,
            valid: true
        }
    );
}

/// Line of the first `@key` in the text, for problems Cedar gives no location for.
fn line_of(text: &str, needle: &str) -> Option<u32> {
    text.find(needle).map(|i| position(text, i).0)
}

/// Bounds, parses and checks one manifest's Cedar text (every Cedar text this service takes
/// in goes through here: apply, dry run, and compiling stored policies). Returns its policies
/// renamed `<manifest>.<id>`, or every problem found.
pub fn compile_manifest(
    manifest: &str,
    text: &str,
) -> Result<Vec<(Policy, PolicyMeta)>, Vec<CedarProblem>> {
    // Before Cedar sees the text: past these bounds, Cedar's recursion overflows the stack
    // and the process aborts (see `nesting`).
    if let Err(e) = super::nesting::check(text) {
        let (line, column) = position(text, e.offset());
        return Err(vec![CedarProblem {
            line: Some(line),
            column: Some(column),
            message: e.message(),
        }]);
    }
    let set: PolicySet = text
        .parse()
        .map_err(|e: cedar_policy::ParseErrors| problems(text, &e))?;
    let mut out_problems = Vec::new();
    if set.templates().next().is_some() {
        out_problems.push(CedarProblem {
            line: line_of(text, "?principal").or_else(|| line_of(text, "?resource")),
            column: None,
            message: "templates (?principal, ?resource) are not supported; write the entity".into(),
        });
    }
    if set.policies().next().is_none() && out_problems.is_empty() {
        out_problems.push(CedarProblem {
            line: None,
            column: None,
            message: "holds no Cedar policy".into(),
        });
    }
    let v = match validator() {
        Ok(v) => v,
        Err(e) => {
            out_problems.push(CedarProblem {
                line: None,
                column: None,
                message: e,
            });
            return Err(out_problems);
        }
    };
    let result = v.validate(&set, ValidationMode::Strict);
    for e in result.validation_errors() {
        if !is_argument_access(text, e) {
            out_problems.extend(problems(text, e));
        }
    }

    // Policies in source order: Cedar numbers them policy0, policy1, ... as parsed.
    let mut policies: Vec<&Policy> = set.policies().collect();
    policies.sort_by_key(|p| {
        p.id()
            .to_string()
            .trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, p) in policies.into_iter().enumerate() {
        for (key, _) in p.annotations() {
            if !KNOWN_ANNOTATIONS.contains(&key) {
                out_problems.push(CedarProblem {
                    line: line_of(text, &format!("@{key}")),
                    column: None,
                    message: format!(
                        "policy {i}: unknown annotation @{}; Bridle reads @id, @reason and \
                         @require_approval (a misspelt @require_approval would allow the call)",
                        quote(key)
                    ),
                });
            }
        }
        let approval = p.annotation(REQUIRE_APPROVAL).map(str::to_string);
        if approval.is_some() && p.effect() == Effect::Forbid {
            out_problems.push(CedarProblem {
                line: line_of(text, "@require_approval"),
                column: None,
                message: format!(
                    "policy {i}: @require_approval belongs on a permit; a forbid always denies"
                ),
            });
        }
        let local = p
            .annotation(ID)
            .map(str::to_string)
            .unwrap_or_else(|| i.to_string());
        if local.is_empty() || local.contains(char::is_whitespace) {
            out_problems.push(CedarProblem {
                line: line_of(text, "@id"),
                column: None,
                message: format!("policy {i}: @id must be a word without spaces"),
            });
        }
        if !seen.insert(local.clone()) {
            out_problems.push(CedarProblem {
                line: line_of(text, &format!("@id(\"{local}\")")),
                column: None,
                message: format!(
                    "policy id '{}' is used twice in this manifest",
                    quote(&local)
                ),
            });
        }
        let id = PolicyId::new(format!("{manifest}.{local}"));
        let meta = PolicyMeta {
            manifest: manifest.to_string(),
            effect: p.effect(),
            approval,
            reason: p.annotation(REASON).map(str::to_string),
        };
        out.push((p.new_id(id), meta));
    }
    if out_problems.is_empty() {
        Ok(out)
    } else {
        Err(out_problems)
    }
}

/// Every manifest of a tenant as one set. `manifests` are (name, Cedar text).
pub fn compile_all(manifests: &[(String, String)]) -> Result<Compiled, String> {
    let mut set = PolicySet::new();
    let mut meta = HashMap::new();
    let mut reads = Reads::default();
    for (name, text) in manifests {
        let r = reads_of(text);
        reads.arguments |= r.arguments;
        reads.json |= r.json;
        reads.valid |= r.valid;
        let policies = compile_manifest(name, text).map_err(|p| {
            let first = p
                .first()
                .map(|p| p.message.clone())
                .unwrap_or_else(|| "invalid".into());
            format!("Policy '{name}' does not compile: {first}")
        })?;
        for (p, m) in policies {
            let id = p.id().clone();
            set.add(p)
                .map_err(|e| format!("Policy '{name}': policy {id}: {e}"))?;
            meta.insert(id, m);
        }
    }
    Ok(Compiled { set, meta, reads })
}
