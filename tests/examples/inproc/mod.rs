//! The harness in this process for the benchmarks (`load`, `soak`): one real Redis, the
//! approvals, tools, router and orchestrator services over loopback gRPC, an HTTP tool that
//! answers at once, and an agent whose model is the scripted provider (one tool call, then a
//! final answer).

#![allow(dead_code)]

use bridle_core::Shutdown;
use bridle_core::config;
use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use futures::StreamExt as _;
use serde_json::json;

pub struct Bench {
    pub redis: bridle_testkit::RedisServer,
    pub prefix: String,
    pub client: pb::orchestrator_client::OrchestratorClient<tonic::transport::Channel>,
    pub shutdown: Shutdown,
}

fn orchestrator_options(
    mut base: serde_json::Value,
    extra: serde_json::Value,
) -> serde_json::Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    base
}

/// Starts everything; `orchestrator` adds orchestrator options (workers, retention, ...).
pub async fn start(orchestrator: serde_json::Value) -> anyhow::Result<Bench> {
    let redis = bridle_testkit::RedisServer::start().await?;
    let prefix = bridle_testkit::unique("bench");

    // The trivial tool: an HTTP endpoint that answers at once.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    let app = axum::Router::new().route(
        "/echo",
        axum::routing::post(|body: String| async move { body }),
    );
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { axum::serve(echo, app).await });

    let shutdown = Shutdown::new();
    // Every service in this process, on loopback: no caller but the bench (auth off, as the
    // services refuse to start with the default `keys` and no service identity).
    let common = json!({ "redis_url": redis.url(), "key_prefix": prefix, "listen": "127.0.0.1:0", "secrets_url": "http://127.0.0.1:9", "auth": "off" });
    let with = |extra: serde_json::Value| {
        let mut v = common.clone();
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    let o: bridle_approvals::Options = config::load(None, &common)?;
    let approvals = bridle_approvals::start(o, shutdown.clone()).await?;
    let o: bridle_tools::Options =
        config::load(None, &with(json!({ "egress_allow_private": true })))?;
    let tools = bridle_tools::start(o, shutdown.clone()).await?;
    let o: bridle_router::Options = config::load(None, &common)?;
    let router = bridle_router::start(o, shutdown.clone()).await?;
    let o: bridle_orchestrator::Options = config::load(
        None,
        &with(orchestrator_options(
            json!({
                "router_url": format!("http://{router}"),
                "tools_url": format!("http://{tools}"),
                "approvals_url": format!("http://{approvals}"),
            }),
            orchestrator,
        )),
    )?;
    let orch = bridle_orchestrator::start(o, shutdown.clone()).await?;

    let manifests = format!(
        r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: echo
spec:
  description: Echoes its arguments.
  risk: read_only
  parameters:
    type: object
    properties:
      n: {{type: integer}}
  http:
    method: POST
    url: http://{echo_addr}/echo
    egress: ["{ip}"]
---
apiVersion: bridle.dev/v1
kind: ModelRoute
metadata:
  name: bench
spec:
  targets:
    - provider: scripted
      script:
        - toolCalls:
            - name: echo
              arguments: {{n: 1}}
        - text: "done: {{{{last_tool_output}}}}"
---
apiVersion: bridle.dev/v1
kind: Agent
metadata:
  name: bench
spec:
  route: bench
  tools: [echo]
"#,
        ip = echo_addr.ip()
    );
    let docs = bridle_core::manifest::split_documents("bench.yaml", &manifests)
        .into_iter()
        .map(|d| pb::ManifestDocument {
            source: d.source,
            yaml: d.yaml,
            first_line: d.first_line,
        })
        .collect();
    let url = format!("http://{orch}");
    pb::manifests_client::ManifestsClient::connect(url.clone())
        .await?
        .apply(pb::ApplyRequest {
            actor: None,
            documents: docs,
            dry_run: false,
            tenant: String::new(),
        })
        .await?;
    let client = pb::orchestrator_client::OrchestratorClient::connect(url.clone()).await?;
    Ok(Bench {
        redis,
        prefix,
        client,
        shutdown,
    })
}

/// Starts one run of the bench agent and follows it to its end.
pub async fn run_one(
    mut c: pb::orchestrator_client::OrchestratorClient<tonic::transport::Channel>,
) -> Result<Vec<pb::RunEvent>, String> {
    let run = c
        .start_run(pb::StartRunRequest {
            agent: "bench".into(),
            input: "go".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .run
        .ok_or("no run")?;
    let mut s = c
        .watch_run(pb::WatchRunRequest {
            run_id: run.id,
            from_offset: 0,
            follow: true,
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    // Read to the stream's end (the server ends it after RunFinished), not dropped at
    // RunFinished: a dropped stream is reset by the client, and when thousands are, the
    // server's trailers arrive for streams the client no longer remembers; each such is
    // counted as a locally detected error, and at 1,024 the client's HTTP/2 layer closes the
    // shared connection with GOAWAY `too_many_internal_resets`, failing every watch on it.
    let mut events = Vec::new();
    while let Some(ev) = s.next().await {
        events.push(ev.map_err(|e| e.to_string())?);
    }
    if !events
        .iter()
        .any(|e| matches!(e.kind, Some(Kind::RunFinished(_))))
    {
        return Err("the watch ended before the run did".into());
    }
    Ok(events)
}
