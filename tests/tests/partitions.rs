//! The partitioned work queue (issue 18): with four partitions, the steps of many runs spread
//! over them by run id and every run completes; a step abandoned by a killed worker in a
//! partition other than the first is claimed by the surviving orchestrator.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bridle_orchestrator::queue::WorkQueue;
use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use bridle_testkit::mock_openai::Reply;
use support::{Harness, Options, follow};

const PARTITIONS: usize = 4;

fn options() -> Options {
    Options {
        orchestrators: 2,
        orchestrator_env: vec![
            ("work_partitions".into(), PARTITIONS.to_string()),
            ("claim_idle".into(), "2s".into()),
        ],
        ..Default::default()
    }
}

fn partition_key(h: &Harness, p: usize) -> String {
    if p == 0 {
        format!("{}:work:{{steps}}", h.prefix)
    } else {
        format!("{}:work:{{steps-{p}}}", h.prefix)
    }
}

fn finished(events: &[pb::RunEvent]) -> Option<&pb::RunFinished> {
    events.iter().find_map(|e| match &e.kind {
        Some(Kind::RunFinished(f)) => Some(f),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn steps_of_many_runs_spread_over_the_partitions_and_every_run_completes() {
    let h = Harness::start_with(options()).await.unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    const RUNS: usize = 24;
    for i in 0..RUNS {
        h.mock.enqueue(Reply::text(&format!("answer {i}")));
    }
    let mut runs = Vec::new();
    for i in 0..RUNS {
        runs.push(h.start_run("analyst", &format!("question {i}")).await);
    }
    for run in &runs {
        let events = follow(&h, run, Duration::from_secs(120), |_| async {})
            .await
            .unwrap();
        let fin = finished(&events).unwrap();
        assert_eq!(fin.status, pb::RunStatus::Succeeded as i32, "{}", h.logs());
    }

    let mut per_partition: BTreeMap<usize, u64> = BTreeMap::new();
    for run in &runs {
        *per_partition
            .entry(WorkQueue::partition_of(run, PARTITIONS))
            .or_default() += 1;
    }
    assert!(per_partition.len() >= 3, "{per_partition:?}");
    let mut c = h.redis.client().await.unwrap();
    // A run's end is visible to its watcher when its last step commits; the worker then
    // acknowledges the step. Wait (bounded) for those last acknowledgements.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut left = 0u64;
        for p in 0..PARTITIONS {
            let len: u64 = redis::cmd("XLEN")
                .arg(partition_key(&h, p))
                .query_async(&mut c)
                .await
                .unwrap();
            left += len;
        }
        if left == 0 || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for p in 0..PARTITIONS {
        let key = partition_key(&h, p);
        // XINFO GROUPS: one group, as a flat name/value list.
        let groups: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(groups.len(), 1, "{key}");
        let field = |name: &str| -> i64 {
            let g = &groups[0];
            let i = g
                .iter()
                .position(|v| matches!(v, redis::Value::BulkString(b) if b == name.as_bytes()))
                .unwrap_or_else(|| panic!("{name} in {g:?}"));
            redis::from_redis_value_ref(&g[i + 1]).unwrap()
        };
        let read = field("entries-read");
        let runs_here = per_partition.get(&p).copied().unwrap_or(0) as i64;
        // Each run queued at least its first step here, and nothing of another run came here.
        if runs_here == 0 {
            assert_eq!(read, 0, "{key}");
        } else {
            assert!(read >= runs_here, "{key}: read {read}, runs {runs_here}");
        }
        assert_eq!(field("pending"), 0, "{key}");
        let len: u64 = redis::cmd("XLEN")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(len, 0, "{key}: acknowledged steps are deleted");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_abandoned_in_a_later_partition_is_claimed() {
    let mut h = Harness::start_with(options()).await.unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    // Start runs until one lands outside partition 0 (each other one is cancelled); its first
    // model call hangs long enough to kill the worker holding it.
    let mut calls = 0;
    let (run, k) = loop {
        h.mock.enqueue(Reply::Delay(
            Duration::from_secs(30),
            Box::new(Reply::text("too late")),
        ));
        let run = h.start_run("analyst", "go").await;
        calls += 1;
        let k = WorkQueue::partition_of(&run, PARTITIONS);
        wait_for_requests(&h, calls).await;
        if k != 0 {
            break (run, k);
        }
        h.orchestrator()
            .await
            .cancel_run(pb::CancelRunRequest {
                run_id: run.clone(),
                reason: "partition 0".into(),
            })
            .await
            .unwrap();
        follow(&h, &run, Duration::from_secs(60), |_| async {})
            .await
            .unwrap();
        assert!(calls < 12, "every run landed in partition 0");
    };
    h.mock.enqueue(Reply::text("done"));
    // The holder of this run's step: the cancelled runs' steps in partition 0 may still be
    // pending (their model calls wind down), held by either orchestrator.
    let victim = h.holder_index_in(k).await.expect("someone holds the step");
    h.orchestrators[victim].kill().await;

    let events = follow(&h, &run, Duration::from_secs(90), |_| async {})
        .await
        .unwrap();
    let fin = finished(&events).unwrap();
    assert_eq!(fin.status, pb::RunStatus::Succeeded as i32, "{}", h.logs());
    assert_eq!(fin.output, "done");
    let survivor = &h.orchestrators[1 - victim];
    let log = survivor.log_tail(400);
    let key = partition_key(&h, k);
    assert!(
        log.lines()
            .any(|l| l.contains("took over a stalled task") && l.contains(&key)),
        "the survivor claimed the step in {key}:\n{log}"
    );
}

async fn wait_for_requests(h: &Harness, n: usize) {
    bridle_testkit::wait_for(
        "the model call to be in flight",
        Duration::from_secs(30),
        || async { (h.mock.requests().len() >= n).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", h.logs()));
}
