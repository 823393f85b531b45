use bridle_proto::{ApprovalState, DecideRequest, PolicyDecision};

use crate::helpers::*;

#[tokio::test]
async fn an_approval_is_decided_once_and_a_replay_is_refused() {
    let h = Harness::start().await;
    let mut c = h.client.clone();
    let a = h.pending(&new_run(), "c1", "{}").await;

    let d = c
        .decide(decide(&a.id, true, "alice"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.state, ApprovalState::Approved as i32);
    assert_eq!(d.decided_by, "alice");
    assert_eq!(d.reason, "checked");
    let at = d.decided_at.unwrap();
    assert_eq!(get(&mut c, &a.id).await.unwrap(), d);

    for replay in [
        decide(&a.id, true, "alice"),
        decide(&a.id, false, "mallory"),
    ] {
        let e = c.decide(replay).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            e.message(),
            format!("approval {} is already approved by alice at {at}", a.id)
        );
    }
    assert_eq!(
        get(&mut c, &a.id).await.unwrap(),
        d,
        "the refused replays changed nothing"
    );

    // A denial is final too; no approver given means "anonymous".
    let b = h.pending(&new_run(), "c1", "{}").await;
    let d = c
        .decide(decide(&b.id, false, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (d.state, d.decided_by.as_str()),
        (ApprovalState::Denied as i32, "anonymous")
    );
    let e = c.decide(decide(&b.id, true, "alice")).await.unwrap_err();
    assert!(
        e.message().contains("is already denied by anonymous"),
        "{}",
        e.message()
    );
    h.stop().await;
}

#[tokio::test]
async fn a_decision_for_other_arguments_is_refused() {
    let h = Harness::start().await;
    let mut c = h.client.clone();
    let a = h.pending(&new_run(), "c1", r#"{"table":"users"}"#).await;
    let wrong = bridle_approvals::arguments_sha256(r#"{"table":"orders"}"#);
    let e = c
        .decide(DecideRequest {
            arguments_sha256: wrong.clone(),
            ..decide(&a.id, true, "alice")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("arguments of approval") && e.message().contains("changed"),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains(&a.arguments_sha256) && e.message().contains(&wrong),
        "{}",
        e.message()
    );
    assert_eq!(
        get(&mut c, &a.id).await.unwrap().state,
        ApprovalState::Pending as i32
    );

    // The hash the approver really saw (in upper case, even) is accepted.
    let d = c
        .decide(DecideRequest {
            arguments_sha256: a.arguments_sha256.to_uppercase(),
            ..decide(&a.id, true, "alice")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.state, ApprovalState::Approved as i32);

    let e = c
        .decide(DecideRequest {
            arguments_sha256: "abc".into(),
            ..decide(&a.id, true, "x")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    h.stop().await;
}

#[tokio::test]
async fn unknown_and_malformed_ids() {
    let h = Harness::start().await;
    let mut c = h.client.clone();
    let id = bridle_core::ids::new_approval_id();
    let e = get(&mut c, &id).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(
        e.message().starts_with(&format!("approval {id} not found")),
        "{}",
        e.message()
    );
    let e = c.decide(decide(&id, true, "a")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(
        e.message().starts_with(&format!("approval {id} not found")),
        "{}",
        e.message()
    );
    for bad in ["", "run_01abc", "apr_a:b"] {
        assert_eq!(
            get(&mut c, bad).await.unwrap_err().code(),
            tonic::Code::InvalidArgument,
            "{bad:?}"
        );
        assert_eq!(
            c.decide(decide(bad, true, "a")).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn an_approved_call_is_reported_with_its_decision_on_reevaluation() {
    let h = Harness::start().await;
    let run = new_run();
    let a = h.pending(&run, "c1", "{}").await;
    h.client
        .clone()
        .decide(decide(&a.id, false, "bob"))
        .await
        .unwrap();
    let r = h.evaluate(destructive(&run, "c1", "{}")).await;
    assert_eq!(r.decision, PolicyDecision::RequireApproval as i32);
    let again = r.approval.unwrap();
    assert_eq!(
        (again.id, again.state, again.decided_by.as_str()),
        (a.id, ApprovalState::Denied as i32, "bob")
    );
    h.stop().await;
}
