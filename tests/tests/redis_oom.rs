//! Redis out of memory (issue 18, "Bad input and faults"): with `maxmemory` reached and the
//! `noeviction` policy, calls fail with RESOURCE_EXHAUSTED naming Redis; a run caught in the
//! middle of a step keeps its task and the model's reply (no repeated call, no dead letter, not
//! failed); a run parked on an approval is untouched; and everything resumes once memory is
//! freed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Duration;

use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use bridle_testkit::mock_openai::Reply;
use support::{Harness, Options, follow, kind_name};

async fn redis_cmd<T: redis::FromRedisValue>(h: &Harness, cmd: &mut redis::Cmd) -> T {
    let mut c = h.redis.client().await.unwrap();
    cmd.query_async(&mut c).await.unwrap()
}

async fn used_memory(h: &Harness) -> u64 {
    let info: String = redis_cmd(h, redis::cmd("INFO").arg("memory")).await;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO memory has used_memory")
}

/// Puts Redis over its limit: an 8 MB filler key, then `maxmemory` 1 MB below what is used.
async fn fill_redis(h: &Harness) {
    let _: i64 = redis_cmd(
        h,
        redis::cmd("SETRANGE")
            .arg("oom-filler")
            .arg(8 << 20)
            .arg("x"),
    )
    .await;
    let _: () = redis_cmd(
        h,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("noeviction"),
    )
    .await;
    let limit = used_memory(h).await - (1 << 20);
    let _: () = redis_cmd(
        h,
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(limit),
    )
    .await;
}

async fn free_redis(h: &Harness) {
    let _: i64 = redis_cmd(h, redis::cmd("DEL").arg("oom-filler")).await;
    let _: () = redis_cmd(h, redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0)).await;
}

/// Stored events of a run, without following.
async fn events(h: &Harness, run: &str) -> Vec<pb::RunEvent> {
    use futures::StreamExt as _;
    let mut s = h
        .orchestrator()
        .await
        .watch_run(pb::WatchRunRequest {
            run_id: run.into(),
            from_offset: 0,
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(ev) = s.next().await {
        out.push(ev.unwrap());
    }
    out
}

async fn status(h: &Harness, run: &str) -> pb::Run {
    h.orchestrator()
        .await
        .get_run(pb::GetRunRequest { run_id: run.into() })
        .await
        .unwrap()
        .into_inner()
}

fn start(key: &str) -> pb::StartRunRequest {
    pb::StartRunRequest {
        agent: "analyst".into(),
        input: "Say something.".into(),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

fn assert_redis_oom(what: &str, st: &tonic::Status, doing: &str) {
    assert_eq!(st.code(), tonic::Code::ResourceExhausted, "{what}: {st:?}");
    assert!(
        st.message()
            .starts_with("Redis is out of memory (maxmemory reached): ")
            && st.message().contains(doing)
            && st.message().ends_with("; retry when memory is freed"),
        "{what}: {st:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_redis_refuses_calls_clearly_and_runs_resume_when_memory_is_freed() {
    // Tasks left for redelivery would be taken over every 2s and dead-lettered after 2: a step
    // that failed on the full Redis instead of waiting would end its run well within the time
    // Redis stays full below.
    let h = Harness::start_with(Options {
        orchestrator_env: vec![
            ("claim_idle".into(), "2s".into()),
            ("max_deliveries".into(), "2".into()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();

    // Run `parked` waits on a human before Redis fills up.
    h.mock.enqueue(Reply::tool_calls(&[(
        "call_del",
        "delete-dataset",
        r#"{"dataset": "old-sales"}"#,
    )]));
    let parked = h.start_run("analyst", "Delete old-sales.").await;
    let approval = bridle_testkit::wait_for(
        "the run to wait for an approval",
        Duration::from_secs(60),
        || async {
            events(&h, &parked)
                .await
                .iter()
                .find_map(|e| match &e.kind {
                    Some(Kind::ApprovalRequested(a)) => Some(a.approval_id.clone()),
                    _ => None,
                })
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", h.logs()));

    // Run `busy` is inside its model call when Redis fills up; the reply comes after.
    h.mock.enqueue(Reply::Delay(
        Duration::from_secs(3),
        Box::new(Reply::text("slow answer")),
    ));
    let busy = h.start_run("analyst", "Answer slowly.").await;
    bridle_testkit::wait_for(
        "the slow model call to be in flight",
        Duration::from_secs(30),
        || async { (h.mock.requests().len() >= 2).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", h.logs()));

    fill_redis(&h).await;
    let full_since = tokio::time::Instant::now();

    // StartRun: RESOURCE_EXHAUSTED naming Redis, with or without an idempotency key.
    let mut orch = h.orchestrator().await;
    for key in ["oom-1", ""] {
        let st = orch.start_run(start(key)).await.unwrap_err();
        assert_redis_oom("StartRun", &st, "the run was not created");
    }
    // Deciding the approval needs its audit record written: refused the same way, nothing
    // applied.
    let mut approvals = h.approvals().await;
    let decide = pb::DecideRequest {
        id: approval.clone(),
        approve: true,
        reason: "fine".into(),
        approver: "alice".into(),
        ..Default::default()
    };
    let st = approvals.decide(decide.clone()).await.unwrap_err();
    assert_redis_oom("Decide", &st, "nothing was applied");

    // Redis stays full well past the point where a redelivered task would be dead-lettered.
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(full_since.elapsed())).await;
    // (Its last checkpoint is its creation: the step's start is recorded with the reply.)
    let b = status(&h, &busy).await;
    assert!(
        [pb::RunStatus::Queued as i32, pb::RunStatus::Running as i32].contains(&b.status),
        "the run caught mid-step is neither ended nor failed: {b:?}\n{}",
        h.logs()
    );
    assert!(
        h.holder().await.is_some(),
        "its task is still held, not acknowledged"
    );
    let dead: u64 = redis_cmd(
        &h,
        redis::cmd("XLEN").arg(format!("{}:work:{{steps}}:dead", h.prefix)),
    )
    .await;
    assert_eq!(dead, 0, "nothing was dead-lettered\n{}", h.logs());
    let p = status(&h, &parked).await;
    assert_eq!(p.status, pb::RunStatus::AwaitingApproval as i32, "{p:?}");
    let a = approvals
        .get(pb::GetApprovalRequest {
            id: approval.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.state, pb::ApprovalState::Pending as i32, "{a:?}");

    free_redis(&h).await;

    // The step caught mid-way checkpoints the reply it already had: no second model call.
    let ev = follow(&h, &busy, Duration::from_secs(60), |_| async {})
        .await
        .unwrap();
    match &ev.last().and_then(|e| e.kind.clone()) {
        Some(Kind::RunFinished(f)) => {
            assert_eq!(f.status, pb::RunStatus::Succeeded as i32, "{f:?}");
            assert_eq!(f.output, "slow answer");
        }
        other => panic!("{other:?}"),
    }
    let model_calls = ev
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::ModelCompleted(_))))
        .count();
    assert_eq!(
        (model_calls, h.mock.requests().len()),
        (1, 2),
        "the model was asked once for this run: {:?}",
        ev.iter().map(kind_name).collect::<Vec<_>>()
    );

    // The parked run goes on once the decision can be recorded.
    h.mock.enqueue(Reply::text("deleted"));
    approvals.decide(decide).await.unwrap();
    let ev = follow(&h, &parked, Duration::from_secs(120), |_| async {})
        .await
        .unwrap();
    match &ev.last().and_then(|e| e.kind.clone()) {
        Some(Kind::RunFinished(f)) => {
            assert_eq!(f.status, pb::RunStatus::Succeeded as i32, "{f:?}");
            assert_eq!(f.output, "deleted");
        }
        other => panic!("{other:?}"),
    }

    // New runs start again; the key refused while Redis was full names no phantom run.
    h.mock.enqueue(Reply::text("fresh"));
    let r = orch.start_run(start("oom-1")).await.unwrap().into_inner();
    assert!(r.created, "{r:?}");
    let run = r.run.unwrap().id;
    let ev = follow(&h, &run, Duration::from_secs(60), |_| async {})
        .await
        .unwrap();
    assert!(
        matches!(&ev.last().and_then(|e| e.kind.clone()), Some(Kind::RunFinished(f)) if f.status == pb::RunStatus::Succeeded as i32),
        "{:?}",
        ev.iter().map(kind_name).collect::<Vec<_>>()
    );
}
