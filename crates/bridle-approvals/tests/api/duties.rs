//! Separation of duties (a Tool's `approvers`): how many distinct people must approve, that the
//! run's starter may not decide, and which groups may; each refusal audited, enforced in the
//! decide transition itself.

use bridle_proto::{Actor, ApprovalState, ApproverRule, DecideRequest, EvaluateRequest, RiskClass};

use crate::helpers::*;

/// A destructive call of a tool with `rule`, in a run started by `starter`.
fn guarded(rule: ApproverRule, starter: &str) -> EvaluateRequest {
    let mut r = destructive(&new_run(), "c1", "{}");
    if let Some(t) = r.tool.as_mut() {
        t.approvers = Some(rule);
    }
    r.started_by = Some(Actor {
        id: starter.into(),
        name: starter.into(),
        kind: bridle_proto::ActorKind::ApiKey.into(),
    });
    r
}

#[tokio::test]
async fn two_distinct_people_must_approve_and_the_starter_may_not() {
    let h = Harness::start().await;
    let mut c = h.client.clone();
    // Auth is off here: a person is the request's `approver`, as the id "name:<approver>".
    let rule = ApproverRule {
        groups: vec![],
        count: 2,
        not_the_starter: true,
    };
    let a = h
        .evaluate(guarded(rule.clone(), "name:alice"))
        .await
        .approval
        .unwrap();
    assert_eq!((a.approvals_required, a.not_the_starter), (2, true));

    // The run's starter cannot approve its own call.
    let e = c.decide(decide(&a.id, true, "alice")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("started the run"), "{e:?}");

    // One approval is not enough: still pending, and it says who approved.
    let one = c
        .decide(decide(&a.id, true, "bob"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.state, ApprovalState::Pending as i32);
    assert_eq!(one.approved_by, vec!["name:bob".to_string()]);
    // The same person twice does not count twice.
    let e = c.decide(decide(&a.id, true, "bob")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("approved it already"), "{e:?}");
    // A second person decides it.
    let two = c
        .decide(decide(&a.id, true, "carol"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(two.state, ApprovalState::Approved as i32);
    assert_eq!(two.decided_by, "carol");
    assert_eq!(
        two.approved_by,
        vec!["name:bob".to_string(), "name:carol".to_string()]
    );

    // Every attempt is in the audit trail, the refusals too.
    let audit = h.audit().await;
    let mine: Vec<(String, String)> = audit
        .iter()
        .filter(|r| r.get("approval") == Some(&a.id) && r["action"] == "decide")
        .map(|r| (r["actor"].clone(), r["decision"].clone()))
        .collect();
    assert_eq!(
        mine,
        [
            ("alice", "refused"),
            ("bob", "approval_added"),
            ("bob", "refused"),
            ("carol", "approved"),
        ]
        .map(|(a, d)| (a.to_string(), d.to_string()))
        .to_vec(),
        "{audit:?}"
    );

    // One denial by an eligible person denies, whatever approvals came before.
    let b = h
        .evaluate(guarded(rule, "name:alice"))
        .await
        .approval
        .unwrap();
    c.decide(decide(&b.id, true, "bob")).await.unwrap();
    let d = c
        .decide(decide(&b.id, false, "dave"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.state, ApprovalState::Denied as i32);
    h.stop().await;
}

#[tokio::test]
async fn only_members_of_the_approver_groups_may_decide() {
    // People with OIDC tokens (groups from their claims); services with the internal token.
    let issuer = bridle_testkit::oidc::LocalIssuer::start().await.unwrap();
    let signer = bridle_testkit::oidc::Signer::new("k1").unwrap();
    issuer.publish(&signer);
    let token = "an-internal-token-for-the-duties-test";
    let h = Harness::start_with(|o| {
        o.server.auth = bridle_core::auth::AuthMode::Keys;
        o.server.internal_token = Some(token.to_string().into());
        o.server.oidc = vec![bridle_core::oidc::OidcIssuer {
            issuer: issuer.url.clone(),
            audiences: vec!["bridle".into()],
            ..Default::default()
        }];
    })
    .await;
    let mut c = h.client.clone();
    let as_service = |req: EvaluateRequest| {
        let mut r = tonic::Request::new(req);
        r.metadata_mut()
            .insert("x-bridle-service-token", token.parse().unwrap());
        r.metadata_mut()
            .insert("x-bridle-service", "orchestrator".parse().unwrap());
        r
    };
    let mut req = guarded(
        ApproverRule {
            groups: vec!["sre".into()],
            count: 1,
            not_the_starter: false,
        },
        "key_someone",
    );
    if let Some(t) = req.tool.as_mut() {
        t.risk = RiskClass::Destructive as i32;
    }
    let a = c
        .evaluate(as_service(req))
        .await
        .unwrap()
        .into_inner()
        .approval
        .unwrap();
    assert_eq!(a.approver_groups, vec!["sre".to_string()]);

    let person = |groups: &[&str], email: &str| {
        let mut claims = issuer.claims();
        claims["roles"] = serde_json::json!(["approver"]);
        claims["groups"] = serde_json::json!(groups);
        claims["email"] = serde_json::json!(email);
        signer.sign(&claims).unwrap()
    };
    let as_person = |jwt: &str, approve: bool| {
        let mut r = tonic::Request::new(DecideRequest {
            id: a.id.clone(),
            approve,
            reason: "checked".into(),
            ..Default::default()
        });
        r.metadata_mut()
            .insert("authorization", format!("Bearer {jwt}").parse().unwrap());
        r
    };
    // An approver outside the groups may not decide, either way.
    for approve in [true, false] {
        let e = c
            .decide(as_person(&person(&["staff"], "eve@example.com"), approve))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("approvers.groups"), "{e:?}");
    }
    // A member decides.
    let d = c
        .decide(as_person(
            &person(&["staff", "sre"], "sam@example.com"),
            true,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.state, ApprovalState::Approved as i32);
    assert!(d.decided_by.contains("sam@example.com"), "{d:?}");
    assert_eq!(d.approved_by, vec!["oidc:u-123".to_string()]);
    h.stop().await;
}
