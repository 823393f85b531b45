use bridle_proto::{
    ApprovalState, DecideRequest, GetApprovalRequest, ListApprovalsRequest, RiskClass,
};

use crate::helpers::*;

/// Makes the audit stream key a string, so every XADD to it fails.
async fn break_audit(h: &Harness) {
    let mut r = h.redis().await;
    let () = redis::cmd("DEL")
        .arg(h.keys.audit())
        .query_async(&mut r)
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg(h.keys.audit())
        .arg("not a stream")
        .query_async(&mut r)
        .await
        .unwrap();
}

async fn exists(h: &Harness, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut h.redis().await)
        .await
        .unwrap()
        == 1
}

#[tokio::test]
async fn a_failed_audit_write_blocks_evaluate_and_creates_nothing() {
    let h = Harness::start().await;
    let mut c = h.client.clone();
    break_audit(&h).await;
    let run = new_run();
    for req in [
        destructive(&run, "c1", "{}"),
        request(&run, "c2", "query", RiskClass::ReadOnly, "{}", &["query"]),
        request(&run, "c3", "nope", RiskClass::ReadOnly, "{}", &["query"]),
    ] {
        let e = c.evaluate(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(
            e.message().contains("audit trail") && e.message().contains("nothing was applied"),
            "{}",
            e.message()
        );
    }
    let pending = c
        .list(ListApprovalsRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        pending.approvals.is_empty(),
        "nothing was created: {pending:?}"
    );
    assert!(
        !exists(&h, &h.keys.call("acme", &run, 1, "c1")).await,
        "the call is not bound"
    );
    assert!(
        !exists(&h, &h.keys.events()).await && !exists(&h, &h.keys.events_seq()).await,
        "no event"
    );

    // Once the audit trail works again, so does Evaluate.
    let () = redis::cmd("DEL")
        .arg(h.keys.audit())
        .query_async(&mut h.redis().await)
        .await
        .unwrap();
    let a = h.pending(&run, "c1", "{}").await;
    assert_eq!(a.state, ApprovalState::Pending as i32);
    assert_eq!(h.audit().await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_failed_audit_write_blocks_a_decision() {
    let h = Harness::start().await;
    let mut c = h.client.clone();
    let a = h.pending(&new_run(), "c1", "{}").await;
    break_audit(&h).await;
    let e = c
        .decide(DecideRequest {
            id: a.id.clone(),
            approve: true,
            approver: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    let still = c
        .get(GetApprovalRequest { id: a.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still, a, "the decision was not applied");
    let seq: u64 = redis::cmd("GET")
        .arg(h.keys.events_seq())
        .query_async(&mut h.redis().await)
        .await
        .unwrap();
    assert_eq!(seq, 1, "no DECIDED event");
    h.stop().await;
}
