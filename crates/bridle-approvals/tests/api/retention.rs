//! Final approvals are kept `approval_retention`, then dropped with everything that points at
//! them; pending ones are never dropped; Watch never skips trimmed events silently.

use std::time::Duration;

use bridle_proto::ApprovalState;
use prost_types::Duration as PbDuration;

use crate::helpers::*;

/// A harness whose final approvals live `secs` seconds, swept every 200ms.
async fn retaining(secs: u64) -> Harness {
    Harness::start_with(|o| {
        o.sweep_interval = Duration::from_millis(200);
        o.approval_retention = Duration::from_secs(secs);
    })
    .await
}

/// PTTL in ms: -1 = no expiry, -2 = no key.
async fn pttl(h: &Harness, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut h.redis().await)
        .await
        .unwrap()
}

async fn exists(h: &Harness, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut h.redis().await)
        .await
        .unwrap()
}

async fn members(h: &Harness, key: &str) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut h.redis().await)
        .await
        .unwrap()
}

/// Waits until `key` is gone.
async fn gone(h: &Harness, key: &str) {
    bridle_testkit::wait_for(&format!("{key} to go"), WAIT, || async {
        (!exists(h, key).await).then_some(())
    })
    .await
    .unwrap();
}

fn call_key(h: &Harness, run: &str, call: &str) -> String {
    // `destructive` evaluates step 1 of tenant "acme".
    h.keys.call("acme", run, 1, call)
}

#[tokio::test]
async fn a_final_approval_is_dropped_after_the_retention_and_a_pending_one_is_kept() {
    let h = retaining(2).await;
    let mut c = h.client.clone();
    let run = new_run();
    let decided = h.pending(&run, "c1", "{}").await;
    let open = h.pending(&run, "c2", "{}").await;
    let mut short = destructive(&run, "c3", "{}");
    short.approval_ttl = Some(PbDuration {
        seconds: 1,
        nanos: 0,
    });
    let lapsing = h.evaluate(short).await.approval.unwrap();
    c.decide(decide(&decided.id, true, "alice")).await.unwrap();

    // The decision set the expiry of the record and the call binding, in the same script.
    for key in [h.keys.approval(&decided.id), call_key(&h, &run, "c1")] {
        let t = pttl(&h, &key).await;
        assert!(t > 0 && t <= 2000, "{key}: PTTL {t}");
    }
    // Pending: no expiry.
    for key in [h.keys.approval(&open.id), call_key(&h, &run, "c2")] {
        assert_eq!(pttl(&h, &key).await, -1, "{key}");
    }
    // Expired by the sweeper: final too, so it gets the retention.
    bridle_testkit::wait_for("the sweeper to expire c3", WAIT, || async {
        (pttl(&h, &h.keys.approval(&lapsing.id)).await > 0).then_some(())
    })
    .await
    .unwrap();
    assert!(pttl(&h, &call_key(&h, &run, "c3")).await > 0);

    // Past the retention: gone, and everything that pointed at them with them.
    gone(&h, &h.keys.approval(&decided.id)).await;
    gone(&h, &h.keys.approval(&lapsing.id)).await;
    gone(&h, &h.keys.index("acme", "approved")).await;
    gone(&h, &h.keys.index("acme", "expired")).await;
    let e = get(&mut c, &decided.id).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(
        e.message().contains("approval_retention"),
        "says why: {}",
        e.message()
    );
    let e = c
        .decide(decide(&decided.id, false, "bob"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());

    // The pending one outlived the retention untouched.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = get(&mut c, &open.id).await.unwrap();
    assert_eq!(still.state, ApprovalState::Pending as i32);
    assert_eq!(pttl(&h, &h.keys.approval(&open.id)).await, -1);
    assert_eq!(
        members(&h, &h.keys.run("acme", &run)).await,
        vec![open.id.clone()]
    );
    assert_eq!(
        members(&h, &h.keys.index("acme", "pending")).await,
        vec![open.id.clone()]
    );

    // Once it is decided and its retention is over, the run's index goes too.
    c.decide(decide(&open.id, false, "bob")).await.unwrap();
    gone(&h, &h.keys.approval(&open.id)).await;
    gone(&h, &call_key(&h, &run, "c2")).await;
    gone(&h, &h.keys.index("acme", "denied")).await;
    gone(&h, &h.keys.run("acme", &run)).await;
    // The inbox-facing list has nothing left to show, and nothing broken either.
    let listed = h
        .client
        .clone()
        .list(bridle_proto::ListApprovalsRequest {
            tenant: "acme".into(),
            state: ApprovalState::Approved as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.approvals.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn approvals_stored_without_an_expiry_are_dropped_with_their_trimmed_event() {
    // Approvals decided before there was a retention have no expiry: the trim of their
    // decision event drops them.
    let h = retaining(1).await;
    let mut c = h.client.clone();
    let run = new_run();
    let a = h.pending(&run, "c1", "{}").await;
    c.decide(decide(&a.id, true, "alice")).await.unwrap();
    let mut r = h.redis().await;
    for key in [h.keys.approval(&a.id), call_key(&h, &run, "c1")] {
        let persisted: i64 = redis::cmd("PERSIST")
            .arg(&key)
            .query_async(&mut r)
            .await
            .unwrap();
        assert_eq!(persisted, 1, "{key} had an expiry");
    }
    gone(&h, &h.keys.approval(&a.id)).await;
    gone(&h, &call_key(&h, &run, "c1")).await;
    gone(&h, &h.keys.index("acme", "approved")).await;
    gone(&h, &h.keys.run("acme", &run)).await;
    h.stop().await;
}

#[tokio::test]
async fn a_new_approval_of_the_same_call_survives_the_drop_of_the_old_one() {
    // The old approval's call binding expired with it; the call is evaluated again and gets a
    // new approval and binding, which the later trim of the old decision must not touch.
    let h = retaining(1).await;
    let mut c = h.client.clone();
    let run = new_run();
    let old = h.pending(&run, "c1", "{}").await;
    c.decide(decide(&old.id, true, "alice")).await.unwrap();
    // The binding goes first (as its expiry may take it a little before the trim comes).
    let _: i64 = redis::cmd("DEL")
        .arg(call_key(&h, &run, "c1"))
        .query_async(&mut h.redis().await)
        .await
        .unwrap();
    let new = h.pending(&run, "c1", "{}").await;
    assert_ne!(new.id, old.id);
    gone(&h, &h.keys.index("acme", "approved")).await;
    let bound: Option<String> = redis::cmd("HGET")
        .arg(call_key(&h, &run, "c1"))
        .arg("id")
        .query_async(&mut h.redis().await)
        .await
        .unwrap();
    assert_eq!(bound.as_deref(), Some(new.id.as_str()));
    assert_eq!(
        get(&mut c, &new.id).await.unwrap().state,
        ApprovalState::Pending as i32
    );
    assert_eq!(
        members(&h, &h.keys.run("acme", &run)).await,
        vec![new.id.clone()]
    );
    h.stop().await;
}

#[tokio::test]
async fn watching_from_a_trimmed_offset_is_out_of_range_naming_the_first_kept() {
    let h = retaining(2).await;
    let mut c = h.client.clone();
    let a = h.pending(&new_run(), "c1", "{}").await; // offset 1
    c.decide(decide(&a.id, true, "alice")).await.unwrap(); // offset 2
    let mut r = h.redis().await;
    bridle_testkit::wait_for("the events to be trimmed", WAIT, || async {
        let n: u64 = redis::cmd("XLEN")
            .arg(h.keys.events())
            .query_async(&mut h.redis().await)
            .await
            .unwrap();
        (n == 0).then_some(())
    })
    .await
    .unwrap();

    // Nothing kept at all: the first offset is the next one to be written.
    for from in [0, 1] {
        let e = c
            .watch(bridle_proto::WatchApprovalsRequest {
                from_offset: from,
                tenant: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange, "{}", e.message());
        assert_eq!(
            e.metadata()
                .get("bridle-first-offset")
                .unwrap()
                .to_str()
                .unwrap(),
            "3"
        );
        assert!(
            e.message().contains("the first kept event is offset 3"),
            "{}",
            e.message()
        );
    }
    // Up to date: fine, and it gets what comes next.
    let mut s = h.watch(2, "").await;
    let b = h.pending(&new_run(), "c1", "{}").await; // offset 3
    let ev = next(&mut s).await;
    assert_eq!((ev.offset, ev.approval.unwrap().id), (3, b.id.clone()));

    // Trimmed under a reader's feet (a hole it would cross): the stream ends OUT_OF_RANGE
    // rather than skipping it.
    for call in ["c2", "c3"] {
        h.pending(&new_run(), call, "{}").await; // offsets 4, 5
    }
    let _: u64 = redis::cmd("XDEL")
        .arg(h.keys.events())
        .arg("0-4")
        .query_async(&mut r)
        .await
        .unwrap();
    let mut s = h.watch(2, "").await;
    assert_eq!(next(&mut s).await.offset, 3);
    let e = tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{}", e.message());
    assert_eq!(
        e.metadata()
            .get("bridle-first-offset")
            .unwrap()
            .to_str()
            .unwrap(),
        "5"
    );
    h.stop().await;
}
