use std::time::Duration;

use bridle_proto::{ApprovalEventKind, ApprovalState, ListApprovalsRequest};
use prost_types::Duration as PbDuration;

use crate::helpers::*;

fn short_lived(run: &str) -> bridle_proto::EvaluateRequest {
    let mut r = destructive(run, "c1", "{}");
    r.approval_ttl = Some(PbDuration {
        seconds: 1,
        nanos: 0,
    });
    r
}

#[tokio::test]
async fn a_lapsed_approval_reads_as_expired_and_cannot_be_decided() {
    // A sweeper that never runs during the test: expiry on read must do it alone.
    let h = Harness::start_sweeping(Duration::from_secs(3600)).await;
    let mut c = h.client.clone();
    let a = h.evaluate(short_lived(&new_run())).await.approval.unwrap();
    let expires = a.expires_at.unwrap();

    let expired = bridle_testkit::wait_for("the approval to expire", WAIT, || {
        let mut c = c.clone();
        let id = a.id.clone();
        async move {
            get(&mut c, &id)
                .await
                .ok()
                .filter(|a| a.state == ApprovalState::Expired as i32)
        }
    })
    .await
    .unwrap();
    assert!(expired.decided_at.is_some());

    let e = c.decide(decide(&a.id, true, "alice")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        format!(
            "approval {} expired at {expires}; it can no longer be decided",
            a.id
        )
    );

    // It was stored as expired: indexes moved and exactly one EXPIRED event exists.
    let list = |state: ApprovalState| ListApprovalsRequest {
        tenant: "acme".into(),
        state: state as i32,
        ..Default::default()
    };
    assert!(
        c.list(list(ApprovalState::Pending))
            .await
            .unwrap()
            .into_inner()
            .approvals
            .is_empty()
    );
    assert_eq!(
        c.list(list(ApprovalState::Expired))
            .await
            .unwrap()
            .into_inner()
            .approvals
            .len(),
        1
    );
    let mut w = h.watch(0, "").await;
    assert_eq!(next(&mut w).await.kind, ApprovalEventKind::Created as i32);
    let ev = next(&mut w).await;
    assert_eq!((ev.offset, ev.kind), (2, ApprovalEventKind::Expired as i32));
    h.stop().await;
}

#[tokio::test]
async fn a_decide_that_arrives_after_expiry_expires_it() {
    let h = Harness::start_sweeping(Duration::from_secs(3600)).await;
    let mut c = h.client.clone();
    let a = h.evaluate(short_lived(&new_run())).await.approval.unwrap();
    // Same clock as the service: wait until its expiry has passed, then Decide with no Get first.
    let expires_ms = bridle_core::timeutil::ms_from_ts(a.expires_at.as_ref().unwrap());
    bridle_testkit::wait_for("the expiry time to pass", WAIT, || async {
        (bridle_core::timeutil::now_ms() > expires_ms).then_some(())
    })
    .await
    .unwrap();
    let e = c.decide(decide(&a.id, true, "alice")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("expired at"), "{}", e.message());
    let stored = get(&mut c, &a.id).await.unwrap();
    assert_eq!(
        (stored.state, stored.decided_by.as_str()),
        (ApprovalState::Expired as i32, "")
    );
    let decisions: Vec<String> = h
        .audit()
        .await
        .iter()
        .map(|r| r["decision"].clone())
        .collect();
    assert_eq!(decisions, ["require_approval", "refused", "expired"]);
    h.stop().await;
}

#[tokio::test]
async fn the_sweeper_expires_approvals_once_even_with_several_replicas() {
    let h = Harness::start_sweeping(Duration::from_millis(100)).await;
    let (_replica, replica_shutdown) =
        service(&h.redis, &h.prefix, Duration::from_millis(100)).await;
    let a = h.evaluate(short_lived(&new_run())).await.approval.unwrap();

    // Nobody reads the approval: the EXPIRED event must come from a sweeper.
    let mut w = h.watch(0, "acme").await;
    assert_eq!(next(&mut w).await.kind, ApprovalEventKind::Created as i32);
    let ev = next(&mut w).await;
    assert_eq!(ev.kind, ApprovalEventKind::Expired as i32);
    let snapshot = ev.approval.unwrap();
    assert_eq!(
        (snapshot.id.as_str(), snapshot.state),
        (a.id.as_str(), ApprovalState::Expired as i32)
    );

    // Let both sweepers run a few more rounds, then count: one expiry, however many replicas.
    let seq_key = h.keys.events_seq();
    let mut r = h.redis().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seq: u64 = redis::cmd("GET")
        .arg(&seq_key)
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(seq, 2, "one CREATED and one EXPIRED event");
    let expiries = h
        .audit()
        .await
        .iter()
        .filter(|r| r["action"] == "expire")
        .count();
    assert_eq!(expiries, 1);
    assert!(replica_shutdown.drain(WAIT).await);
    h.stop().await;
}
