//! The walking skeleton, end to end: the five service binaries as separate processes, a real
//! Redis, a real OpenBao dev server, real Docker, and the mock OpenAI server. One run calls a
//! container tool, parks for approval before a destructive tool, is approved, and finishes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod scenarios;
mod support;

use std::time::Duration;

use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use bridle_testkit::mock_openai::Reply;
use support::{Harness, follow};

#[tokio::test(flavor = "multi_thread")]
async fn a_run_calls_a_container_tool_parks_for_approval_and_finishes() {
    let h = Harness::start().await.unwrap();
    scenarios::tool_call_approval_and_finish(&h).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tool_arguments_reach_the_model_as_an_error_and_nothing_runs() {
    let h = Harness::start().await.unwrap();
    h.apply("test.yaml", &h.manifests_yaml()).await.unwrap();
    h.mock.enqueue(Reply::tool_calls(&[(
        "call_bad",
        "python",
        r#"{"source": "print(1)"}"#,
    )]));
    h.mock.enqueue(Reply::text("I could not run it."));
    let run_id = h
        .orchestrator()
        .await
        .start_run(pb::StartRunRequest {
            agent: "analyst".into(),
            input: "go".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .id;
    let events = follow(&h, &run_id, Duration::from_secs(120), |_| async {})
        .await
        .unwrap();
    let finished: Vec<&pb::ToolFinished> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::ToolFinished(t)) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1);
    assert!(finished[0].is_error);
    assert!(
        finished[0].output.contains("code"),
        "names the missing property: {}",
        finished[0].output
    );
    let msgs = h.mock.requests()[1].body["messages"]
        .as_array()
        .unwrap()
        .clone();
    let tool_msg = msgs.iter().find(|m| m["role"] == "tool").unwrap();
    assert!(tool_msg["content"].as_str().unwrap().contains("code"));
    let Some(Kind::RunFinished(fin)) = &events.last().unwrap().kind else {
        panic!()
    };
    assert_eq!(fin.status, pb::RunStatus::Succeeded as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_manifests_and_unknown_agents_are_refused_clearly() {
    let h = Harness::start().await.unwrap();
    // A typo in one document: nothing of the set is applied.
    let bad = h.manifests_yaml().replace("maxSteps: 5", "maxStep: 5");
    let e = h.apply("agents/analyst.yaml", &bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("agents/analyst.yaml"),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains("spec.budget.maxStep"),
        "{}",
        e.message()
    );
    // The same problem for a program: google.rpc ErrorInfo and BadRequest, field by field.
    {
        use tonic_types::StatusExt;
        let info = e.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "MANIFEST_INVALID");
        assert_eq!(info.domain, "bridle.dev");
        assert_eq!(info.metadata["problems"], "1");
        assert_eq!(info.metadata["file_0"], "agents/analyst.yaml");
        assert!(!info.metadata.contains_key("document_0"), "{info:?}");
        let line = bad.lines().position(|l| l.contains("maxStep:")).unwrap() + 1;
        assert_eq!(info.metadata["line_0"], line.to_string(), "{info:?}");
        assert_eq!(info.metadata["subject_0"], "Agent 'analyst'");
        let bad_request = e.get_details_bad_request().expect("BadRequest");
        assert_eq!(bad_request.field_violations.len(), 1);
        let v = &bad_request.field_violations[0];
        assert_eq!(v.field, "spec.budget.maxStep");
        assert!(v.description.contains("maxStep"), "{v:?}");
    }
    let listed = h
        .manifests()
        .await
        .list_manifests(pb::ListManifestsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.manifests.is_empty(),
        "nothing applied: {:?}",
        listed.manifests
    );

    // An agent that references a tool that exists nowhere.
    let dangling = h
        .manifests_yaml()
        .replace("tools: [python, delete-dataset]", "tools: [python, rm-rf]");
    let e = h.apply("m.yaml", &dangling).await.unwrap_err();
    assert!(
        e.message().contains("tool 'rm-rf' is not defined"),
        "{}",
        e.message()
    );

    let e = h
        .orchestrator()
        .await
        .start_run(pb::StartRunRequest {
            agent: "nobody".into(),
            input: "hi".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(
        e.message(),
        "agent 'nobody' is not defined for tenant 'default'"
    );
}

/// A Tool's `approvers` reach its approvals: this one needs two distinct people, and the run
/// waits for both before the call runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_tool_that_needs_two_approvers_runs_only_after_both() {
    let h = Harness::start().await.unwrap();
    let yaml = h.manifests_yaml().replace(
        "  description: Deletes a dataset. Cannot be undone.\n",
        "  description: Deletes a dataset. Cannot be undone.\n  approvers: {count: 2, notTheStarter: true}\n",
    );
    assert!(yaml.contains("approvers:"), "the manifest changed");
    h.apply("test.yaml", &yaml).await.unwrap();
    h.mock.enqueue(Reply::tool_calls(&[(
        "d",
        "delete-dataset",
        r#"{"dataset":"sales"}"#,
    )]));
    h.mock.enqueue(Reply::text("Deleted."));
    let run_id = h.start_run("analyst", "delete sales").await;
    let id = h.parked_approval(&run_id, Duration::from_secs(60)).await;
    let mut approvals = h.approvals().await;
    assert_eq!((id.approvals_required, id.not_the_starter), (2, true));
    let decide = |who: &str| pb::DecideRequest {
        id: id.id.clone(),
        approve: true,
        approver: who.into(),
        reason: "ok".into(),
        ..Default::default()
    };
    let first = approvals
        .decide(decide("alice"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.state, pb::ApprovalState::Pending as i32);
    let second = approvals.decide(decide("bob")).await.unwrap().into_inner();
    assert_eq!(second.state, pb::ApprovalState::Approved as i32);
    let events = follow(&h, &run_id, Duration::from_secs(120), |_| async {})
        .await
        .unwrap();
    match events.last().and_then(|e| e.kind.as_ref()) {
        Some(Kind::RunFinished(f)) => {
            assert_eq!(f.status, pb::RunStatus::Succeeded as i32, "{f:?}")
        }
        other => panic!("the run ended with {other:?}"),
    }
}
