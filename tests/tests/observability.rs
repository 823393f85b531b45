//! One trace per run across the five service processes, exported over OTLP to an in-test
//! receiver: the span tree, its parent links, names and GenAI attributes.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod semconv;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use bridle_testkit::mock_openai::Reply;
use bridle_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use support::{Harness, Options, follow, follow_approving};

/// What a run's trace tells beyond its tree of calls (issue: a run's whole story in its
/// trace): who approved and why, the policy that asked, every call made about the run linked
/// to it, the phases of a tool call and the tries of a model call, and which build of which
/// service sent each span.
fn whole_story(otlp: &OtlpReceiver, spans: &[ReceivedSpan], trace_id: &str) {
    let named = |n: &str| {
        spans
            .iter()
            .filter(|s| s.span.name == n)
            .collect::<Vec<_>>()
    };
    let one = |n: &str| {
        let v = named(n);
        assert_eq!(v.len(), 1, "one {n}: {v:?}");
        v[0]
    };
    let root = one("invoke_agent analyst");
    let by_id: HashMap<String, &ReceivedSpan> = spans.iter().map(|s| (s.span_id(), s)).collect();
    let parent_name = |s: &ReceivedSpan| {
        by_id
            .get(&s.parent_id())
            .map(|p| p.span.name.clone())
            .unwrap_or_default()
    };

    // The policy's decision, reason and rule, on the check and on the wait.
    let check = one("check_policy delete-dataset");
    assert_eq!(
        check.attr_list("bridle.policy.ids"),
        ["builtin.destructive"]
    );
    let why = check.attr("bridle.policy.reason").unwrap();
    assert!(why.contains("destructive"), "{why}");
    let allowed = one("check_policy python");
    assert_eq!(allowed.attr_list("bridle.policy.ids"), ["builtin.granted"]);
    let wait = one("await_approval delete-dataset");
    assert_eq!(
        wait.attr("bridle.approval.decided_by").as_deref(),
        Some("alice")
    );
    assert_eq!(wait.attr("bridle.approval.reason").as_deref(), Some("fine"));
    assert!(wait.attr("bridle.approval.decided_at").is_some());
    assert_eq!(wait.attr("bridle.policy.reason"), Some(why.clone()));
    assert_eq!(wait.attr_list("bridle.policy.ids"), ["builtin.destructive"]);

    // The person's decision is in the run's trace, under the check that asked for it, and
    // linked both ways with the Decide call (a trace of its own: the caller sent none).
    let decided = one("decide_approval delete-dataset");
    assert_eq!(decided.service, "bridle-approvals");
    assert_eq!(decided.parent_id(), check.span_id());
    assert_eq!(
        decided.attr("bridle.approval.decided_by").as_deref(),
        Some("alice")
    );
    assert_eq!(
        decided.attr("bridle.approval.reason").as_deref(),
        Some("fine")
    );
    assert_eq!(
        decided.attr("bridle.approval.outcome").as_deref(),
        Some("approved")
    );
    let all = otlp.spans();
    let call = |method: &str| -> Vec<ReceivedSpan> {
        all.iter()
            .filter(|s| s.span.name == method)
            .cloned()
            .collect()
    };
    let decide = call("bridle.v1.Approvals/Decide");
    assert_eq!(decide.len(), 1);
    assert_ne!(decide[0].trace_id(), trace_id);
    assert_eq!(
        decided.links(),
        [(decide[0].trace_id(), decide[0].span_id())]
    );
    assert!(
        decide[0]
            .links()
            .contains(&(trace_id.to_string(), check.span_id())),
        "{:?}",
        decide[0].links()
    );
    // The orchestrator's reads of the approval link to the run too.
    let gets = call("bridle.v1.Approvals/Get");
    assert!(!gets.is_empty());
    for g in &gets {
        assert!(g.links().contains(&(trace_id.to_string(), check.span_id())));
    }

    // The calls that started, watched and read the run link to its root, and the root to the
    // call that started it.
    let root_ctx = (trace_id.to_string(), root.span_id());
    let start = call("bridle.v1.Orchestrator/StartRun");
    let start: Vec<&ReceivedSpan> = start
        .iter()
        .filter(|s| s.links().contains(&root_ctx))
        .collect();
    assert_eq!(start.len(), 1, "one StartRun made this run");
    assert_eq!(root.links(), [(start[0].trace_id(), start[0].span_id())]);
    for method in [
        "bridle.v1.Orchestrator/WatchRun",
        "bridle.v1.Orchestrator/GetRun",
    ] {
        assert!(
            call(method).iter().any(|s| s.links().contains(&root_ctx)),
            "{method} links to the run"
        );
    }

    // Releasing the run is in its trace, the services' EndRun calls under it.
    let release = one("release_run");
    assert_eq!(release.parent_id(), root.span_id());
    for method in ["bridle.v1.Tools/EndRun", "bridle.v1.Secrets/EndRun"] {
        let e = one(method);
        assert_eq!(e.parent_id(), release.span_id(), "{method}");
    }

    // A tool call's phases, under the tools service's span of the call.
    for phase in ["acquire_sandbox", "run_in_sandbox", "capture_output"] {
        let p = named(phase);
        assert_eq!(p.len(), 2, "{phase}: one per sandboxed call");
        for s in p {
            assert_eq!(s.service, "bridle-tools");
            assert_eq!(parent_name(s), "bridle.v1.Tools/Execute", "{phase}");
        }
    }
    for s in named("acquire_sandbox") {
        let source = s.attr("bridle.sandbox.source").unwrap();
        assert!(
            ["run", "pool", "created"].contains(&source.as_str()),
            "{source}"
        );
    }
    // A model call's tries, under the router's span of the call.
    let tries: Vec<&ReceivedSpan> = named("chat gpt-4o-mini")
        .into_iter()
        .filter(|s| s.service == "bridle-router")
        .collect();
    assert_eq!(tries.len(), 3, "one try per model call here");
    for t in tries {
        assert_eq!(parent_name(t), "bridle.v1.Router/Complete");
        assert_eq!(t.attr("bridle.attempt").as_deref(), Some("1"));
        assert_eq!(t.attr("bridle.target").as_deref(), Some("mock"));
        assert_eq!(
            t.attr("gen_ai.response.model").as_deref(),
            Some("gpt-4o-mini")
        );
    }

    // Which build of which service, on every span and scope.
    for s in spans {
        let version = s.resource_attr("service.version").unwrap_or_default();
        let (crate_version, revision) = version.split_once('+').unwrap_or_default();
        assert_eq!(crate_version, env!("CARGO_PKG_VERSION"), "{}", s.span.name);
        assert!(!revision.is_empty(), "{version}");
        assert!(
            s.resource_attr("service.instance.id")
                .is_some_and(|i| !i.is_empty())
        );
        assert_eq!(s.scope.1, version, "scope {} of {}", s.scope.0, s.span.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_is_one_trace_across_the_services() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let h = Harness::start_with(Options {
        env_all: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp.endpoint()),
            // Content too, to hold the messages to the conventions' schemas.
            ("BRIDLE_OTEL_CAPTURE_CONTENT".into(), "true".into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            ("OTEL_METRIC_EXPORT_INTERVAL".into(), "500".into()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    h.enqueue_governed_run("old", "done");
    let run_id = h
        .orchestrator()
        .await
        .start_run(pb::StartRunRequest {
            agent: "analyst".into(),
            input: "go".into(),
            end_user: "customer-42".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .id;
    follow_approving(&h, &run_id, Duration::from_secs(120))
        .await
        .unwrap();
    // A call that fails, for the RPC metrics below.
    let missing = h
        .orchestrator()
        .await
        .get_run(pb::GetRunRequest {
            run_id: "run_01jzzzzzzzzzzzzzzzzzzzzzzz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    let trace_id = h.trace_id_of(&run_id).await;
    assert_eq!(trace_id.len(), 32, "the run records its trace id");

    // Spans arrive in batches; wait for the root and the services' server spans.
    let spans: Vec<ReceivedSpan> =
        bridle_testkit::wait_for("the run's spans", Duration::from_secs(30), || async {
            let s: Vec<ReceivedSpan> = otlp
                .spans()
                .into_iter()
                .filter(|s| s.trace_id() == trace_id)
                .collect();
            let has = |n: &str| s.iter().any(|x| x.span.name == n);
            let chats = s
                .iter()
                .filter(|x| x.span.name == "chat gpt-4o-mini" && x.service == "bridle-orchestrator")
                .count();
            // Each process exports in its own batches: wait for all three model calls too,
            // and for what comes last: the decision, the release and its EndRun calls.
            (has("invoke_agent analyst")
                && chats >= 3
                && has("bridle.v1.Router/Complete")
                && has("bridle.v1.Tools/Execute")
                && has("bridle.v1.Approvals/Evaluate")
                && has("decide_approval delete-dataset")
                && has("release_run")
                && has("bridle.v1.Tools/EndRun")
                && has("bridle.v1.Secrets/EndRun"))
            .then_some(s)
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}; run trace {trace_id}; got {:?}",
                otlp.spans()
                    .iter()
                    .map(|s| (&s.service, &s.span.name, s.trace_id(), s.parent_id()))
                    .collect::<Vec<_>>()
            )
        });

    let by_id: HashMap<String, &ReceivedSpan> = spans.iter().map(|s| (s.span_id(), s)).collect();
    let named = |n: &str| {
        spans
            .iter()
            .filter(|s| s.span.name == n)
            .collect::<Vec<_>>()
    };
    let root = named("invoke_agent analyst");
    assert_eq!(root.len(), 1, "one root");
    let root = root[0];
    assert_eq!(root.parent_id(), "", "the root has no parent");
    assert_eq!(root.service, "bridle-orchestrator");
    assert_eq!(
        root.attr("gen_ai.operation.name").as_deref(),
        Some("invoke_agent")
    );
    assert_eq!(root.attr("gen_ai.agent.name").as_deref(), Some("analyst"));
    assert_eq!(root.attr("gen_ai.conversation.id"), Some(run_id.clone()));
    assert_eq!(root.attr("bridle.run.status").as_deref(), Some("succeeded"));
    assert!(root.attr("bridle.cost.usd").is_some());
    // Who caused the run (auth is off here: anonymous), and for which of the app's users.
    assert_eq!(root.attr("user.id").as_deref(), Some("anonymous"));
    assert_eq!(root.attr("enduser.id").as_deref(), Some("customer-42"));
    // The run's model calls carry the end user to the provider (OpenAI's `user`).
    let to_provider = h.mock.requests();
    assert!(
        !to_provider.is_empty() && to_provider.iter().all(|r| r.body["user"] == "customer-42"),
        "{:?}",
        to_provider
            .iter()
            .map(|r| &r.body["user"])
            .collect::<Vec<_>>()
    );

    let chats: Vec<&ReceivedSpan> = named("chat gpt-4o-mini")
        .into_iter()
        .filter(|c| c.service == "bridle-orchestrator")
        .collect();
    assert_eq!(chats.len(), 3);
    for c in &chats {
        assert_eq!(
            c.parent_id(),
            root.span_id(),
            "model calls hang off the run"
        );
        assert_eq!(c.attr("gen_ai.operation.name").as_deref(), Some("chat"));
        assert_eq!(c.attr("gen_ai.provider.name").as_deref(), Some("openai"));
        assert_eq!(
            c.attr("gen_ai.request.model").as_deref(),
            Some("gpt-4o-mini")
        );
        assert!(c.attr("gen_ai.usage.input_tokens").is_some());
        assert!(c.attr("gen_ai.usage.output_tokens").is_some());
        assert_eq!(c.attr("gen_ai.conversation.id"), Some(run_id.clone()));
        assert!(c.attr("gen_ai.input.messages").is_some(), "{:?}", c.span);
        assert!(c.attr("gen_ai.output.messages").is_some(), "{:?}", c.span);
    }
    // The agent's instructions are its system instructions, apart from the messages.
    assert!(
        chats[0]
            .attr("gen_ai.system_instructions")
            .is_some_and(|s| s.contains("You analyse data with Python."))
    );
    let semconv = semconv::Semconv::load();
    for s in &spans {
        semconv.check(s);
        // None of the tracing layer's bookkeeping.
        for kv in &s.span.attributes {
            let k = kv.key.as_str();
            assert!(
                !(["busy_ns", "idle_ns", "target"].contains(&k)
                    || k.starts_with("code.")
                    || k.starts_with("thread.")),
                "span {} carries {k}",
                s.span.name
            );
        }
    }
    // The JSON logs hold no terminal escapes (span fields included).
    let log = h.orchestrators[0].log_tail(400);
    assert!(log.contains("\"span\""), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in the JSON log:\n{log}"
    );
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    for t in named("execute_tool python") {
        assert_eq!(
            t.span.kind,
            SpanKind::Internal as i32,
            "execute_tool is INTERNAL"
        );
        assert_eq!(t.attr("gen_ai.tool.type").as_deref(), Some("extension"));
        assert_eq!(t.attr("bridle.tool.kind").as_deref(), Some("container"));
    }
    for (tool, call) in [("python", "call_py"), ("delete-dataset", "call_del")] {
        let t = named(&format!("execute_tool {tool}"));
        assert_eq!(t.len(), 1, "{tool}");
        assert_eq!(t[0].parent_id(), root.span_id());
        assert_eq!(t[0].attr("gen_ai.tool.name").as_deref(), Some(tool));
        assert_eq!(t[0].attr("gen_ai.tool.call.id").as_deref(), Some(call));
        assert!(
            t[0].attr("bridle.sandbox.id")
                .is_some_and(|s| !s.is_empty())
        );
        let p = named(&format!("check_policy {tool}"));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].parent_id(), root.span_id());
    }
    assert_eq!(
        named("check_policy python")[0]
            .attr("bridle.policy.decision")
            .as_deref(),
        Some("allow")
    );
    assert_eq!(
        named("check_policy delete-dataset")[0]
            .attr("bridle.policy.decision")
            .as_deref(),
        Some("require_approval")
    );
    let wait = named("await_approval delete-dataset");
    assert_eq!(wait.len(), 1);
    assert_eq!(wait[0].parent_id(), root.span_id());
    assert_eq!(
        wait[0].attr("bridle.approval.outcome").as_deref(),
        Some("approved")
    );

    // Each service's server span is a child of the orchestrator span that called it.
    let parent_name = |s: &ReceivedSpan| {
        by_id
            .get(&s.parent_id())
            .map(|p| p.span.name.clone())
            .unwrap_or_default()
    };
    for s in named("bridle.v1.Router/Complete") {
        assert_eq!(s.service, "bridle-router");
        assert_eq!(parent_name(s), "chat gpt-4o-mini");
        // The RPC conventions' attributes, the status recorded when the call ended.
        assert_eq!(s.attr("rpc.system.name").as_deref(), Some("grpc"));
        assert_eq!(
            s.attr("rpc.method").as_deref(),
            Some("bridle.v1.Router/Complete")
        );
        assert_eq!(s.attr("rpc.response.status_code").as_deref(), Some("OK"));
    }
    for s in named("bridle.v1.Tools/Execute") {
        assert_eq!(s.service, "bridle-tools");
        assert!(
            parent_name(s).starts_with("execute_tool "),
            "{}",
            parent_name(s)
        );
    }
    for s in named("bridle.v1.Approvals/Evaluate") {
        assert_eq!(s.service, "bridle-approvals");
        assert!(
            parent_name(s).starts_with("check_policy "),
            "{}",
            parent_name(s)
        );
    }
    whole_story(&otlp, &spans, &trace_id);
    // The log line of the decision carries the run's trace, not the Decide call's.
    let approvals = h
        .services
        .iter()
        .find(|s| s.name == "bridle-approvals")
        .unwrap();
    let log = std::fs::read_to_string(&approvals.log).unwrap();
    let decided: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "decided")
        .collect();
    assert_eq!(decided.len(), 1, "{log}");
    assert_eq!(decided[0]["trace_id"], trace_id.as_str(), "{}", decided[0]);
    let parked = h.orchestrators[0].log_tail(400);
    let parked: Vec<serde_json::Value> = parked
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "parked for approval" || v["message"] == "run finished")
        .collect();
    assert_eq!(parked.len(), 2, "{parked:?}");
    for v in &parked {
        assert_eq!(v["trace_id"], trace_id.as_str(), "{v}");
    }

    // Structured logs carry the trace: the tool service's log of each call names the run's trace.
    let tools = h
        .services
        .iter()
        .find(|s| s.name == "bridle-tools")
        .unwrap();
    let log = std::fs::read_to_string(&tools.log).unwrap();
    let traced: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "tool call finished")
        .collect();
    assert_eq!(traced.len(), 2, "{log}");
    for v in &traced {
        assert_eq!(v["trace_id"], trace_id.as_str(), "{v}");
        assert_eq!(v["span_id"].as_str().map(str::len), Some(16), "{v}");
    }

    // Metric points, exported every 500ms.
    let want = [
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "bridle.cost",
        "bridle.runs.finished",
        "bridle.approval.wait",
        "bridle.queue.claim_lag",
        "bridle.queue.depth",
        "bridle.sandbox.pool.size",
        "bridle.breaker.state",
        "rpc.server.call.duration",
        "rpc.client.call.duration",
    ];
    let metrics = bridle_testkit::wait_for("the metrics", Duration::from_secs(30), || async {
        let m = otlp.metrics();
        // Each process exports on its own schedule: wait for the tools service's calls too.
        let tools_calls = m.iter().any(|x| {
            x.service == "bridle-tools"
                && format!("{:?}", x.metric.data).contains("bridle.v1.Tools/Execute")
        });
        (tools_calls && want.iter().all(|w| m.iter().any(|x| x.metric.name == *w))).then_some(m)
    })
    .await
    .unwrap_or_else(|e| {
        let mut names: Vec<String> = otlp
            .metrics()
            .iter()
            .map(|m| format!("{}:{}", m.service, m.metric.name))
            .collect();
        names.sort();
        names.dedup();
        panic!("{e}; got {names:?}")
    });
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let points = |name: &str| -> Vec<Vec<opentelemetry_proto::tonic::common::v1::KeyValue>> {
        metrics
            .iter()
            .filter(|m| m.metric.name == name)
            .flat_map(|m| match &m.metric.data {
                Some(Data::Histogram(h)) => h
                    .data_points
                    .iter()
                    .map(|p| p.attributes.clone())
                    .collect::<Vec<_>>(),
                Some(Data::Sum(s)) => s.data_points.iter().map(|p| p.attributes.clone()).collect(),
                Some(Data::Gauge(g)) => {
                    g.data_points.iter().map(|p| p.attributes.clone()).collect()
                }
                _ => vec![],
            })
            .collect()
    };
    let attr = bridle_testkit::otlp::attr;
    let tokens = points("gen_ai.client.token.usage");
    assert!(
        tokens
            .iter()
            .any(|a| attr(a, "gen_ai.token.type").as_deref() == Some("input")
                && attr(a, "gen_ai.request.model").as_deref() == Some("gpt-4o-mini")
                && attr(a, "gen_ai.provider.name").as_deref() == Some("openai"))
    );
    assert!(
        tokens
            .iter()
            .any(|a| attr(a, "gen_ai.token.type").as_deref() == Some("output"))
    );
    let runs = points("bridle.runs.finished");
    assert!(runs.iter().any(
        |a| attr(a, "bridle.run.status").as_deref() == Some("succeeded")
            && attr(a, "gen_ai.agent.name").as_deref() == Some("analyst")
    ));
    // Every call served, by method and status (the RPC conventions).
    let rpc = points("rpc.server.call.duration");
    let served = |method: &str, status: &str| {
        rpc.iter().any(|a| {
            attr(a, "rpc.system.name").as_deref() == Some("grpc")
                && attr(a, "rpc.method").as_deref() == Some(method)
                && attr(a, "rpc.response.status_code").as_deref() == Some(status)
        })
    };
    assert!(served("bridle.v1.Orchestrator/StartRun", "OK"), "{rpc:?}");
    assert!(
        served("bridle.v1.Orchestrator/GetRun", "NOT_FOUND"),
        "{rpc:?}"
    );
    assert!(served("bridle.v1.Router/Complete", "OK"), "{rpc:?}");
    assert!(served("bridle.v1.Tools/Execute", "OK"), "{rpc:?}");
    // And the same calls as their callers saw them.
    let made = points("rpc.client.call.duration");
    assert!(
        made.iter().any(|a| {
            attr(a, "rpc.method").as_deref() == Some("bridle.v1.Router/Complete")
                && attr(a, "rpc.response.status_code").as_deref() == Some("OK")
        }),
        "{made:?}"
    );
    // NOT_FOUND is the caller's mistake, not a server error.
    assert!(
        !rpc.iter()
            .any(|a| attr(a, "error.type").as_deref() == Some("NOT_FOUND"))
    );
    let waits = points("bridle.approval.wait");
    assert!(
        waits
            .iter()
            .any(|a| attr(a, "bridle.approval.outcome").as_deref() == Some("approved"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_that_is_down_never_blocks_a_run() {
    let refusing = bridle_testkit::ports::refusing_port().unwrap();
    let port = refusing.port;
    let h = Harness::start_with(Options {
        env_all: vec![(
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://127.0.0.1:{port}"),
        )],
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    h.mock.enqueue(Reply::tool_calls(&[(
        "c",
        "python",
        r#"{"code": "print(1)"}"#,
    )]));
    h.mock.enqueue(Reply::text("ok"));
    let run_id = h.start_run("analyst", "go").await;
    let events = follow(&h, &run_id, Duration::from_secs(60), |_| async {})
        .await
        .unwrap();
    let Some(Kind::RunFinished(f)) = &events.last().unwrap().kind else {
        panic!()
    };
    assert_eq!(f.status, pb::RunStatus::Succeeded as i32);
}

/// A one-call run started with a caller's W3C `traceparent` (with `caller_trace = mode` when
/// given): (caller's trace id, caller's span id, the run's root span as exported, Run.trace_id).
async fn run_under_a_callers_span(mode: Option<&str>) -> (String, String, ReceivedSpan, String) {
    let otlp = OtlpReceiver::start().await.unwrap();
    let mut env_all = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ];
    if let Some(m) = mode {
        env_all.push(("BRIDLE_ORCHESTRATOR_CALLER_TRACE".into(), m.into()));
        // The standard resource settings, on this harness's processes.
        env_all.push(("OTEL_SERVICE_NAME".into(), "bridle-under-test".into()));
        env_all.push((
            "OTEL_RESOURCE_ATTRIBUTES".into(),
            "deployment.environment.name=ci,service.namespace=bridle".into(),
        ));
    }
    let h = Harness::start_with(Options {
        env_all,
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    h.mock.enqueue(Reply::text("done"));
    let caller_trace = format!("{:032x}", rand_u128());
    let caller_span = format!("{:016x}", rand_u128() as u64 | 1);
    let mut req = tonic::Request::new(pb::StartRunRequest {
        agent: "analyst".into(),
        input: "go".into(),
        ..Default::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{caller_trace}-{caller_span}-01")
            .parse()
            .unwrap(),
    );
    let run_id = h
        .orchestrator()
        .await
        .start_run(req)
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .id;
    follow(&h, &run_id, Duration::from_secs(60), |_| async {})
        .await
        .unwrap();
    let recorded = h.trace_id_of(&run_id).await;
    let root = bridle_testkit::wait_for("the run's root span", Duration::from_secs(30), || {
        let spans = otlp.spans();
        let recorded = recorded.clone();
        async move {
            spans
                .into_iter()
                .find(|s| s.span.name == "invoke_agent analyst" && s.trace_id() == recorded)
        }
    })
    .await
    .unwrap();
    (caller_trace, caller_span, root, recorded)
}

/// 128 random bits (a ULID's 80 random bits and its time are enough to be unique here).
fn rand_u128() -> u128 {
    ulid::Ulid::new().0.rotate_left(48)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_started_under_a_callers_span_is_its_child_or_links_to_it_and_resources_follow_otel_env()
 {
    // The default: the run's root is a child of the caller's span, in the caller's trace, and
    // Run.trace_id says so.
    let (trace, span, root, recorded) = run_under_a_callers_span(None).await;
    // Every process says what it is: name, version, and an instance id of its own.
    assert_eq!(root.service, "bridle-orchestrator");
    // The crate's version and the git revision it was built from.
    let version = root.resource_attr("service.version").unwrap_or_default();
    assert!(
        version.starts_with(concat!(env!("CARGO_PKG_VERSION"), "+")) && !version.ends_with('+'),
        "{version}"
    );
    assert_eq!(
        root.resource_attr("service.instance.id").map(|s| s.len()),
        Some(26)
    );
    assert_eq!(recorded, trace, "Run.trace_id is the caller's trace");
    assert_eq!(root.trace_id(), trace);
    assert_eq!(
        root.parent_id(),
        span,
        "the root is a child of the caller's span"
    );
    assert!(root.span.links.is_empty());

    // caller_trace = link: a trace of the run's own, its root linked to the caller's span.
    let (trace, span, root, recorded) = run_under_a_callers_span(Some("link")).await;
    assert_eq!(root.service, "bridle-under-test", "OTEL_SERVICE_NAME");
    assert_eq!(
        root.resource_attr("deployment.environment.name").as_deref(),
        Some("ci"),
        "OTEL_RESOURCE_ATTRIBUTES"
    );
    assert_ne!(recorded, trace);
    assert_eq!(root.parent_id(), "", "a root of its own");
    // Linked to the caller's span, and to the StartRun call (in the caller's trace) that
    // made it.
    let links = root.links();
    assert_eq!(links.len(), 2, "{links:?}");
    assert_eq!(links[0], (trace.clone(), span));
    assert_eq!(links[1].0, trace);
}

/// The services' own `/metrics` (`metrics_listen`): each serves its instruments as Prometheus
/// text, and every metric a dashboard panel under deploy/grafana or an alert of the chart's
/// PrometheusRule queries is served by one of them after a run that used a tool, an approval,
/// a warm sandbox and a provider error.
#[tokio::test(flavor = "multi_thread")]
async fn the_services_serve_every_metric_the_dashboards_and_alerts_query() {
    let services = ["orchestrator", "router", "tools", "approvals", "secrets"];
    let mut env_all = Vec::new();
    let mut ports = Vec::new();
    for s in services {
        let port = bridle_testkit::ports::free_port().unwrap();
        env_all.push((
            format!("BRIDLE_{}_METRICS_LISTEN", s.to_uppercase()),
            format!("127.0.0.1:{port}"),
        ));
        ports.push((s, port));
    }
    let h = Harness::start_with(Options {
        env_all,
        ..Default::default()
    })
    .await
    .unwrap();
    // The python tool keeps a warm sandbox, for the pool gauges; delete-dataset runs in
    // another image, which no pool holds: a cold start.
    let manifests = h
        .manifests_yaml()
        .replacen(
            "    stdin: false\n",
            "    stdin: false\n    pool: {warm: 1}\n",
            1,
        )
        .replace(
            r#"image: bridle-sandbox:python
    command: ["python3", "-c", "import sys; print('deleted', sys.argv[1])", "{{dataset}}"]"#,
            r#"image: bridle-sandbox:bash
    command: ["echo", "deleted", "{{dataset}}"]"#,
        );
    assert!(manifests.contains("bridle-sandbox:bash"), "{manifests}");
    h.apply("m.yaml", &manifests).await.unwrap();
    // A provider error first (retried by the router), then a tool call, an approval, an answer.
    h.mock
        .enqueue(Reply::error(500, "the mock provider fails once"));
    h.enqueue_governed_run("old", "done");
    let run_id = h.start_run("analyst", "go").await;
    follow_approving(&h, &run_id, Duration::from_secs(120))
        .await
        .unwrap();

    // The queue and pending-approval gauges are sampled every few seconds: wait for them.
    let dir = tempfile::tempdir().unwrap();
    let mut scrapes = Vec::new();
    for (s, port) in &ports {
        let url = format!("http://127.0.0.1:{port}/metrics");
        let wanted: &[&str] = match *s {
            "orchestrator" => &[
                "bridle_queue_oldest_age_seconds",
                "bridle_runs_finished_total",
            ],
            "approvals" => &["bridle_approvals_pending"],
            "tools" => &["bridle_sandbox_pool_target"],
            "router" => &["bridle_provider_errors_total"],
            _ => &["bridle_dependency_up"],
        };
        let text = bridle_testkit::wait_for(
            &format!("{s}'s scrape to serve {wanted:?}"),
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    let r = bridle_core::http_client::new()
                        .get(&url)
                        .send()
                        .await
                        .ok()?;
                    let ctype = r
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
                    let t = r.text().await.ok()?;
                    wanted.iter().all(|w| t.contains(w)).then_some(t)
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        // Every service says who it is and whether Redis answers.
        assert!(
            text.contains(&format!("service_name=\"bridle-{s}\"")),
            "{s}: no target_info naming it:\n{text}"
        );
        assert!(
            text.contains("bridle_dependency_up{bridle_dependency=\"redis\"} 1"),
            "{s}: Redis is up:\n{text}"
        );
        let f = dir.path().join(format!("{s}.prom"));
        std::fs::write(&f, &text).unwrap();
        scrapes.push(f);
    }
    let secrets = std::fs::read_to_string(&scrapes[4]).unwrap();
    assert!(
        secrets.contains("bridle_dependency_up{bridle_dependency=\"vault\"} 1"),
        "{secrets}"
    );

    // Every name the dashboards and the alert rules use is served by some service.
    let root = bridle_testkit::paths::workspace_root();
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("deploy/grafana"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files.extend(alert_rules(dir.path()));
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(root.join("deploy/grafana/metric_names.py"));
    for s in &scrapes {
        cmd.arg("--check-scrape").arg(s);
    }
    cmd.args(&files);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "names queried but served by no service:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The chart's alert rules, rendered (helm/tests/alerts.py, in the tools venv that
/// scripts/install-deps.sh makes) to a Prometheus rules file in `dir`.
fn alert_rules(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let python = bridle_testkit::paths::tools_venv_python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-deps.sh (it installs the Helm engine that renders \
         the chart's alert rules)",
        python.display()
    );
    let root = bridle_testkit::paths::workspace_root();
    let file = dir.join("rules.yaml");
    let out = std::process::Command::new(&python)
        .arg(root.join("helm/tests/alerts.py"))
        .arg("--write-rules")
        .arg(&file)
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rendering the alert rules: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("alert: "), "no alert rendered:\n{text}");
    vec![file]
}

/// The five services with `env_all`, and one run of the standard agent that answers at once,
/// followed to its end: (the harness, the run's id).
async fn one_answer_run(env_all: Vec<(String, String)>) -> (Harness, String) {
    let h = Harness::start_with(Options {
        env_all,
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    h.mock.enqueue(Reply::text("done"));
    let run_id = h.start_run("analyst", "go").await;
    follow(&h, &run_id, Duration::from_secs(60), |_| async {})
        .await
        .unwrap();
    (h, run_id)
}

/// The standard exporter settings: OTLP over HTTP with protobuf bodies, the headers of
/// `OTEL_EXPORTER_OTLP_HEADERS` on every export, and logs exported with the trace and span
/// they were written in.
#[tokio::test(flavor = "multi_thread")]
async fn otlp_over_http_carries_traces_metrics_and_logs_with_the_configured_headers() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let (_h, run_id) = one_answer_run(vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp.http_endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into()),
        (
            "OTEL_EXPORTER_OTLP_HEADERS".into(),
            "x-collector-tenant=team%20a,authorization=Bearer%20t0ken".into(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ("OTEL_BLRP_SCHEDULE_DELAY".into(), "100".into()),
        ("OTEL_METRIC_EXPORT_INTERVAL".into(), "500".into()),
    ])
    .await;

    // The orchestrator's "run started" log, written while serving StartRun, carries the trace
    // and span of that call's server span.
    let (log, span) = bridle_testkit::wait_for(
        "the run-started log and the StartRun span",
        Duration::from_secs(30),
        || async {
            let log = otlp.logs().into_iter().find(|l| {
                l.body() == "run started" && l.attr("run").as_deref() == Some(run_id.as_str())
            })?;
            let span = otlp.spans().into_iter().find(|s| {
                s.span.name == "bridle.v1.Orchestrator/StartRun" && s.trace_id() == log.trace_id()
            })?;
            let metrics = otlp
                .metrics()
                .iter()
                .any(|m| m.metric.name == "rpc.server.call.duration");
            metrics.then_some((log, span))
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; logs {:?}",
            otlp.logs()
                .iter()
                .map(|l| (l.service.clone(), l.body(), l.trace_id()))
                .take(20)
                .collect::<Vec<_>>()
        )
    });
    assert_eq!(log.service, "bridle-orchestrator");
    assert_eq!(log.span_id(), span.span_id(), "the log names its span");
    assert_eq!(log.record.severity_text, "INFO");

    let requests = otlp.requests();
    for signal in ["traces", "metrics", "logs"] {
        let of: Vec<_> = requests.iter().filter(|r| r.signal == signal).collect();
        assert!(!of.is_empty(), "no {signal} exported");
        for r in of {
            assert_eq!(r.transport, "http/protobuf", "{r:?}");
            let has = |k: &str, v: &str| r.headers.iter().any(|(hk, hv)| hk == k && hv == v);
            assert!(
                has("x-collector-tenant", "team a") && has("authorization", "Bearer t0ken"),
                "{signal} export without the configured headers: {:?}",
                r.headers
            );
        }
    }
}

/// `OTEL_TRACES_SAMPLER`: sampled out, a run exports no span but keeps its trace id; the
/// metrics still go.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_the_sampler_drops_exports_no_span_and_keeps_its_trace_id() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let (h, run_id) = one_answer_run(vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp.endpoint()),
        (
            "OTEL_TRACES_SAMPLER".into(),
            "parentbased_traceidratio".into(),
        ),
        ("OTEL_TRACES_SAMPLER_ARG".into(), "0".into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ("OTEL_METRIC_EXPORT_INTERVAL".into(), "500".into()),
    ])
    .await;
    let trace_id = h.trace_id_of(&run_id).await;
    assert_eq!(trace_id.len(), 32, "the run records its trace id");
    // Metrics arrive (export works), and by then any span would have too.
    bridle_testkit::wait_for(
        "the model-call metrics",
        Duration::from_secs(30),
        || async {
            otlp.metrics()
                .iter()
                .any(|m| m.metric.name == "gen_ai.client.operation.duration")
                .then_some(())
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans = otlp.spans();
    assert!(
        spans.is_empty(),
        "a ratio of 0 samples nothing: {:?}",
        spans.iter().map(|s| &s.span.name).collect::<Vec<_>>()
    );
}

/// A call through the router's OpenAI-compatible gateway is traced and metered like an
/// agent's model call: a `chat {model}` CLIENT span under the caller's `traceparent`, with the
/// response's attributes and (content capture on) its messages, for a plain and a streamed call
/// alike, and the GenAI metrics with `bridle.purpose` = `gateway`.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_calls_are_traced_under_the_callers_span_and_metered() {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let otlp = OtlpReceiver::start().await.unwrap();
    let port = bridle_testkit::ports::free_port().unwrap();
    let h = Harness::start_with(Options {
        env_all: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp.endpoint()),
            (
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT".into(),
                "true".into(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            ("OTEL_METRIC_EXPORT_INTERVAL".into(), "500".into()),
            (
                "BRIDLE_ROUTER_HTTP_LISTEN".into(),
                format!("127.0.0.1:{port}"),
            ),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("m.yaml", &h.manifests_yaml()).await.unwrap();
    h.mock.enqueue(Reply::text("plain answer"));
    h.mock.enqueue(Reply::text("streamed answer"));
    let trace = format!("{:032x}", rand_u128());
    let caller = "00f067aa0ba902b7";
    let http = bridle_core::http_client::new();
    for stream in [false, true] {
        let r = http
            .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
            .header("traceparent", format!("00-{trace}-{caller}-01"))
            .json(&serde_json::json!({
                "model": "main",
                "stream": stream,
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                ],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.text().await.unwrap();
        assert!(
            body.contains(if stream { "[DONE]" } else { "plain answer" }),
            "{body}"
        );
    }
    let chats = bridle_testkit::wait_for(
        "the gateway's two chat spans",
        Duration::from_secs(30),
        || async {
            let s: Vec<ReceivedSpan> = otlp
                .spans()
                .into_iter()
                .filter(|s| s.span.name == "chat main" && s.trace_id() == trace)
                .collect();
            (s.len() == 2).then_some(s)
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}",
            otlp.spans()
                .iter()
                .map(|s| (&s.service, &s.span.name, s.trace_id()))
                .collect::<Vec<_>>()
        )
    });
    let semconv = semconv::Semconv::load();
    for c in &chats {
        semconv.check(c);
        assert_eq!(c.service, "bridle-router");
        assert_eq!(c.parent_id(), caller, "under the caller's span");
        assert_eq!(c.span.kind, SpanKind::Client as i32);
        assert_eq!(c.attr("bridle.purpose").as_deref(), Some("gateway"));
        assert_eq!(c.attr("gen_ai.operation.name").as_deref(), Some("chat"));
        assert_eq!(c.attr("gen_ai.request.model").as_deref(), Some("main"));
        assert_eq!(c.attr("gen_ai.provider.name").as_deref(), Some("openai"));
        assert_eq!(
            c.attr("gen_ai.response.model").as_deref(),
            Some("gpt-4o-mini")
        );
        assert!(
            c.attr("gen_ai.usage.input_tokens").is_some(),
            "{:?}",
            c.span
        );
        assert!(
            c.attr("gen_ai.system_instructions")
                .is_some_and(|s| s.contains("be brief"))
        );
        let out = c.attr("gen_ai.output.messages").unwrap();
        assert!(
            out.contains("answer") && out.contains("\"finish_reason\":\"stop\""),
            "{out}"
        );
    }
    bridle_testkit::wait_for("the gateway's metrics", Duration::from_secs(30), || async {
        otlp.metrics()
            .iter()
            .filter(|m| m.metric.name == "gen_ai.client.token.usage")
            .any(|m| {
                use opentelemetry_proto::tonic::metrics::v1::metric::Data;
                match &m.metric.data {
                    Some(Data::Histogram(h)) => h.data_points.iter().any(|p| {
                        bridle_testkit::otlp::attr(&p.attributes, "bridle.purpose").as_deref()
                            == Some("gateway")
                    }),
                    _ => false,
                }
            })
            .then_some(())
    })
    .await
    .unwrap();
}
