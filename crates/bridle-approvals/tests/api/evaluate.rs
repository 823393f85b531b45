use bridle_proto::{ApprovalState, PolicyDecision, RiskClass};
use prost_types::Duration as PbDuration;

use crate::helpers::*;

#[tokio::test]
async fn a_tool_not_granted_is_denied() {
    let h = Harness::start().await;
    let run = new_run();
    let r = h
        .evaluate(request(
            &run,
            "c1",
            "drop_db",
            RiskClass::ReadOnly,
            "{}",
            &["query"],
        ))
        .await;
    assert_eq!(r.decision, PolicyDecision::Deny as i32);
    assert_eq!(r.reason, "tool 'drop_db' is not granted to agent 'analyst'");
    assert!(r.approval.is_none());
    // Even a tool nobody has heard of, with no grants at all.
    let r = h
        .evaluate(request(
            &run,
            "c2",
            "whatever",
            RiskClass::Unspecified,
            "{}",
            &[],
        ))
        .await;
    assert_eq!(r.decision, PolicyDecision::Deny as i32);
    h.stop().await;
}

#[tokio::test]
async fn a_granted_read_only_tool_is_allowed() {
    let h = Harness::start().await;
    let r = h
        .evaluate(request(
            &new_run(),
            "c1",
            "query",
            RiskClass::ReadOnly,
            r#"{"sql":"select 1"}"#,
            &["query"],
        ))
        .await;
    assert_eq!(r.decision, PolicyDecision::Allow as i32, "{}", r.reason);
    assert!(r.approval.is_none());
    h.stop().await;
}

#[tokio::test]
async fn destructive_and_listed_tools_require_approval() {
    let h = Harness::start().await;
    let run = new_run();
    let r = h
        .evaluate(destructive(&run, "c1", r#"{"table":"users"}"#))
        .await;
    assert_eq!(r.decision, PolicyDecision::RequireApproval as i32);
    let a = r.approval.unwrap();
    assert!(a.id.starts_with("apr_"), "{}", a.id);
    assert_eq!(a.state, ApprovalState::Pending as i32);
    assert_eq!(
        (a.tenant.as_str(), a.agent.as_str(), a.run_id.as_str()),
        ("acme", "analyst", run.as_str())
    );
    assert_eq!(
        (a.step, a.call_id.as_str(), a.tool.as_str()),
        (1, "c1", "delete_table")
    );
    assert_eq!(a.arguments_json, r#"{"table":"users"}"#);
    assert_eq!(
        a.arguments_sha256,
        bridle_approvals::arguments_sha256(r#"{"table":"users"}"#)
    );
    assert_eq!(a.risk, RiskClass::Destructive as i32);
    assert_eq!(a.policy_reason, r.reason);
    let (created, expires) = (a.created_at.unwrap(), a.expires_at.unwrap());
    assert_eq!(
        expires.seconds - created.seconds,
        3600,
        "default TTL is one hour"
    );

    let mut req = request(
        &run,
        "c2",
        "send_mail",
        RiskClass::Mutating,
        "{}",
        &["send_mail"],
    );
    req.approval_required_tools = vec!["send_mail".into()];
    req.approval_ttl = Some(PbDuration {
        seconds: 60,
        nanos: 0,
    });
    let r = h.evaluate(req).await;
    assert_eq!(r.decision, PolicyDecision::RequireApproval as i32);
    assert!(r.reason.contains("requires approval"), "{}", r.reason);
    let b = r.approval.unwrap();
    assert_eq!(
        b.expires_at.unwrap().seconds - b.created_at.unwrap().seconds,
        60
    );
    assert_ne!(a.id, b.id);
    h.stop().await;
}

#[tokio::test]
async fn evaluating_the_same_call_again_returns_the_same_approval() {
    let h = Harness::start().await;
    let run = new_run();
    let first = h.pending(&run, "c1", r#"{"table":"users"}"#).await;
    let again = h.pending(&run, "c1", r#"{"table":"users"}"#).await;
    assert_eq!(again, first);

    // Whatever its state now: after a decision, the decided approval comes back.
    let mut c = h.client.clone();
    c.decide(bridle_proto::DecideRequest {
        id: first.id.clone(),
        approve: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let after = h.pending(&run, "c1", r#"{"table":"users"}"#).await;
    assert_eq!(after.id, first.id);
    assert_eq!(after.state, ApprovalState::Approved as i32);

    // Another step or call id of the same run is another call.
    let mut other_step = destructive(&run, "c1", r#"{"table":"users"}"#);
    other_step.step = 2;
    let other = h.evaluate(other_step).await.approval.unwrap();
    assert_ne!(other.id, first.id);

    let pending = c
        .list(bridle_proto::ListApprovalsRequest {
            tenant: "acme".into(),
            run_id: run.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pending.approvals.len(),
        1,
        "only the step-2 call is pending"
    );
    h.stop().await;
}

#[tokio::test]
async fn changed_arguments_on_reevaluation_are_refused() {
    let h = Harness::start().await;
    let run = new_run();
    let a = h.pending(&run, "c1", r#"{"table":"users"}"#).await;
    let e = h
        .client
        .clone()
        .evaluate(destructive(&run, "c1", r#"{"table":"orders"}"#))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&a.id), "{}", e.message());
    assert!(
        e.message().contains("binds to exact arguments"),
        "{}",
        e.message()
    );
    // The approval is untouched.
    let still = h
        .client
        .clone()
        .get(bridle_proto::GetApprovalRequest { id: a.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still, a);
    h.stop().await;
}

#[tokio::test]
async fn key_order_does_not_change_the_binding() {
    let h = Harness::start().await;
    let run = new_run();
    let a = h.pending(&run, "c1", r#"{"a":1,"b":2}"#).await;
    let b = h.pending(&run, "c1", r#"{"b":2,"a":1}"#).await;
    assert_eq!(a.id, b.id);
    assert_eq!(a.arguments_sha256, b.arguments_sha256);
    h.stop().await;
}

#[tokio::test]
async fn every_evaluation_leaves_an_audit_entry() {
    let h = Harness::start().await;
    let run = new_run();
    h.evaluate(request(
        &run,
        "c1",
        "query",
        RiskClass::ReadOnly,
        "{}",
        &["query"],
    ))
    .await;
    h.evaluate(request(
        &run,
        "c2",
        "drop_db",
        RiskClass::ReadOnly,
        "{}",
        &["query"],
    ))
    .await;
    let a = h.pending(&run, "c3", r#"{"x":1}"#).await;
    h.pending(&run, "c3", r#"{"x":1}"#).await;
    h.client
        .clone()
        .evaluate(destructive(&run, "c3", r#"{"x":2}"#))
        .await
        .unwrap_err();

    let audit = h.audit().await;
    let seen: Vec<(&str, &str, &str)> = audit
        .iter()
        .map(|r| {
            (
                r["call"].as_str(),
                r["decision"].as_str(),
                r["approval"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("c1", "allow", ""),
            ("c2", "deny", ""),
            ("c3", "require_approval", a.id.as_str()),
            ("c3", "require_approval", a.id.as_str()),
            ("c3", "refused", a.id.as_str()),
        ]
    );
    let first = &audit[0];
    for (k, v) in [
        ("action", "evaluate"),
        ("tenant", "acme"),
        ("agent", "analyst"),
        ("run", run.as_str()),
        ("step", "1"),
        ("tool", "query"),
    ] {
        assert_eq!(first[k], v, "{k}");
    }
    assert_eq!(
        first["args_sha256"],
        bridle_approvals::arguments_sha256("{}")
    );
    assert_eq!(
        first["reason"],
        "tool 'query' is granted to agent 'analyst'"
    );
    assert!(first["time"].ends_with('Z'), "{}", first["time"]);
    h.stop().await;
}

#[tokio::test]
async fn malformed_requests_say_which_field() {
    let h = Harness::start().await;
    let mut c = h.client.clone();
    let cases = [
        (
            {
                let mut r = destructive(&new_run(), "c", "{}");
                r.scope.as_mut().unwrap().tenant.clear();
                r
            },
            "scope.tenant",
        ),
        (destructive("run_bad:id", "c", "{}"), "scope.run_id"),
        (destructive(&new_run(), "", "{}"), "call_id"),
        (
            {
                let mut r = destructive(&new_run(), "c", "{}");
                r.tool = None;
                r
            },
            "tool.name",
        ),
        (
            {
                let mut r = destructive(&new_run(), "c", "{}");
                r.scope.as_mut().unwrap().tool = "other".into();
                r
            },
            "scope.tool",
        ),
    ];
    for (req, field) in cases {
        let e = c.evaluate(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    assert!(
        h.audit().await.is_empty(),
        "a malformed request is not an evaluation"
    );
    h.stop().await;
}
