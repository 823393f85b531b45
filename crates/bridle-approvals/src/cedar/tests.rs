use bridle_proto::{Cost, RiskClass, RunFacts, ToolSpec};

use super::*;
use crate::policy::decide;

pub(crate) struct Call {
    pub tool: ToolSpec,
    pub args: String,
    pub granted: Vec<String>,
    pub gated: Vec<String>,
    pub facts: RunFacts,
    pub agent: String,
}

impl Call {
    pub fn new(tool: &str, risk: RiskClass, args: &str) -> Self {
        Self {
            tool: ToolSpec {
                name: tool.into(),
                risk: risk as i32,
                tags: vec!["finance".into()],
                kind: bridle_proto::ToolKind::Container.into(),
                ..Default::default()
            },
            args: args.into(),
            granted: vec![tool.into()],
            gated: vec![],
            facts: RunFacts {
                step: 2,
                tokens_so_far: 1500,
                cost_so_far: Some(Cost {
                    known: true,
                    nano_usd: 20_000_000,
                }),
            },
            agent: "analyst".into(),
        }
    }

    pub fn input(&self) -> PolicyInput<'_> {
        PolicyInput {
            tenant: "acme",
            agent: &self.agent,
            run_id: "run_01",
            step: self.facts.step,
            call_id: "call_1",
            tool: &self.tool,
            arguments_json: &self.args,
            arguments_sha256: "",
            facts: Some(&self.facts),
            granted_tools: &self.granted,
            approval_required_tools: &self.gated,
        }
    }
}

pub(crate) fn engine(cedar: &str) -> CedarEngine {
    CedarEngine::from_manifests(&[("guard".to_string(), cedar.to_string())])
        .unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn verdict(e: &CedarEngine, c: &Call) -> Verdict {
    decide(e, &c.input()).unwrap()
}

const GUARD: &str = r#"
@id("reads")
permit(principal, action == Bridle::Action::"call", resource)
when { resource.risk == "read_only" };

@id("mail")
@require_approval("mail leaves the company")
permit(principal == Bridle::Agent::"analyst", action, resource == Bridle::Tool::"send_mail");

@id("no-etc")
@reason("nothing under /etc")
forbid(principal, action, resource)
when { context.arguments has path && context.arguments.path like "/etc/*" };

@id("budget")
forbid(principal, action, resource) when { context.costKnown && context.costNanoUsd > 1000000000 };

@id("finance-tools")
permit(principal in Bridle::Tenant::"acme", action, resource)
when { resource.tags.contains("finance") && resource.risk == "mutating" && context.step < 10 };
"#;

#[test]
fn outcomes_are_as_written() {
    let e = engine(GUARD);
    let v = verdict(
        &e,
        &Call::new("ls", RiskClass::ReadOnly, r#"{"path":"/tmp/x"}"#),
    );
    assert_eq!(v.decision, Decision::Allow, "{v:?}");
    assert_eq!(v.reason, "permitted by policy 'guard.reads'");

    let v = verdict(
        &e,
        &Call::new("ls", RiskClass::ReadOnly, r#"{"path":"/etc/passwd"}"#),
    );
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(
        v.reason,
        "forbidden by policy 'guard.no-etc': nothing under /etc"
    );

    let v = verdict(&e, &Call::new("send_mail", RiskClass::Mutating, "{}"));
    assert_eq!(v.decision, Decision::RequireApproval, "{v:?}");
    assert_eq!(
        v.reason,
        "policy 'guard.mail' requires approval: mail leaves the company"
    );

    // Another agent is not covered by the mail permit, and send_mail is not read-only, but it
    // is a mutating finance tool: finance-tools allows it.
    let mut other = Call::new("send_mail", RiskClass::Mutating, "{}");
    other.agent = "writer".into();
    assert_eq!(verdict(&e, &other).decision, Decision::Allow);
    other.facts.step = 10;
    let v = verdict(&e, &other);
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(
        v.reason,
        "no policy permits agent 'writer' to call tool 'send_mail'"
    );

    // Run facts: spending over a dollar forbids everything.
    let mut rich = Call::new("ls", RiskClass::ReadOnly, "{}");
    rich.facts.cost_so_far = Some(Cost {
        known: true,
        nano_usd: 2_000_000_000,
    });
    assert_eq!(verdict(&e, &rich).decision, Decision::Deny);

    // Nothing permits destructive tools.
    let v = verdict(&e, &Call::new("rm", RiskClass::Destructive, "{}"));
    assert_eq!(v.decision, Decision::Deny);
}

#[test]
fn fixed_rules_wrap_every_policy() {
    let e = engine("permit(principal, action, resource);");
    let mut c = Call::new("rm", RiskClass::Destructive, "{}");
    assert_eq!(
        verdict(&e, &c).decision,
        Decision::Allow,
        "the policy is in charge"
    );
    c.granted = vec!["ls".into()];
    let v = verdict(&e, &c);
    assert_eq!(
        v.decision,
        Decision::Deny,
        "not granted: no policy can allow it"
    );
    assert_eq!(v.reason, "tool 'rm' is not granted to agent 'analyst'");
    c.granted = vec!["rm".into()];
    c.gated = vec!["rm".into()];
    let v = verdict(&e, &c);
    assert_eq!(
        v.decision,
        Decision::RequireApproval,
        "the agent's approval list"
    );
    assert!(
        v.reason.contains("requires approval for every call"),
        "{v:?}"
    );
}

#[test]
fn an_evaluation_error_denies() {
    // No `has` guard: a call without `path` makes the forbid fail to evaluate. Cedar would skip
    // it and let the permit through; Bridle denies.
    let e = engine(
        "permit(principal, action, resource);\n@id(\"p\")\nforbid(principal, action, resource) when { context.arguments.path like \"/etc/*\" };",
    );
    let v = verdict(&e, &Call::new("ls", RiskClass::ReadOnly, r#"{"other":1}"#));
    assert_eq!(v.decision, Decision::Deny);
    assert!(v.reason.contains("guard.p could not be evaluated"), "{v:?}");
    let v = verdict(
        &e,
        &Call::new("ls", RiskClass::ReadOnly, r#"{"path":"/home"}"#),
    );
    assert_eq!(v.decision, Decision::Allow);
}

#[test]
fn arguments_are_values_not_entities() {
    // `__entity` in Cedar's JSON form would make an entity reference; here it stays a record.
    let e = engine(
        "permit(principal, action, resource) when { context.arguments has who && context.arguments.who == principal };",
    );
    let args = r#"{"who":{"__entity":{"type":"Bridle::Agent","id":"analyst"}}}"#;
    let v = verdict(&e, &Call::new("ls", RiskClass::ReadOnly, args));
    assert_eq!(v.decision, Decision::Deny, "{v:?}");

    let e = engine(
        r#"permit(principal, action, resource) when {
            context.argumentsValid && context.arguments.n == 3 && context.arguments.f == "1.5"
            && context.arguments.tags.contains("a") && !(context.arguments has gone)
            && context.argumentsJson == "{\"f\":1.5,\"gone\":null,\"n\":3,\"tags\":[\"a\",\"a\"]}"
        };"#,
    );
    let v = verdict(
        &e,
        &Call::new(
            "ls",
            RiskClass::ReadOnly,
            r#"{"tags":["a","a"], "n": 3, "f": 1.5, "gone": null}"#,
        ),
    );
    assert_eq!(v.decision, Decision::Allow, "{v:?}");
    let v = verdict(&e, &Call::new("ls", RiskClass::ReadOnly, "not json"));
    assert_eq!(v.decision, Decision::Deny, "{v:?}");
}

#[test]
fn the_arguments_text_is_there_when_no_policy_reads_the_record() {
    let e = engine(
        r#"permit(principal, action, resource) when { context.argumentsValid && context.argumentsJson like "*\"dataset\":\"old-*" };"#,
    );
    assert!(!e.compiled.reads.arguments && e.compiled.reads.json && e.compiled.reads.valid);
    let v = verdict(
        &e,
        &Call::new(
            "rm",
            RiskClass::Destructive,
            r#"{ "dataset" : "old-sales" }"#,
        ),
    );
    assert_eq!(v.decision, Decision::Allow, "{v:?}");
    let v = verdict(
        &e,
        &Call::new("rm", RiskClass::Destructive, r#"["dataset","old-sales"]"#),
    );
    assert_eq!(v.decision, Decision::Deny, "not an object: {v:?}");
}

#[test]
fn problems_have_lines() {
    let p = compile_manifest(
        "g",
        "permit(principal, action, resource);\n\npermit(principal action, resource);",
    )
    .unwrap_err();
    assert_eq!(p[0].line, Some(3), "{p:?}");
    assert!(p[0].message.contains("unexpected token"), "{p:?}");

    // Schema errors: a misspelt attribute and an unknown action.
    let p = compile_manifest(
        "g",
        "permit(principal, action, resource)\nwhen { resource.risc == \"x\" };\npermit(principal, action == Action::\"call\", resource);",
    )
    .unwrap_err();
    assert!(
        p.iter()
            .any(|p| p.line == Some(2) && p.message.contains("risc")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.line == Some(3) && p.message.contains("Action::\"call\"")),
        "{p:?}"
    );

    // Bridle's annotations.
    let p = compile_manifest("g", "permit(principal, action, resource);\n@require_aproval\npermit(principal, action, resource);").unwrap_err();
    assert_eq!(p[0].line, Some(2), "{p:?}");
    assert!(
        p[0].message.contains("unknown annotation @require_aproval"),
        "{p:?}"
    );
    let p = compile_manifest(
        "g",
        "@require_approval\nforbid(principal, action, resource);",
    )
    .unwrap_err();
    assert!(p[0].message.contains("belongs on a permit"), "{p:?}");
    let p = compile_manifest("g", "@id(\"a\")\npermit(principal, action, resource);\n@id(\"a\")\npermit(principal, action, resource);").unwrap_err();
    assert!(p[0].message.contains("used twice"), "{p:?}");
    let p =
        compile_manifest("g", "permit(principal == ?principal, action, resource);").unwrap_err();
    assert!(p[0].message.contains("templates"), "{p:?}");
    let p = compile_manifest("g", "// only a comment\n").unwrap_err();
    assert!(p[0].message.contains("no Cedar policy"), "{p:?}");

    // Argument accesses are not checked against the schema (their shape is the model's).
    compile_manifest(
        "g",
        "forbid(principal, action, resource) when { context.arguments has path && context.arguments.path like \"/etc/*\" };\npermit(principal, action, resource) when { context.arguments.n > 3 };",
    )
    .unwrap();
}

/// Cedar's type checker names its own internal types (`__cedar::internal::AnyEntity`) and
/// numbers policies `policy0`, ...; a person reading the error wrote neither.
#[test]
fn type_errors_speak_the_users_terms() {
    let cases = [
        (
            "permit(principal, action, resource);\npermit(principal, action, resource) when { principal in 1 };",
            "policy 1: unexpected type: expected a set of entities, or an entity but saw Long",
        ),
        (
            "permit(principal, action, resource) when { resource.risk.level == 1 };",
            "policy 0: unexpected type: expected an entity, or a record but saw String",
        ),
        (
            "permit(principal, action, resource) when { 1 in principal };",
            "policy 0: unexpected type: expected an entity but saw Long",
        ),
        (
            "permit(principal, action, resource) when { principal == 1 };",
            "the types Long and Bridle::Agent are not compatible (policy 0: both operands",
        ),
    ];
    for (text, want) in cases {
        let p = compile_manifest("g", text).unwrap_err();
        assert!(p[0].message.contains(want), "{want}\n{p:?}");
        assert!(!p[0].message.contains("__cedar"), "{p:?}");
        assert!(!p[0].message.contains("`policy"), "{p:?}");
    }
    assert_eq!(
        compile::plain(
            "expected __cedar::internal::Union<Bridle::Agent, Bridle::Tool>, saw \
             __cedar::internal::OpenRecord{a: Long,} or Set<__cedar::internal::Any> or \
             __cedar::internal::True or __cedar::internal::Never"
        ),
        "expected Bridle::Agent or Bridle::Tool, saw a record {a: Long,} or a set or true or \
         no value"
    );
}

#[test]
fn scrub_blanks_quoted_values() {
    assert_eq!(
        scrub("integer overflow while attempting to add the values `9` and `1`"),
        "integer overflow while attempting to add the values `…` and `…`"
    );
    assert_eq!(
        scrub("record does not have the attribute `path`"),
        "record does not have the attribute `path`"
    );
}

#[test]
fn extension_functions_are_available() {
    let e = engine(
        "permit(principal, action, resource) when { context.arguments has host && ip(context.arguments.host).isLoopback() };",
    );
    let v = verdict(
        &e,
        &Call::new("fetch", RiskClass::ReadOnly, r#"{"host":"127.0.0.1"}"#),
    );
    assert_eq!(v.decision, Decision::Allow, "{v:?}");
    let d = engine(
        "permit(principal, action, resource) when { context.arguments has amount && decimal(context.arguments.amount).lessThan(decimal(\"10.50\")) };",
    );
    let v = verdict(
        &d,
        &Call::new("pay", RiskClass::Mutating, r#"{"amount":"9.99"}"#),
    );
    assert_eq!(v.decision, Decision::Allow, "{v:?}");
    let v = verdict(
        &d,
        &Call::new("pay", RiskClass::Mutating, r#"{"amount":"10.5"}"#),
    );
    assert_eq!(v.decision, Decision::Deny, "{v:?}");
    // Not an address: the extension fails to evaluate, which denies.
    let v = verdict(
        &e,
        &Call::new("fetch", RiskClass::ReadOnly, r#"{"host":"evil.example"}"#),
    );
    assert_eq!(v.decision, Decision::Deny, "{v:?}");
    assert!(v.reason.contains("could not be evaluated"), "{v:?}");
}

#[test]
fn the_readme_example_decides_as_documented() {
    let e = CedarEngine::from_manifests(&[(
        "guardrails".to_string(),
        r#"@id("reads")
permit(principal, action, resource) when { resource.risk == "read_only" };

@id("deletes")
@require_approval("deleting data is for a person to decide")
permit(principal == Bridle::Agent::"data-analyst", action, resource)
when { resource.risk == "destructive" };

@id("no-etc")
@reason("nothing under /etc")
forbid(principal, action, resource)
when { context.arguments has path && context.arguments.path like "/etc/*" };
"#
        .to_string(),
    )])
    .unwrap();
    let mut c = Call::new("rm", RiskClass::Destructive, "{}");
    c.agent = "data-analyst".into();
    assert_eq!(verdict(&e, &c).decision, Decision::RequireApproval);
    let c = Call::new("cat", RiskClass::ReadOnly, r#"{"path":"/etc/shadow"}"#);
    assert_eq!(
        verdict(&e, &c).reason,
        "forbidden by policy 'guardrails.no-etc': nothing under /etc"
    );
}

#[test]
fn arguments_deeper_than_the_bound_are_refused_not_recursed() {
    use crate::canonical::MAX_DEPTH;
    use crate::canonical::tests::{deep_value, dismantle};

    // A value built in code, past what serde_json would parse: refused, without overflowing.
    let v = deep_value(200_000);
    let e = input::cedar_value(&v).err();
    dismantle(v);
    assert_eq!(
        e.as_deref(),
        Some("the arguments nest deeper than 128 levels")
    );

    // As deep as JSON text can be, the call is decided as usual.
    let raw = format!(
        "{}{{\"path\":\"/etc/passwd\"}}{}",
        "{\"a\":".repeat(MAX_DEPTH - 2),
        "}".repeat(MAX_DEPTH - 2)
    );
    assert!(serde_json::from_str::<serde_json::Value>(&raw).is_ok());
    let e = engine(
        "permit(principal, action, resource);\n\
         forbid(principal, action, resource) when { context.arguments has b };",
    );
    let v = verdict(&e, &Call::new("ls", RiskClass::ReadOnly, &raw));
    assert_eq!(v.decision, Decision::Allow, "{v:?}");
}

mod props;
