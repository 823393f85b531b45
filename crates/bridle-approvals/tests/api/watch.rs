use std::time::Duration;

use bridle_proto::{ApprovalEventKind, DecideRequest};

use crate::helpers::*;

const CREATED: i32 = ApprovalEventKind::Created as i32;
const DECIDED: i32 = ApprovalEventKind::Decided as i32;

#[tokio::test]
async fn watch_replays_in_order_then_resumes_without_gaps_or_repeats() {
    let h = Harness::start().await;
    let mut c = h.client.clone();
    let a = h.pending(&new_run(), "c1", "{}").await;
    let b = h.pending(&new_run(), "c1", "{}").await;
    c.decide(DecideRequest {
        id: a.id.clone(),
        approve: true,
        approver: "alice".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let mut w = h.watch(0, "").await;
    let mut seen = vec![next(&mut w).await, next(&mut w).await, next(&mut w).await];
    assert_eq!(
        kinds(&seen),
        vec![
            (1, CREATED, a.id.clone()),
            (2, CREATED, b.id.clone()),
            (3, DECIDED, a.id.clone())
        ]
    );
    // Events carry the approval as it was then.
    assert_eq!(
        seen[0].approval.as_ref().unwrap().state,
        bridle_proto::ApprovalState::Pending as i32
    );
    assert_eq!(seen[2].approval.as_ref().unwrap().decided_by, "alice");

    // The same watch follows new events as they happen.
    c.decide(DecideRequest {
        id: b.id.clone(),
        approve: false,
        ..Default::default()
    })
    .await
    .unwrap();
    seen.push(next(&mut w).await);
    assert_eq!(kinds(&seen[3..]), vec![(4, DECIDED, b.id.clone())]);
    drop(w);

    // A client that saw up to offset 2 reconnects: it gets 3 and 4, then the next new one.
    let mut w = h.watch(2, "").await;
    let resumed = vec![next(&mut w).await, next(&mut w).await];
    assert_eq!(kinds(&resumed), kinds(&seen[2..]));
    let d = h.pending(&new_run(), "c1", "{}").await;
    assert_eq!(kinds(&[next(&mut w).await]), vec![(5, CREATED, d.id)]);

    // Resuming from the last offset seen gives nothing old: the first event is the next new one.
    let mut w = h.watch(5, "").await;
    let e = h.pending(&new_run(), "c1", "{}").await;
    assert_eq!(kinds(&[next(&mut w).await]), vec![(6, CREATED, e.id)]);
    h.stop().await;
}

#[tokio::test]
async fn watch_filters_by_tenant_and_keeps_offsets() {
    let h = Harness::start().await;
    let mut other = destructive(&new_run(), "c1", "{}");
    other.scope.as_mut().unwrap().tenant = "globex".into();
    let g = h.evaluate(other).await.approval.unwrap();
    let a = h.pending(&new_run(), "c1", "{}").await;

    let mut w = h.watch(0, "acme").await;
    assert_eq!(kinds(&[next(&mut w).await]), vec![(2, CREATED, a.id)]);
    let mut w = h.watch(0, "globex").await;
    assert_eq!(kinds(&[next(&mut w).await]), vec![(1, CREATED, g.id)]);

    let e = h
        .client
        .clone()
        .watch(bridle_proto::WatchApprovalsRequest {
            from_offset: 0,
            tenant: "Not A Name".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    h.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_watches() {
    let h = Harness::start().await;
    let mut w = h.watch(0, "").await;
    // The server polls the watch on its own; give it time to reach its blocking read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (drained, end) = tokio::join!(
        h.shutdown.drain(WAIT),
        tokio::time::timeout(WAIT, w.message())
    );
    assert!(drained, "an open watch held up shutdown");
    let end = end.expect("the watch ended");
    assert!(matches!(end, Ok(None)), "the stream ends cleanly: {end:?}");
}
