//! Bridle as a governed MCP server: an outside client written with the official `mcp` Python
//! SDK lists an agent's tools and calls them over the orchestrator's MCP endpoint, against the
//! five service binaries, real Redis, OpenBao and Docker. A read-only call runs at once; a
//! destructive one waits for a person's approval (the client is told so while it waits, then
//! gets a pending result and asks again with `bridle_result`); a denied one comes back as an
//! error with the person's reason; and every call is a run, listed with the tool it called.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use bridle_proto as pb;
use serde_json::{Value, json};
use support::{Harness, Options};

/// The venv with the official `mcp` SDK (made once, under a lock, by the tools tests' script).
async fn venv() -> PathBuf {
    bridle_testkit::mcp::venv("").await.unwrap()
}

/// Runs the SDK client with `steps`; one JSON value per step.
async fn client(venv: &std::path::Path, url: &str, steps: Value) -> Vec<Value> {
    client_with_key(venv, url, steps, "").await
}

/// [`client`], authenticating with API key `key` (none when empty).
async fn client_with_key(venv: &std::path::Path, url: &str, steps: Value, key: &str) -> Vec<Value> {
    let script = bridle_testkit::paths::workspace_root().join("tests/fixtures/mcp_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(venv.join("bin/python"))
            .arg(script)
            .arg(url)
            .arg(steps.to_string())
            .args((!key.is_empty()).then_some(key))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the MCP client finished within 2 minutes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the MCP client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn decide(h: &Harness, approval_id: &str, approve: bool, reason: &str) {
    h.approvals()
        .await
        .decide(pb::DecideRequest {
            id: approval_id.into(),
            approve,
            reason: reason.into(),
            approver: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outside_mcp_client_calls_an_agents_tools_through_policy_and_approvals() {
    let venv = venv().await;
    let files = tempfile::tempdir().unwrap();
    let addr_file = files.path().join("mcp.addr");
    let h = Harness::start_with(Options {
        orchestrator_env: vec![
            ("mcp__listen".into(), "127.0.0.1:0".into()),
            ("mcp__addr_file".into(), addr_file.display().to_string()),
            ("mcp__call_wait".into(), "15s".into()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("test.yaml", &h.manifests_yaml()).await.unwrap();
    let addr = std::fs::read_to_string(&addr_file).unwrap();
    let url = format!("http://{}/mcp/analyst", addr.trim());

    let out = client(
        &venv,
        &url,
        json!([
            ["list"],
            ["call", "python", {"code": "print(6 * 7)"}],
            ["call", "python", {}],
            ["call", "delete-dataset", {"dataset": "sales"}],
        ]),
    )
    .await;
    // The agent's tools with MCP's annotations for their risk, and bridle_result.
    let tools = out[0]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["python", "delete-dataset", "bridle_result"],
        "{tools:?}"
    );
    assert_eq!(tools[0]["annotations"]["readOnlyHint"], true, "{tools:?}");
    assert_eq!(
        tools[1]["annotations"]["destructiveHint"], true,
        "{tools:?}"
    );
    assert_eq!(
        tools[0]["inputSchema"]["required"],
        json!(["code"]),
        "{tools:?}"
    );

    // Read-only: allowed by policy, run in a sandbox, its output returned.
    assert_eq!(out[1]["isError"], false, "{}", out[1]);
    assert_eq!(out[1]["text"].as_str().unwrap().trim(), "42", "{}", out[1]);
    // Bad arguments: nothing runs, and the error names what is wrong.
    assert_eq!(out[2]["isError"], true, "{}", out[2]);
    assert!(
        out[2]["text"].as_str().unwrap().contains("code"),
        "{}",
        out[2]
    );
    // Destructive: parked for approval; told so while waiting, then pending.
    let pending = &out[3];
    assert_eq!(pending["isError"], false, "{pending}");
    assert!(
        pending["text"].as_str().unwrap().starts_with("PENDING"),
        "{pending}"
    );
    let run_id = pending["structuredContent"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let approval_id = pending["structuredContent"]["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(approval_id.starts_with("apr_"), "{pending}");
    let progress = pending["progress"].as_array().unwrap();
    assert!(
        progress
            .iter()
            .any(|m| m.as_str().unwrap().contains(&approval_id)),
        "the client is told which approval its call waits for: {pending}"
    );

    decide(&h, &approval_id, true, "sales is stale").await;
    let out = client(
        &venv,
        &url,
        json!([["call", "bridle_result", {"run_id": run_id}]]),
    )
    .await;
    assert_eq!(out[0]["isError"], false, "{}", out[0]);
    assert!(
        out[0]["text"].as_str().unwrap().contains("deleted sales"),
        "{}",
        out[0]
    );

    // Denied: an error result carrying the person's reason; the tool never ran.
    let out = client(
        &venv,
        &url,
        json!([["call", "delete-dataset", {"dataset": "users"}]]),
    )
    .await;
    let second = out[0]["structuredContent"]["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let second_run = out[0]["structuredContent"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    decide(&h, &second, false, "users are not ours to delete").await;
    let out = client(
        &venv,
        &url,
        json!([
            ["call", "bridle_result", {"run_id": second_run}],
            ["call", "bridle_result", {"run_id": "run_01JZZZZZZZZZZZZZZZZZZZZZZZ"}],
            ["call", "no-such-tool", {}],
        ]),
    )
    .await;
    assert_eq!(out[0]["isError"], true, "{}", out[0]);
    let text = out[0]["text"].as_str().unwrap();
    assert!(
        text.contains("users are not ours to delete") && !text.contains("deleted users"),
        "{text}"
    );
    assert_eq!(out[1]["isError"], true, "{}", out[1]);
    assert_eq!(out[2]["isError"], true, "{}", out[2]);
    assert!(
        out[2]["text"]
            .as_str()
            .unwrap()
            .contains("agent 'analyst' has no tool 'no-such-tool'"),
        "{}",
        out[2]
    );

    // Every call was a run of the agent, listed with the tool it called.
    let runs = h
        .orchestrator()
        .await
        .list_runs(pb::ListRunsRequest {
            agent: "analyst".into(),
            page_size: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    let mut called: Vec<(String, i32)> = runs
        .iter()
        .map(|r| (r.tool_call.clone(), r.status))
        .collect();
    called.sort();
    let (ok, failed) = (
        pb::RunStatus::Succeeded as i32,
        pb::RunStatus::Failed as i32,
    );
    assert_eq!(
        called,
        [
            ("delete-dataset".to_string(), ok),
            ("delete-dataset".to_string(), failed),
            ("python".to_string(), ok),
            ("python".to_string(), failed),
        ],
        "{runs:?}"
    );
    let approved = runs.iter().find(|r| r.id == run_id).unwrap();
    assert_eq!(approved.input, "call delete-dataset");
    assert!(approved.output.contains("deleted sales"), "{approved:?}");
    // No model was asked anything.
    assert!(h.mock.requests().is_empty());
}

/// With API keys on, the endpoint takes the same keys as gRPC: none is 401, a viewer may list
/// but not call, and another tenant's key does not find the agent. People's OIDC tokens work
/// alike (tenant and roles from their claims), and bad ones are 401 (why is in the log).
#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_endpoint_takes_the_services_api_keys_and_roles() {
    use bridle_core::auth::Role;
    let venv = venv().await;
    let files = tempfile::tempdir().unwrap();
    let addr_file = files.path().join("mcp.addr");
    // People also come with OIDC tokens from a local issuer (keys made here, JWKS on loopback).
    let issuer = bridle_testkit::oidc::LocalIssuer::start().await.unwrap();
    let signer = bridle_testkit::oidc::Signer::new("k1").unwrap();
    issuer.publish(&signer);
    let h = Harness::start_with(Options {
        env_all: support::keys_on(),
        orchestrator_env: vec![
            ("mcp__listen".into(), "127.0.0.1:0".into()),
            ("mcp__addr_file".into(), addr_file.display().to_string()),
            (
                "oidc".into(),
                format!(
                    r#"[{{issuer="{}", audiences=["bridle"], group_roles={{sre=["operator"]}}}}]"#,
                    issuer.url
                ),
            ),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let keys = h.api_keys().await;
    let (operator, _) = keys
        .create("acme", "acme operator", &[Role::Operator])
        .await
        .unwrap();
    let (viewer, _) = keys
        .create("acme", "acme viewer", &[Role::Viewer])
        .await
        .unwrap();
    let (globex, _) = keys
        .create("globex", "globex admin", &[Role::Admin])
        .await
        .unwrap();
    let apply = support::with_key(
        &operator,
        pb::ApplyRequest {
            actor: None,
            documents: support::bridle_core_docs("test.yaml", &h.manifests_yaml()),
            dry_run: false,
            tenant: String::new(),
        },
    );
    h.manifests().await.apply(apply).await.unwrap();
    let addr = std::fs::read_to_string(&addr_file).unwrap();
    let url = format!("http://{}/mcp/analyst", addr.trim());

    // No key, or a wrong one: 401 before MCP sees the request, saying how to authenticate.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});
    for auth in [None, Some("Bearer bk_notakeyatall000000000000000000000")] {
        let mut req = bridle_core::http_client::new()
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert!(
            resp.headers()
                .get("www-authenticate")
                .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
            "{:?}",
            resp.headers()
        );
    }

    // The operator lists and calls, as its tenant.
    let out = client_with_key(
        &venv,
        &url,
        json!([["list"], ["call", "python", {"code": "print(6 * 7)"}]]),
        &operator,
    )
    .await;
    assert_eq!(out[0]["tools"].as_array().unwrap().len(), 3, "{}", out[0]);
    assert_eq!(out[1]["text"].as_str().unwrap().trim(), "42", "{}", out[1]);
    // A viewer lists, but may not start a call.
    let out = client_with_key(
        &venv,
        &url,
        json!([["list"], ["call", "python", {"code": "print(1)"}]]),
        &viewer,
    )
    .await;
    assert_eq!(out[0]["tools"].as_array().unwrap().len(), 3, "{}", out[0]);
    assert_eq!(out[1]["isError"], true, "{}", out[1]);
    assert!(
        out[1]["text"].as_str().unwrap().contains("operator"),
        "{}",
        out[1]
    );
    // Another tenant's key does not find acme's agent.
    let out = client_with_key(&venv, &url, json!([["list"]]), &globex).await;
    assert!(
        out[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("analyst")),
        "{}",
        out[0]
    );

    // An OIDC token of acme's (tenant claim) in the group sre is an operator there: it calls.
    let claims = issuer.claims();
    let person = signer.sign(&claims).unwrap();
    let out = client_with_key(
        &venv,
        &url,
        json!([["list"], ["call", "python", {"code": "print(6 * 7)"}]]),
        &person,
    )
    .await;
    assert_eq!(out[0]["tools"].as_array().unwrap().len(), 3, "{}", out[0]);
    assert_eq!(out[1]["text"].as_str().unwrap().trim(), "42", "{}", out[1]);
    // Without the group, the token's own roles claim makes a viewer: listing, no calls; the
    // refusal names the person.
    let mut viewer_claims = claims.clone();
    viewer_claims["groups"] = json!([]);
    let out = client_with_key(
        &venv,
        &url,
        json!([["call", "python", {"code": "print(1)"}]]),
        &signer.sign(&viewer_claims).unwrap(),
    )
    .await;
    assert_eq!(out[0]["isError"], true, "{}", out[0]);
    let text = out[0]["text"].as_str().unwrap();
    assert!(
        text.contains("user 'alice@example.com'") && text.contains("operator"),
        "{text}"
    );
    // Expired, for another audience, or signed by a key the issuer never published: 401.
    let mut expired = claims.clone();
    expired["exp"] = json!(1_000_000);
    let mut audience = claims.clone();
    audience["aud"] = json!("another-service");
    let stranger = bridle_testkit::oidc::Signer::new("k1").unwrap();
    for (what, token) in [
        ("expired", signer.sign(&expired).unwrap()),
        ("audience", signer.sign(&audience).unwrap()),
        ("signature", stranger.sign(&claims).unwrap()),
    ] {
        let resp = bridle_core::http_client::new()
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("authorization", format!("Bearer {token}"))
            .json(&init)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        // The client is told the token is not valid, not why (a forger learns nothing); the
        // orchestrator's log says why.
        let body = resp.text().await.unwrap();
        assert!(
            body.contains("is not valid here") && !body.contains(what),
            "{what}: {body}"
        );
    }
    let log = h.orchestrators[0].log_tail(2000);
    for why in [
        "the token has expired",
        "audience is not one this service accepts",
        "signature does not verify",
    ] {
        assert!(log.contains(why), "the log does not say {why:?}");
    }
    // The same token works on gRPC: the run it started is listed for acme.
    let runs = h
        .orchestrator()
        .await
        .list_runs(support::with_key(
            &person,
            pb::ListRunsRequest {
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(runs.runs.iter().all(|r| r.tenant == "acme"), "{runs:?}");
    // The call the person made is a run that says it was theirs.
    assert!(
        runs.runs.iter().any(|r| r
            .started_by
            .as_ref()
            .is_some_and(|a| a.kind == pb::ActorKind::User as i32
                && a.id == "oidc:u-123"
                && a.name == "alice@example.com")),
        "{runs:?}"
    );
}

/// The endpoint keeps no session: a call started through one orchestrator replica is polled
/// through another after the first is gone (killed with SIGKILL).
#[tokio::test(flavor = "multi_thread")]
async fn a_pending_call_is_answered_by_another_replica_after_the_first_dies() {
    let venv = venv().await;
    let mut h = Harness::start_with(Options {
        orchestrators: 2,
        orchestrator_env: vec![
            ("mcp__listen".into(), "127.0.0.1:0".into()),
            ("mcp__call_wait".into(), "2s".into()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    h.apply("test.yaml", &h.manifests_yaml()).await.unwrap();
    // Each replica logs the address it bound.
    let bound = regex::Regex::new(r"addr\W+(\d+\.\d+\.\d+\.\d+:\d+)").unwrap();
    let url_of = |i: usize| {
        let log = std::fs::read_to_string(&h.orchestrators[i].log).unwrap();
        let line = log
            .lines()
            .find(|l| l.contains("MCP endpoint listening"))
            .unwrap_or_else(|| panic!("replica {i} logged no MCP address:\n{log}"));
        format!("http://{}/mcp/analyst", &bound.captures(line).unwrap()[1])
    };
    let (first, second) = (url_of(0), url_of(1));
    assert_ne!(first, second);

    let out = client(
        &venv,
        &first,
        json!([["call", "delete-dataset", {"dataset": "sales"}]]),
    )
    .await;
    let pending = &out[0]["structuredContent"];
    let (run_id, approval_id) = (
        pending["run_id"].as_str().unwrap().to_string(),
        pending["approval_id"].as_str().unwrap().to_string(),
    );
    h.orchestrators[0].kill().await;
    decide(&h, &approval_id, true, "stale").await;
    // Each poll waits up to call_wait (2 s); a loaded machine may need more than one.
    let mut answer = Value::Null;
    for _ in 0..30 {
        let out = client(
            &venv,
            &second,
            json!([["call", "bridle_result", {"run_id": run_id}]]),
        )
        .await;
        answer = out[0].clone();
        if !answer["text"].as_str().unwrap().starts_with("PENDING") {
            break;
        }
    }
    assert_eq!(answer["isError"], false, "{answer}");
    assert!(
        answer["text"].as_str().unwrap().contains("deleted sales"),
        "{answer}"
    );
}
