//! End-to-end scenarios run against more than one Redis deployment (one server in
//! governed_run.rs, a Redis Cluster in redis_ha.rs), so the same behaviour is checked on each.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use bridle_proto as pb;
use bridle_proto::run_event::Kind;

use crate::support::{Harness, follow_approving, kind_name};

/// One run calls a container tool, parks for approval before a destructive tool, is approved
/// and finishes; a repeated idempotency key gives the same run.
pub async fn tool_call_approval_and_finish(h: &Harness) {
    let applied = h.apply("test.yaml", &h.manifests_yaml()).await.unwrap();
    assert_eq!(applied.applied.len(), 4, "{applied:?}");

    h.enqueue_governed_run("old-sales", "6 x 7 is 42, and old-sales is deleted.");

    let run = h
        .orchestrator()
        .await
        .start_run(pb::StartRunRequest {
            agent: "analyst".into(),
            input: "What is 6 x 7? Then delete old-sales.".into(),
            idempotency_key: "e2e-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(run.created);
    let run_id = run.run.unwrap().id;

    let events = follow_approving(h, &run_id, Duration::from_secs(180))
        .await
        .unwrap();

    let kinds: Vec<&str> = events.iter().map(kind_name).collect();
    assert_eq!(
        kinds,
        [
            "RunCreated",
            "StepStarted",
            "ModelCompleted",
            "PolicyEvaluated",
            "ToolStarted",
            "ToolFinished",
            "StepFinished",
            "StepStarted",
            "ModelCompleted",
            "PolicyEvaluated",
            "ApprovalRequested",
            "ApprovalResolved",
            "ToolStarted",
            "ToolFinished",
            "StepFinished",
            "StepStarted",
            "ModelCompleted",
            "RunFinished",
        ],
        "{}",
        h.logs()
    );
    // Offsets are dense from 1.
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev.offset, i as u64 + 1);
    }
    let tool_outputs: Vec<&pb::ToolFinished> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::ToolFinished(t)) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(tool_outputs[0].output.trim(), "42");
    assert!(!tool_outputs[0].is_error);
    assert_eq!(tool_outputs[1].output.trim(), "deleted old-sales");
    let policy: Vec<i32> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::PolicyEvaluated(p)) => Some(p.decision),
            _ => None,
        })
        .collect();
    assert_eq!(
        policy,
        [
            pb::PolicyDecision::Allow as i32,
            pb::PolicyDecision::RequireApproval as i32
        ]
    );
    let Some(Kind::ApprovalResolved(resolved)) = &events[11].kind else {
        panic!()
    };
    assert_eq!(resolved.outcome, pb::ApprovalState::Approved as i32);
    assert_eq!(resolved.decided_by, "alice");
    let Some(Kind::RunFinished(fin)) = &events.last().unwrap().kind else {
        panic!()
    };
    assert_eq!(fin.status, pb::RunStatus::Succeeded as i32);
    assert_eq!(fin.output, "6 x 7 is 42, and old-sales is deleted.");
    assert_eq!(fin.steps, 3);
    let usage = fin.usage.unwrap();
    assert!(
        usage.input_tokens > 0 && usage.output_tokens > 0,
        "{usage:?}"
    );
    assert!(fin.cost.unwrap().known, "gpt-4o-mini has a known price");

    // The provider received the key stored in OpenBao, on every call.
    let reqs = h.mock.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(
            r.authorization(),
            Some(format!("Bearer {}", h.api_key).as_str())
        );
    }
    // The model saw the tools and, next turn, the tool's output.
    let tools: Vec<&str> = reqs[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["python", "delete-dataset"]);
    let msgs = reqs[1].body["messages"].as_array().unwrap();
    let tool_msg = msgs
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("a tool message");
    assert_eq!(tool_msg["tool_call_id"], "call_py");
    assert_eq!(tool_msg["content"].as_str().unwrap().trim(), "42");

    // The run record agrees, and the same idempotency key gives the same run.
    let mut orch = h.orchestrator().await;
    let got = orch
        .get_run(pb::GetRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, pb::RunStatus::Succeeded as i32);
    assert_eq!(got.last_event_offset, events.len() as u64);
    let again = orch
        .start_run(pb::StartRunRequest {
            agent: "analyst".into(),
            input: "x".into(),
            idempotency_key: "e2e-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.run.unwrap().id, run_id);
    assert_eq!(
        h.mock.requests().len(),
        3,
        "no new model call for the repeated key"
    );
}
