//! Policy manifests through the service: Cedar validated on apply with the file's line, then
//! used by Evaluate; the built-in rules for a tenant without policies.

use std::time::Duration;

use bridle_proto::{
    ApplyRequest, DeleteManifestRequest, ManifestDocument, PolicyDecision, RiskClass,
};

use crate::helpers::*;

fn doc(source: &str, first_line: u32, name: &str, cedar: &str) -> ManifestDocument {
    let body: String = cedar.lines().map(|l| format!("    {l}\n")).collect();
    ManifestDocument {
        source: source.into(),
        first_line,
        yaml: format!(
            "apiVersion: bridle.dev/v1\nkind: Policy\nmetadata:\n  name: {name}\n  tenant: acme\nspec:\n  cedar: |\n{body}"
        ),
    }
}

async fn apply(h: &Harness, docs: Vec<ManifestDocument>) -> Result<(), tonic::Status> {
    h.manifests()
        .await
        .apply(ApplyRequest {
            actor: None,
            documents: docs,
            dry_run: false,
            tenant: "acme".into(),
        })
        .await
        .map(|_| ())
}

const GUARD: &str = r#"@id("reads")
permit(principal, action, resource) when { resource.risk == "read_only" };
@id("deletes")
@require_approval("deleting is for people to decide")
permit(principal == Bridle::Agent::"analyst", action, resource)
when { resource.risk == "destructive" };
@id("no-users")
@reason("the users table is off limits")
forbid(principal, action, resource)
when { context.arguments has table && context.arguments.table == "users" };"#;

#[tokio::test]
async fn malformed_policies_are_refused_at_their_line() {
    let h = Harness::start().await;
    // Line 3 of the Cedar text lacks a comma. The document starts at line 11 of its file and
    // `cedar: |` is its line 7, so the Cedar text starts at file line 18: the error is at 20.
    let bad = "permit(principal, action, resource);\n\npermit(principal action, resource);";
    let e = apply(&h, vec![doc("policies.yaml#2", 11, "guard", bad)])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let m = e.message();
    assert!(
        m.contains("policies.yaml#2:20: Policy 'guard': spec.cedar: ")
            && m.contains("(line 3, column 18 of the Cedar text)"),
        "{m}"
    );

    // Canonical YAML from the CLI carries no file lines: the line within the Cedar text.
    let e = apply(&h, vec![doc("policies.yaml", 0, "guard", bad)])
        .await
        .unwrap_err();
    assert!(
        e.message().contains(
            "policies.yaml: Policy 'guard': spec.cedar: line 3, column 18 of the Cedar text: "
        ),
        "{}",
        e.message()
    );

    // Schema problems too, all of them at once, and nothing is stored.
    let e = apply(
        &h,
        vec![
            doc(
                "a.yaml",
                1,
                "one",
                "permit(principal, action, resource)\nwhen { resource.risc == \"x\" };",
            ),
            doc(
                "b.yaml",
                1,
                "two",
                "@require_aproval\npermit(principal, action, resource);",
            ),
        ],
    )
    .await
    .unwrap_err();
    let m = e.message();
    assert!(
        m.contains("a.yaml:9: Policy 'one'") && m.contains("risc"),
        "{m}"
    );
    assert!(
        m.contains("b.yaml:8: Policy 'two'") && m.contains("@require_aproval"),
        "{m}"
    );
    let r = h
        .evaluate(request(
            &new_run(),
            "c",
            "ls",
            RiskClass::Mutating,
            "{}",
            &["ls"],
        ))
        .await;
    assert_eq!(
        r.decision,
        PolicyDecision::Allow as i32,
        "built-in rules still: {r:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn evaluate_uses_the_tenants_policies() {
    let h = Harness::start().await;
    let granted = ["ls", "drop_table", "mail"];
    let eval = |tool: &str, risk: RiskClass, args: &str| {
        request(&new_run(), "c1", tool, risk, args, &granted)
    };
    // No policies yet: the built-in rules (a mutating tool is allowed).
    let r = h.evaluate(eval("mail", RiskClass::Mutating, "{}")).await;
    assert_eq!(r.decision, PolicyDecision::Allow as i32, "{r:?}");

    apply(&h, vec![doc("p.yaml", 1, "guard", GUARD)])
        .await
        .unwrap();
    let r = h
        .evaluate(eval("ls", RiskClass::ReadOnly, r#"{"table":"orders"}"#))
        .await;
    assert_eq!(r.decision, PolicyDecision::Allow as i32, "{r:?}");
    let r = h
        .evaluate(eval("ls", RiskClass::ReadOnly, r#"{"table":"users"}"#))
        .await;
    assert_eq!(r.decision, PolicyDecision::Deny as i32, "{r:?}");
    assert_eq!(
        r.reason,
        "forbidden by policy 'guard.no-users': the users table is off limits"
    );
    let r = h
        .evaluate(eval(
            "drop_table",
            RiskClass::Destructive,
            r#"{"table":"x"}"#,
        ))
        .await;
    assert_eq!(r.decision, PolicyDecision::RequireApproval as i32, "{r:?}");
    let a = r.approval.unwrap();
    assert_eq!(
        a.policy_reason,
        "policy 'guard.deletes' requires approval: deleting is for people to decide"
    );
    // Default deny under policies: nothing permits a mutating tool now.
    let r = h.evaluate(eval("mail", RiskClass::Mutating, "{}")).await;
    assert_eq!(r.decision, PolicyDecision::Deny as i32, "{r:?}");
    assert_eq!(
        r.reason,
        "no policy permits agent 'analyst' to call tool 'mail'"
    );
    // Another tenant has no policies: built-in rules.
    let mut other = eval("mail", RiskClass::Mutating, "{}");
    other.scope.as_mut().unwrap().tenant = "globex".into();
    assert_eq!(
        h.evaluate(other).await.decision,
        PolicyDecision::Allow as i32
    );

    // A replica that already cached the policies sees a change made through another one.
    let (replica, replica_stop) = service(&h.redis, &h.prefix, Duration::from_secs(5)).await;
    let r = replica
        .clone()
        .evaluate(eval("mail", RiskClass::Mutating, "{}"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.decision, PolicyDecision::Deny as i32);
    h.manifests()
        .await
        .delete_manifest(DeleteManifestRequest {
            actor: None,
            tenant: "acme".into(),
            kind: bridle_proto::ManifestKind::Policy.into(),
            name: "guard".into(),
        })
        .await
        .unwrap();
    let r = replica
        .clone()
        .evaluate(eval("mail", RiskClass::Mutating, "{}"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.decision,
        PolicyDecision::Allow as i32,
        "back to the built-in rules"
    );
    assert!(replica_stop.drain(WAIT).await);

    // Every evaluation was audited with its decision and reason.
    let audit = h.audit().await;
    assert!(
        audit.iter().any(|a| a["decision"] == "deny"
            && a["reason"]
                == "forbidden by policy 'guard.no-users': the users table is off limits"),
        "{audit:?}"
    );
    h.stop().await;
}

async fn dry_run(h: &Harness, docs: Vec<ManifestDocument>) -> Result<(), tonic::Status> {
    h.manifests()
        .await
        .apply(ApplyRequest {
            actor: None,
            documents: docs,
            dry_run: true,
            tenant: "acme".into(),
        })
        .await
        .map(|_| ())
}

// On tokio's multi-threaded runtime, as in the service: its workers have 2 MiB stacks, and an
// overflow on one aborts the whole process (this test binary included), so getting an answer
// at all is the point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_cedar_is_refused_and_the_service_survives() {
    let h = Harness::start().await;
    let deep = format!(
        "permit(principal, action, resource)\nwhen {{ {}true{} }};",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    for d in [
        doc("deep.yaml", 1, "deep", &deep),
        doc("deep.yaml", 0, "deep", &deep),
    ] {
        let e = dry_run(&h, vec![d]).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let m = e.message();
        assert!(
            m.contains("nesting deeper than 32") && m.contains("line 2"),
            "{}",
            bridle_core::redact::preview(m, 400)
        );
        assert!(
            m.len() < 2_000,
            "the error quotes no input: {} bytes",
            m.len()
        );
    }
    // The same without dry run, and a long chain of operators (no brackets at all), which
    // nests as deeply once Cedar has built it.
    let chain = format!(
        "permit(principal, action, resource)\nwhen {{ {} > 0 }};",
        vec!["1"; 60_000].join("+")
    );
    let e = apply(&h, vec![doc("chain.yaml", 1, "chain", &chain)])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("operators"),
        "{}",
        bridle_core::redact::preview(e.message(), 400)
    );

    // Nesting up to the limit is accepted and decides, through the same 2 MiB workers.
    // (Records: the most stack per level of the shapes measured; `when {` is one level.)
    let at_limit = format!(
        "permit(principal, action, resource)\nwhen {{ {}true{} has a }};",
        "{a: ".repeat(31),
        "}".repeat(31)
    );
    dry_run(&h, vec![doc("ok.yaml", 1, "ok", &at_limit)])
        .await
        .unwrap();

    // Still serving.
    let r = h
        .evaluate(request(
            &new_run(),
            "c",
            "ls",
            RiskClass::Mutating,
            "{}",
            &["ls"],
        ))
        .await;
    assert_eq!(r.decision, PolicyDecision::Allow as i32, "{r:?}");
    h.stop().await;
}

// A stored policy is compiled again whenever the tenant's version moves: one that never went
// through apply (written by an older version, or straight into Redis) is bounded the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_stored_policy_denies_and_the_service_survives() {
    let h = Harness::start().await;
    apply(
        &h,
        vec![doc(
            "p.yaml",
            1,
            "guard",
            "permit(principal, action, resource);",
        )],
    )
    .await
    .unwrap();
    let data = bridle_core::redis_util::Keys::new(&h.prefix).key("manifests:{approvals}");
    let mut redis = h.redis().await;
    let stored: String = redis::cmd("HGET")
        .arg(&data)
        .arg("Policy/acme/guard")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&stored).unwrap();
    m["spec"]["cedar"] = format!(
        "permit(principal, action, resource) when {{ {}true{} }};",
        "[".repeat(10_000),
        "]".repeat(10_000)
    )
    .into();
    let () = redis::cmd("HSET")
        .arg(&data)
        .arg("Policy/acme/guard")
        .arg(m.to_string())
        .query_async(&mut redis)
        .await
        .unwrap();
    let () = redis::cmd("HINCRBY")
        .arg(h.keys.policy_versions())
        .arg("acme")
        .arg(1)
        .query_async(&mut redis)
        .await
        .map(|_: i64| ())
        .unwrap();

    let r = h
        .evaluate(request(
            &new_run(),
            "c",
            "ls",
            RiskClass::ReadOnly,
            "{}",
            &["ls"],
        ))
        .await;
    assert_eq!(r.decision, PolicyDecision::Deny as i32, "{r:?}");
    assert!(
        r.reason
            .contains("Policy 'guard' does not compile: nesting deeper than 32"),
        "{}",
        r.reason
    );
    h.stop().await;
}
