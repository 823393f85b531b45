//! Budgets end runs: a model that never stops calling tools is stopped by each of the step,
//! token, cost and wall-time budgets, with a terminal event that names it.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Duration;

use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use bridle_testkit::mock_openai::{Reply, tool_call_completion};
use support::{Harness, follow};

/// A scripted route whose every turn calls the python tool again.
fn endless(h: &Harness, budget: &str, code: &str) -> String {
    let turn = format!(
        "        - toolCalls:\n            - name: python\n              arguments: {{code: \"{code}\"}}\n"
    );
    let base = h.manifests_yaml().replace(
        "  budget:\n    maxSteps: 5\n",
        &format!("  budget:\n{budget}"),
    );
    format!(
        "{base}---\napiVersion: bridle.dev/v1\nkind: ModelRoute\nmetadata:\n  name: endless\nspec:\n  targets:\n    - provider: scripted\n      script:\n{}",
        turn.repeat(30)
    )
    .replace("  route: main\n", "  route: endless\n")
}

async fn end_of(h: &Harness, run: &str) -> pb::RunFinished {
    let events = follow(h, run, Duration::from_secs(120), |_| async {})
        .await
        .unwrap();
    match events.last().and_then(|e| e.kind.clone()) {
        Some(Kind::RunFinished(f)) => f,
        other => panic!("last event {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_step_budget_ends_an_endless_run() {
    let h = Harness::start().await.unwrap();
    h.apply("m.yaml", &endless(&h, "    maxSteps: 3\n", "print(1)"))
        .await
        .unwrap();
    let run = h.start_run("analyst", "loop").await;
    let f = end_of(&h, &run).await;
    assert_eq!(f.reason, pb::EndReason::MaxSteps as i32, "{f:?}");
    assert_eq!(f.status, pb::RunStatus::Failed as i32);
    assert_eq!(f.steps, 3);
    assert!(f.error.contains("step budget (3)"), "{}", f.error);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_run_override_can_only_lower_the_budget() {
    let h = Harness::start().await.unwrap();
    h.apply("m.yaml", &endless(&h, "    maxSteps: 4\n", "print(1)"))
        .await
        .unwrap();
    let mut c = h.orchestrator().await;
    let start = |steps: u32| pb::StartRunRequest {
        agent: "analyst".into(),
        input: "loop".into(),
        budget: Some(pb::Budget {
            max_steps: steps,
            ..Default::default()
        }),
        ..Default::default()
    };
    let lowered = c
        .start_run(start(2))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(lowered.budget.unwrap().max_steps, 2);
    let raised = c
        .start_run(start(50))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(
        raised.budget.unwrap().max_steps,
        4,
        "a run cannot raise the agent's budget"
    );
    assert_eq!(end_of(&h, &lowered.id).await.steps, 2);
    assert_eq!(end_of(&h, &raised.id).await.steps, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wall_time_budget_cuts_a_call_in_flight() {
    let h = Harness::start().await.unwrap();
    h.apply(
        "m.yaml",
        &endless(&h, "    maxWallTime: 3s\n", "import time; time.sleep(20)"),
    )
    .await
    .unwrap();
    let run = h.start_run("analyst", "sleep").await;
    let t0 = std::time::Instant::now();
    let f = end_of(&h, &run).await;
    assert_eq!(f.reason, pb::EndReason::WallTime as i32, "{f:?}");
    assert!(
        f.error.contains("wall-time budget of 3.0s exceeded"),
        "{}",
        f.error
    );
    // Not a timing assertion on the machine's speed: the tool sleeps 20s, the run must not.
    assert!(
        t0.elapsed() < Duration::from_secs(19),
        "the run waited for the tool"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tools_own_timeout_cuts_its_call_and_the_result_says_which_limit_fired() {
    let h = Harness::start().await.unwrap();
    // The orchestrator's ceiling (tool_timeout) is its default, 10 minutes; the tool's own
    // timeout, 2s, is the smallest limit and must be the one that fires.
    let yaml = endless(&h, "    maxSteps: 1\n", "while True: pass").replacen(
        "  timeout: 30s\n",
        "  timeout: 2s\n",
        1,
    );
    h.apply("m.yaml", &yaml).await.unwrap();
    let run = h.start_run("analyst", "spin").await;
    let events = follow(&h, &run, Duration::from_secs(120), |_| async {})
        .await
        .unwrap();
    let finished: Vec<pb::ToolFinished> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::ToolFinished(f)) => Some(f.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1, "{events:#?}");
    let f = &finished[0];
    assert!(f.timed_out && f.is_error, "{f:?}");
    assert!(
        f.output
            .contains("timed out after 2.0s, the tool's timeout"),
        "{}",
        f.output
    );
}

fn with_usage(input: u64, output: u64) -> Reply {
    let mut c = tool_call_completion("gpt-4o-mini", &[("c", "python", r#"{"code":"print(1)"}"#)]);
    c["usage"] = serde_json::json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
    Reply::Completion(c)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_budget_ends_the_run() {
    let h = Harness::start().await.unwrap();
    let m = h.manifests_yaml().replace(
        "    maxSteps: 5\n",
        "    maxSteps: 50\n    maxTokens: 2500\n",
    );
    h.apply("m.yaml", &m).await.unwrap();
    for _ in 0..10 {
        h.mock.enqueue(with_usage(1000, 100));
    }
    let run = h.start_run("analyst", "loop").await;
    let f = end_of(&h, &run).await;
    assert_eq!(f.reason, pb::EndReason::TokenBudget as i32, "{f:?}");
    assert!(f.error.contains("token budget of 2500"), "{}", f.error);
    // Three calls of 1,100 tokens: the third crosses the budget, and nothing runs after it.
    assert_eq!(f.steps, 3);
    assert_eq!(f.usage.unwrap().input_tokens, 3000);
    // The model was never offered more output than the budget had left.
    let asked: Vec<u64> = h
        .mock
        .requests()
        .iter()
        .map(|r| r.body["max_completion_tokens"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(asked, [2500, 1400, 300]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cost_budget_ends_the_run() {
    let h = Harness::start().await.unwrap();
    // gpt-4o-mini: 1,000,000 input tokens cost $0.15, so each call below costs $0.15.
    let m = h.manifests_yaml().replace(
        "    maxSteps: 5\n",
        "    maxSteps: 50\n    maxCostUsd: 0.40\n",
    );
    h.apply("m.yaml", &m).await.unwrap();
    for _ in 0..10 {
        h.mock.enqueue(with_usage(1_000_000, 0));
    }
    let run = h.start_run("analyst", "loop").await;
    let f = end_of(&h, &run).await;
    assert_eq!(f.reason, pb::EndReason::CostBudget as i32, "{f:?}");
    assert!(f.error.contains("cost budget of $0.4000"), "{}", f.error);
    assert_eq!(f.steps, 3);
    let cost = f.cost.unwrap();
    assert!(cost.known);
    assert_eq!(cost.nano_usd, 450_000_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_with_a_cost_budget_cannot_use_a_route_without_prices() {
    let h = Harness::start().await.unwrap();
    // The scripted provider has no price in the router's table.
    let yaml = endless(&h, "    maxSteps: 3\n    maxCostUsd: 0.40\n", "print(1)");
    let err = h.apply("m.yaml", &yaml).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let msg = err.message();
    assert!(msg.contains("spec.budget.maxCostUsd"), "{msg}");
    assert!(msg.contains("route 'endless'"), "{msg}");
    assert!(msg.contains("declare `price`"), "{msg}");

    // The same route with prices declared is accepted, also when applied before the agent.
    let priced = yaml.replace(
        "    - provider: scripted\n",
        "    - provider: scripted\n      price: {input: 1, output: 2}\n",
    );
    h.apply("m.yaml", &priced).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_with_a_cost_budget_refuses_a_model_without_a_price() {
    let h = Harness::start().await.unwrap();
    // No budget on the agent: the run's own cost budget meets the unpriced route at call time.
    h.apply("m.yaml", &endless(&h, "    maxSteps: 3\n", "print(1)"))
        .await
        .unwrap();
    let run = h
        .orchestrator()
        .await
        .start_run(pb::StartRunRequest {
            agent: "analyst".into(),
            input: "loop".into(),
            budget: Some(pb::Budget {
                max_cost_nano_usd: 1_000_000_000,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let f = end_of(&h, &run.id).await;
    assert_eq!(f.status, pb::RunStatus::Failed as i32, "{f:?}");
    assert!(f.error.contains("no known price"), "{}", f.error);
    assert!(f.error.contains("declare `price`"), "{}", f.error);
    assert_eq!(f.steps, 1, "the call was refused, not made: {f:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_the_tool_in_flight() {
    let h = Harness::start().await.unwrap();
    h.apply(
        "m.yaml",
        &endless(&h, "    maxSteps: 5\n", "import time; time.sleep(60)"),
    )
    .await
    .unwrap();
    let run = h.start_run("analyst", "sleep").await;
    let docker_label = format!("label=dev.bridle.run={run}");
    let running = || {
        let label = docker_label.clone();
        async move {
            let out = tokio::process::Command::new("docker")
                .args(["ps", "-q", "--filter", &label])
                .output()
                .await
                .ok()?;
            Some(String::from_utf8_lossy(&out.stdout).lines().count())
        }
    };
    bridle_testkit::wait_for("the tool's container", Duration::from_secs(60), || async {
        running().await.filter(|n| *n > 0)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", h.logs()));
    // Cancel once the call is under way in its sandbox. A cancel that lands while the tools
    // service is still starting the sandbox (within about 150 ms of the container showing up)
    // has been seen to leave the container running until its program ends: a race between
    // EndRun and the sandbox's start, not yet found, which this test does not cover.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = std::time::Instant::now();
    h.orchestrator()
        .await
        .cancel_run(pb::CancelRunRequest {
            run_id: run.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap();
    let f = end_of(&h, &run).await;
    assert_eq!(f.status, pb::RunStatus::Cancelled as i32, "{f:?}");
    assert_eq!(f.error, "cancelled by anonymous: changed my mind");
    assert!(
        t0.elapsed() < Duration::from_secs(55),
        "cancel waited for the tool"
    );
    bridle_testkit::wait_for(
        "the container to be gone",
        Duration::from_secs(30),
        || async { running().await.filter(|n| *n == 0) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", h.logs()));
}
