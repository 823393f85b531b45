//! Bridle on highly available Redis: the five services on a Sentinel group through a
//! `SENTINEL FAILOVER` in the middle of a load of runs, and on a three-primary Redis Cluster
//! through the main end-to-end scenario. Real redis-server processes throughout.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod scenarios;
mod support;

use std::time::Duration;

use bridle_proto as pb;
use bridle_testkit::mock_openai::Reply;
use bridle_testkit::{RedisCluster, SentinelGroup};
use support::{Harness, Options, follow};

/// Whether the process is still the one the harness started (alive, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// StartRun with an idempotency key, sent again while the orchestrator answers UNAVAILABLE (a
/// client's retry across a failover; the key makes a retry return the same run).
async fn start_run_retrying(h: &Harness, key: &str) -> String {
    let mut last = None;
    for _ in 0..60 {
        let r = h
            .orchestrator()
            .await
            .start_run(pb::StartRunRequest {
                agent: "analyst".into(),
                input: format!("say done ({key})"),
                idempotency_key: key.into(),
                ..Default::default()
            })
            .await;
        match r {
            Ok(r) => return r.into_inner().run.expect("run").id,
            Err(e) if matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Internal) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("start run {key}: {e}"),
        }
    }
    panic!("start run {key}: still failing: {last:?}")
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_survive_a_sentinel_failover_and_the_services_reconnect_by_themselves() {
    let g = SentinelGroup::start().await.unwrap();
    let h = Harness::start_with(Options {
        redis_url: Some(g.url()),
        orchestrator_env: vec![("claim_idle".into(), "2s".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    // Every model call answers after a moment, so runs are in flight when the primary moves.
    h.mock.set_default(Some(Reply::Delay(
        Duration::from_millis(400),
        Box::new(Reply::text("done")),
    )));
    let pids: Vec<u32> = h
        .services
        .iter()
        .chain(&h.orchestrators)
        .filter_map(|s| s.pid())
        .collect();
    assert_eq!(pids.len(), 5);

    let before = g.primary_port().await.unwrap();
    let mut runs = Vec::new();
    for i in 0..6 {
        runs.push(start_run_retrying(&h, &format!("before-{i}")).await);
    }
    // More runs are started while the failover happens.
    let during = async {
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(start_run_retrying(&h, &format!("during-{i}")).await);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        ids
    };
    let (after, ids) = tokio::join!(g.failover(), during);
    let after = after.unwrap();
    assert_ne!(after, before, "the primary moved");
    runs.extend(ids);
    for i in 0..3 {
        runs.push(start_run_retrying(&h, &format!("after-{i}")).await);
    }

    let mut unfinished = Vec::new();
    for run in &runs {
        let events = follow(&h, run, Duration::from_secs(40), |_| async {})
            .await
            .unwrap_or_else(|e| panic!("run {run}: {e:#}\n{}", h.logs()));
        let fin: Vec<&pb::RunFinished> = events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(pb::run_event::Kind::RunFinished(f)) => Some(f),
                _ => None,
            })
            .collect();
        if fin.len() != 1 || fin[0].status != pb::RunStatus::Succeeded as i32 {
            unfinished.push(format!("{run}: {fin:?}"));
        }
        // Offsets dense from 1: no event lost or repeated.
        for (i, ev) in events.iter().enumerate() {
            assert_eq!(ev.offset, i as u64 + 1, "run {run}");
        }
    }
    assert!(
        unfinished.is_empty(),
        "every run ends once, succeeded: {unfinished:?}\n{}",
        h.logs()
    );
    // The services that did all this are the ones started before the failover.
    for pid in pids {
        assert!(running(pid), "service {pid} is still running\n{}", h.logs());
    }
    // And their data is on the new primary.
    let mut direct = redis::Client::open(format!("redis://127.0.0.1:{after}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let n: u64 = redis::cmd("ZCARD")
        .arg(format!("{}:runs:{{default}}", h.prefix))
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(
        n,
        runs.len() as u64,
        "every run is indexed on the new primary"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_main_scenario_runs_on_a_redis_cluster() {
    let c = RedisCluster::start().await.unwrap();
    let h = Harness::start_with(Options {
        redis_url: Some(c.url()),
        ..Default::default()
    })
    .await
    .unwrap();
    scenarios::tool_call_approval_and_finish(&h).await;
    // Bridle's keys went to more than one node: runs, approvals and manifests have their
    // own hash tags.
    let per_node = c.keys_per_node().await.unwrap();
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "keys spread over the nodes: {per_node:?}"
    );
}

/// The model of the slot-migration test: a tool call first, then an answer, each after a
/// moment, so runs are in flight while slots move.
fn tool_then_answer(req: &serde_json::Value) -> Reply {
    let has_tool_result = req["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    let reply = if has_tool_result {
        Reply::text("done")
    } else {
        Reply::tool_calls(&[("call_1", "python", r#"{"code": "print(6 * 7)"}"#)])
    };
    Reply::Delay(Duration::from_millis(200), Box::new(reply))
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_survive_slot_migrations_on_a_redis_cluster() {
    let c = RedisCluster::start().await.unwrap();
    let h = Harness::start_with(Options {
        redis_url: Some(c.url()),
        orchestrator_env: vec![("claim_idle".into(), "2s".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    h.mock
        .set_responder(Some(std::sync::Arc::new(tool_then_answer)));

    let mut runs = Vec::new();
    for i in 0..8 {
        runs.push(start_run_retrying(&h, &format!("before-{i}")).await);
    }
    // While runs are in flight and more are started, the slots of the work stream and of the
    // tenant's run index move to another node, keys and all (ASK redirects meanwhile, MOVED
    // after).
    let moves = async {
        let steps = c
            .migrate_slot_of(
                &format!("{}:work:{{steps}}", h.prefix),
                Duration::from_millis(150),
            )
            .await
            .unwrap();
        let index = c
            .migrate_slot_of(
                &format!("{}:runs:{{default}}", h.prefix),
                Duration::from_millis(150),
            )
            .await
            .unwrap();
        (steps, index)
    };
    let during = async {
        let mut ids = Vec::new();
        for i in 0..8 {
            ids.push(start_run_retrying(&h, &format!("during-{i}")).await);
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        ids
    };
    let ((steps, index), ids) = tokio::join!(moves, during);
    assert_ne!(steps.0, steps.1);
    assert_ne!(index.0, index.1);
    runs.extend(ids);

    let mut wrong = Vec::new();
    for run in &runs {
        let events = follow(&h, run, Duration::from_secs(60), |_| async {})
            .await
            .unwrap_or_else(|e| panic!("run {run}: {e:#}\n{}", h.logs()));
        let fin: Vec<&pb::RunFinished> = events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(pb::run_event::Kind::RunFinished(f)) => Some(f),
                _ => None,
            })
            .collect();
        let tools = events
            .iter()
            .filter(|e| matches!(e.kind, Some(pb::run_event::Kind::ToolFinished(_))))
            .count();
        if fin.len() != 1 || fin[0].status != pb::RunStatus::Succeeded as i32 || tools != 1 {
            wrong.push(format!("{run}: {tools} tool results, {fin:?}"));
        }
        for (i, ev) in events.iter().enumerate() {
            assert_eq!(ev.offset, i as u64 + 1, "run {run}: events dense from 1");
        }
    }
    assert!(
        wrong.is_empty(),
        "every run ends once, succeeded, with one tool call: {wrong:?}\n{}",
        h.logs()
    );
    // The runs are listed from the index on its new node: none lost or doubled.
    let listed = h
        .orchestrator()
        .await
        .list_runs(pb::ListRunsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs
        .len();
    assert_eq!(listed, runs.len());
}
