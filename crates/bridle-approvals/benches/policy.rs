//! The policy hot path: every tool call is evaluated before it runs.
//!
//! `cargo bench -p bridle-approvals --bench policy` prints, per case, the mean time of one
//! decision: the built-in rules, Cedar with a small and a large policy set, and Evaluate over
//! gRPC (policy + the audit/approval Lua script on a real redis-server) with each engine.
//! A bench binary, not criterion: figures to rerun and compare, never asserted.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bridle_approvals::cedar::CedarEngine;
use bridle_approvals::{BuiltinRules, PolicyEngine, PolicyInput, decide};
use bridle_proto::{Cost, RiskClass, RunFacts, ToolSpec};

const GUARD: &str = r#"
@id("reads")
permit(principal, action == Bridle::Action::"call", resource) when { resource.risk == "read_only" };
@id("mail")
@require_approval("mail leaves the company")
permit(principal == Bridle::Agent::"analyst", action, resource == Bridle::Tool::"send_mail");
@id("no-etc")
forbid(principal, action, resource)
when { context.arguments has path && context.arguments.path like "/etc/*" };
@id("budget")
forbid(principal, action, resource) when { context.costKnown && context.costNanoUsd > 1000000000 };
"#;

fn many(n: usize) -> String {
    let mut s = String::from(GUARD);
    for i in 0..n {
        s.push_str(&format!(
            "@id(\"p{i}\")\nforbid(principal == Bridle::Agent::\"agent-{i}\", action, resource) when {{ context.arguments has x{i} && context.arguments.x{i} == \"v\" }};\n"
        ));
    }
    s
}

fn time(name: &str, iters: u32, mut f: impl FnMut()) {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let per = start.elapsed() / iters;
    println!(
        "{name:<48} {:>10.2} µs/decision  ({iters} runs)",
        per.as_nanos() as f64 / 1000.0
    );
}

fn engines() {
    let tool = ToolSpec {
        name: "read_file".into(),
        risk: RiskClass::ReadOnly as i32,
        tags: vec!["fs".into()],
        kind: bridle_proto::ToolKind::Container.into(),
        ..Default::default()
    };
    let facts = RunFacts {
        step: 3,
        tokens_so_far: 12_000,
        cost_so_far: Some(Cost {
            known: true,
            nano_usd: 40_000_000,
        }),
    };
    let granted = vec!["read_file".to_string(), "send_mail".to_string()];
    let small_args = r#"{"path":"/home/user/report.csv"}"#.to_string();
    let big_args = serde_json::json!({
        "path": "/home/user/report.csv",
        "rows": (0..200).map(|i| serde_json::json!({"id": i, "name": format!("row {i}"), "tags": ["a", "b"]})).collect::<Vec<_>>(),
    })
    .to_string();
    let input = |args: &'static str| PolicyInput {
        tenant: "acme",
        agent: "analyst",
        run_id: "run_01",
        step: 3,
        call_id: "call_1",
        tool: &tool,
        arguments_json: args,
        arguments_sha256: "",
        facts: Some(&facts),
        granted_tools: &granted,
        approval_required_tools: &[],
    };
    let small: &'static str = Box::leak(small_args.into_boxed_str());
    let big: &'static str = Box::leak(big_args.into_boxed_str());
    let guard = CedarEngine::from_manifests(&[("guard".into(), GUARD.into())]).unwrap();
    let large = CedarEngine::from_manifests(&[("guard".into(), many(200))]).unwrap();
    let risk_only = CedarEngine::from_manifests(&[(
        "guard".into(),
        "permit(principal, action, resource) when { resource.risk == \"read_only\" };\n\
         @require_approval\npermit(principal, action, resource) when { resource.risk == \"destructive\" };"
            .into(),
    )])
    .unwrap();
    let engines: [(&str, &dyn PolicyEngine); 4] = [
        ("built-in rules", &BuiltinRules),
        ("cedar, 2 policies (no argument reads)", &risk_only),
        ("cedar, 4 policies", &guard),
        ("cedar, 204 policies", &large),
    ];
    for (name, e) in engines {
        time(&format!("{name}, small arguments"), 20_000, || {
            black_box(decide(e, &input(small)).unwrap());
        });
        time(&format!("{name}, 200-row arguments"), 2_000, || {
            black_box(decide(e, &input(big)).unwrap());
        });
    }
    time("compile 204 policies (once per policy change)", 20, || {
        black_box(CedarEngine::from_manifests(&[("guard".into(), many(200))]).unwrap());
    });
}

async fn rpc() {
    use bridle_proto::approvals_client::ApprovalsClient;
    use bridle_proto::manifests_client::ManifestsClient;
    use bridle_proto::{ApplyRequest, EvaluateRequest, ManifestDocument, Scope};

    let redis = bridle_testkit::RedisServer::start().await.unwrap();
    let shutdown = bridle_core::Shutdown::new();
    let opts = bridle_approvals::Options {
        server: bridle_core::config::ServerOptions::unauthenticated(0),
        redis_url: redis.url(),
        key_prefix: bridle_testkit::unique("bench"),
        ..Default::default()
    };
    let addr = format!(
        "http://{}",
        bridle_approvals::start(opts, shutdown.clone())
            .await
            .unwrap()
    );
    let mut c = ApprovalsClient::connect(addr.clone()).await.unwrap();
    let body: String = GUARD.lines().map(|l| format!("    {l}\n")).collect();
    ManifestsClient::connect(addr)
        .await
        .unwrap()
        .apply(ApplyRequest {
            actor: None,
            documents: vec![ManifestDocument {
                source: "bench.yaml".into(),
                first_line: 1,
                yaml: format!("apiVersion: bridle.dev/v1\nkind: Policy\nmetadata:\n  name: guard\n  tenant: acme\nspec:\n  cedar: |\n{body}"),
            }],
            dry_run: false,
            tenant: "acme".into(),
        })
        .await
        .unwrap();
    for tenant in ["globex", "acme"] {
        let engine = if tenant == "acme" {
            "cedar"
        } else {
            "built-in rules"
        };
        let n = 2_000u32;
        let req = |i: u32| EvaluateRequest {
            scope: Some(Scope {
                tenant: tenant.into(),
                agent: "analyst".into(),
                run_id: "run_01jbench000000000000000000".into(),
                ..Default::default()
            }),
            step: 1,
            call_id: format!("c{i}"),
            tool: Some(ToolSpec {
                name: "read_file".into(),
                risk: RiskClass::ReadOnly as i32,
                ..Default::default()
            }),
            arguments_json: r#"{"path":"/home/user/report.csv"}"#.into(),
            granted_tools: vec!["read_file".into()],
            ..Default::default()
        };
        for i in 0..100 {
            c.evaluate(req(i)).await.unwrap();
        }
        let start = Instant::now();
        for i in 0..n {
            black_box(c.evaluate(req(i)).await.unwrap());
        }
        let per: Duration = start.elapsed() / n;
        println!(
            "{:<48} {:>10.2} µs/call      ({n} sequential calls)",
            format!("Evaluate over gRPC + Redis, {engine}"),
            per.as_nanos() as f64 / 1000.0
        );
    }
    shutdown.drain(Duration::from_secs(10)).await;
}

fn main() {
    engines();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(rpc());
}
