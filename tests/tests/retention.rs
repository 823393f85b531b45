//! Retention of runs in Redis (issue 18): an ended run's state and events get an expiry of at
//! most the retention, its index entry goes once they are gone, and a run that ended with an
//! approval still open keeps its keys, without expiry, until that approval is decided.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use bridle_testkit::mock_openai::Reply;
use support::{Harness, Options, follow};

/// PTTL of a key in ms: -1 = no expiry, -2 = no key.
async fn pttl(h: &Harness, key: &str) -> i64 {
    let mut c = h.redis.client().await.unwrap();
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

fn run_keys(h: &Harness, run: &str) -> [String; 2] {
    [
        format!("{}:run:{{{run}}}", h.prefix),
        format!("{}:run:{{{run}}}:events", h.prefix),
    ]
}

async fn harness(retention: &str) -> Harness {
    let h = Harness::start_with(Options {
        orchestrator_env: vec![
            ("retention".into(), retention.into()),
            ("idempotency_ttl".into(), "3h".into()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("test.yaml", &h.manifests_yaml()).await.unwrap();
    h
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ended_run_expires_within_the_retention_and_leaves_its_index() {
    let h = harness("3s").await;
    h.mock.enqueue(Reply::text("done"));
    let run = h
        .orchestrator()
        .await
        .start_run(pb::StartRunRequest {
            agent: "analyst".into(),
            input: "hi".into(),
            idempotency_key: "retention-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .id;
    follow(&h, &run, Duration::from_secs(60), |_| async {})
        .await
        .unwrap();
    for key in run_keys(&h, &run) {
        let ttl = pttl(&h, &key).await;
        assert!(ttl > 0 && ttl <= 3000, "{key}: PTTL {ttl}");
    }
    // The idempotency key keeps its own, longer, TTL.
    let mut c = h.redis.client().await.unwrap();
    let idem: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:idem:*", h.prefix))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(idem.len(), 1, "{idem:?}");
    let ttl = pttl(&h, &idem[0]).await;
    assert!(
        ttl > 3 * 3600 * 1000 - 60_000 && ttl <= 3 * 3600 * 1000,
        "PTTL {ttl}"
    );

    // Gone after the retention, and then from the tenant's index too (the sweep runs as often
    // as the retention).
    let index = format!("{}:runs:{{default}}", h.prefix);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let gone = pttl(&h, &run_keys(&h, &run)[0]).await == -2
            && pttl(&h, &run_keys(&h, &run)[1]).await == -2;
        let indexed: Option<f64> = redis::cmd("ZSCORE")
            .arg(&index)
            .arg(&run)
            .query_async(&mut c)
            .await
            .unwrap();
        if gone && indexed.is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run keys gone: {gone}, still indexed: {indexed:?}\n{}",
            h.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let st = h
        .orchestrator()
        .await
        .get_run(pb::GetRunRequest {
            run_id: run.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::NotFound, "{st:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_ended_with_an_open_approval_keeps_its_keys_until_it_is_decided() {
    let h = harness("1h").await;
    h.mock.enqueue(Reply::tool_calls(&[(
        "call_del",
        "delete-dataset",
        r#"{"dataset": "old-sales"}"#,
    )]));
    let run = h.start_run("analyst", "Delete old-sales.").await;
    let orch = h.orchestrator().await;
    let mut approval = String::new();
    follow(&h, &run, Duration::from_secs(120), |ev| {
        let mut orch = orch.clone();
        let run = run.clone();
        let found = if let Some(Kind::ApprovalRequested(a)) = &ev.kind {
            Some(a.approval_id.clone())
        } else {
            None
        };
        if let Some(id) = &found {
            approval = id.clone();
        }
        async move {
            if found.is_some() {
                // Cancelled while parked: the run ends, its approval stays open.
                orch.cancel_run(pb::CancelRunRequest {
                    run_id: run,
                    reason: "changed my mind".into(),
                })
                .await
                .unwrap();
            }
        }
    })
    .await
    .unwrap();
    assert!(!approval.is_empty());
    let mut approvals = h.approvals().await;
    let a = approvals
        .get(pb::GetApprovalRequest {
            id: approval.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.state, pb::ApprovalState::Pending as i32);
    // Ended, but held: no expiry.
    for key in run_keys(&h, &run) {
        assert_eq!(pttl(&h, &key).await, -1, "{key}");
    }

    approvals
        .decide(pb::DecideRequest {
            id: approval.clone(),
            approve: false,
            reason: "the run is gone anyway".into(),
            approver: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The listener wakes the run; the hold is dropped and the retention starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ttls = [
            pttl(&h, &run_keys(&h, &run)[0]).await,
            pttl(&h, &run_keys(&h, &run)[1]).await,
        ];
        if ttls.iter().all(|&t| t > 0) {
            assert!(ttls.iter().all(|&t| t <= 3600 * 1000), "{ttls:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "PTTLs {ttls:?} after the decision\n{}",
            h.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still readable until then, ended as cancelled.
    let r = orch
        .clone()
        .get_run(pb::GetRunRequest { run_id: run })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, pb::RunStatus::Cancelled as i32);
}

/// Polls the run until `done` says yes about it; panics with the logs after `secs`.
async fn wait_run(h: &Harness, run: &str, secs: u64, done: impl Fn(&pb::Run) -> bool) -> pb::Run {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let r = h
            .orchestrator()
            .await
            .get_run(pb::GetRunRequest {
                run_id: run.to_string(),
            })
            .await
            .map(|r| r.into_inner());
        if let Ok(r) = &r
            && done(r)
        {
            return r.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run}: {:?}\n{}",
            r.map(|r| r.status),
            h.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn decisions_trimmed_while_no_orchestrator_listened_still_release_their_runs() {
    // The approvals service keeps decided approvals and their events 2s. The only orchestrator
    // is down while two approvals are decided and both decisions (events and approvals) are
    // dropped; the restarted orchestrator's listener gets OUT_OF_RANGE for its stored offset
    // and must still resume the parked run and release the held one.
    let mut h = Harness::start_with(Options {
        orchestrator_env: vec![("retention".into(), "1h".into())],
        approvals_env: vec![
            ("approval_retention".into(), "2s".into()),
            ("sweep_interval".into(), "200ms".into()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("test.yaml", &h.manifests_yaml()).await.unwrap();
    let call =
        |id: &str| Reply::tool_calls(&[(id, "delete-dataset", r#"{"dataset": "old-sales"}"#)]);
    let parked = |r: &pb::Run| !r.pending_approval_id.is_empty();

    h.mock.enqueue(call("call_a"));
    let live = h.start_run("analyst", "Delete old-sales.").await;
    let a = wait_run(&h, &live, 60, parked).await.pending_approval_id;
    h.mock.enqueue(call("call_b"));
    let held = h.start_run("analyst", "Delete old-sales too.").await;
    let b = wait_run(&h, &held, 60, parked).await.pending_approval_id;
    // Cancelled while parked: ended, held by b (no expiry).
    h.orchestrator()
        .await
        .cancel_run(pb::CancelRunRequest {
            run_id: held.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap();
    wait_run(&h, &held, 30, |r| {
        r.status == pb::RunStatus::Cancelled as i32
    })
    .await;
    assert_eq!(pttl(&h, &run_keys(&h, &held)[0]).await, -1);

    h.orchestrators[0].kill().await;
    let mut approvals = h.approvals().await;
    for (id, approve) in [(&a, true), (&b, false)] {
        approvals
            .decide(pb::DecideRequest {
                id: id.clone(),
                approve,
                reason: "decided while nobody listened".into(),
                approver: "alice".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // Both decisions gone from the approvals service, events included.
    let events_key = format!("{}:approvals:{{approvals}}:events", h.prefix);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = h.redis.client().await.unwrap();
        let left: u64 = redis::cmd("XLEN")
            .arg(&events_key)
            .query_async(&mut c)
            .await
            .unwrap();
        let a_gone = approvals
            .get(pb::GetApprovalRequest { id: a.clone() })
            .await
            .is_err_and(|e| e.code() == tonic::Code::NotFound);
        if left == 0 && a_gone {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events left {left}\n{}",
            h.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The parked run goes on (its approval is gone, which counts as denied: fail closed) and
    // finishes; the held run's hold is dropped and its retention starts.
    h.mock.enqueue(Reply::text("Could not delete it."));
    h.restart_orchestrator(0).await.unwrap();
    let done = wait_run(&h, &live, 60, |r| {
        r.status == pb::RunStatus::Succeeded as i32 || r.status == pb::RunStatus::Failed as i32
    })
    .await;
    assert_eq!(done.status, pb::RunStatus::Succeeded as i32, "{}", h.logs());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while pttl(&h, &run_keys(&h, &held)[0]).await <= 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held run kept no expiry\n{}",
            h.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = std::fs::read_to_string(&h.orchestrators[0].log).unwrap();
    assert!(
        log.contains("re-checking every run parked on or held by an approval"),
        "{log}"
    );
}
