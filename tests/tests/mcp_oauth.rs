//! A remote MCP server behind the MCP authorization flow (OAuth 2.1 with PKCE and dynamic
//! client registration), served by the official `mcp` Python SDK's own authorization server
//! (tests/fixtures of the tools crate: `mcp_oauth_server.py`), against the five service
//! binaries, real Redis and OpenBao. A person logs in with `bridle mcp login` (the browser is
//! played by an HTTP client that follows the authorization server's redirect back to the CLI's
//! loopback listener); the grant is kept in Vault, per tenant, and nowhere else; calls carry
//! the access token and refresh it as it expires; a grant the server no longer honours, a
//! logout and another tenant each get a clear error naming `bridle mcp login`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use bridle_proto as pb;
use serde_json::Value;
use support::{Harness, Options};
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// The fixture server on a free port; killed when dropped.
struct AuthServer {
    _child: tokio::process::Child,
    base: String,
}

impl AuthServer {
    /// `access_seconds`: how long its access tokens last.
    async fn start(access_seconds: u32) -> Self {
        let venv = bridle_testkit::mcp::venv("").await.unwrap();
        let script = bridle_testkit::paths::workspace_root()
            .join("crates/bridle-tools/tests/fixtures/mcp_oauth_server.py");
        let port = bridle_testkit::ports::free_port().unwrap();
        let child = tokio::process::Command::new(venv.join("bin/python"))
            .arg(script)
            .arg(port.to_string())
            .arg(access_seconds.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let s = Self {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..150 {
            if bridle_core::http_client::new()
                .get(format!("{}/test/stats", s.base))
                .send()
                .await
                .is_ok()
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the OAuth MCP server did not start on port {port}");
    }

    async fn stats(&self) -> Value {
        bridle_core::http_client::new()
            .get(format!("{}/test/stats", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn agent_yaml(mock: &str) -> String {
    format!(
        r#"
apiVersion: bridle.dev/v1
kind: ModelRoute
metadata: {{name: main}}
spec:
  targets:
    - name: mock
      provider: openai
      model: gpt-4o-mini
      baseUrl: {mock}
      apiKey: secret://openai-api-key
---
apiVersion: bridle.dev/v1
kind: Agent
metadata: {{name: assistant}}
spec:
  route: main
  instructions: You keep notes.
  tools: [notes]
"#
    )
}

fn tool_yaml(url: &str) -> String {
    format!(
        r#"
apiVersion: bridle.dev/v1
kind: Tool
metadata: {{name: notes}}
spec:
  description: Notes behind OAuth.
  mcp:
    url: {url}
    oauth: {{}}
"#
    )
}

/// `bridle mcp login notes`, with the browser played by an HTTP client; the CLI's stdout.
async fn login(h: &Harness, tenant: &str) -> String {
    let cli = bridle_testkit::paths::binary("bridle").unwrap();
    let mut child = tokio::process::Command::new(cli)
        .args(["mcp", "login", "notes", "--wait", "60s"])
        .args(["--server", &h.orchestrator, "--tenant", tenant])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            out.push_str(&l);
            out.push('\n');
            if let Some(u) = l.trim().strip_prefix("http") {
                return format!("http{u}");
            }
        }
        panic!("the CLI printed no authorization URL:\n{out}")
    })
    .await
    .expect("the CLI printed the URL within a minute");
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("code_challenge="),
        "PKCE: {url}"
    );
    // The "browser": /authorize approves at once and redirects to the CLI's listener.
    let page = bridle_core::http_client::new()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert!(
        page.status().is_success(),
        "the redirect back to the CLI: {}",
        page.status()
    );
    let page = page.text().await.unwrap();
    assert!(page.contains("You can close this tab"), "{page}");
    while let Some(l) = lines.next_line().await.unwrap() {
        out.push_str(&l);
        out.push('\n');
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut err)
        .await
        .unwrap();
    assert!(status.success(), "bridle mcp login failed:\n{out}\n{err}");
    out
}

/// One call of the server's `whoami` as a run of the agent (the MCP endpoint's kind of run):
/// its output, or its error.
async fn whoami(h: &Harness, tenant: &str) -> Result<String, String> {
    let run = h
        .orchestrator()
        .await
        .start_run(pb::StartRunRequest {
            agent: "assistant".into(),
            tenant: tenant.into(),
            tool_call: Some(pb::ToolCall {
                name: "notes__whoami".into(),
                arguments_json: "{}".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner()
        .run
        .unwrap();
    support::follow(h, &run.id, Duration::from_secs(60), |_| async {})
        .await
        .unwrap();
    let r = h
        .orchestrator()
        .await
        .get_run(pb::GetRunRequest {
            run_id: run.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    if r.status == pb::RunStatus::Succeeded as i32 {
        Ok(r.output)
    } else {
        Err(r.error)
    }
}

/// The tool's listing for the tenant, or its error.
async fn describe(h: &Harness, tenant: &str) -> Result<Vec<String>, String> {
    h.orchestrator()
        .await
        .describe_agent(pb::DescribeAgentRequest {
            name: "assistant".into(),
            tenant: tenant.into(),
        })
        .await
        .map(|d| d.into_inner().tools.into_iter().map(|t| t.name).collect())
        .map_err(|s| s.message().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_authorizes_a_remote_mcp_server_and_calls_carry_refreshed_tokens() {
    // Access tokens of 32s: the client refreshes one with less than 30s left, so after 2s.
    let server = AuthServer::start(32).await;
    let h = Harness::start_with(Options {
        tools_env: vec![("egress_allow_private".into(), "true".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("{}/mcp", server.base);
    for tenant in ["default", "acme"] {
        let yaml = format!(
            "{}\n---\n{}",
            tool_yaml(&url),
            agent_yaml(&h.mock.base_url())
        );
        let docs = support::bridle_core_docs("notes.yaml", &yaml);
        h.manifests()
            .await
            .apply(pb::ApplyRequest {
                actor: None,
                documents: docs,
                dry_run: false,
                tenant: tenant.into(),
            })
            .await
            .unwrap();
    }

    // Before anyone logs in: a clear error that says what to do.
    let before = describe(&h, "default").await.unwrap_err();
    assert!(
        before.contains("needs an OAuth authorization for tenant 'default'")
            && before.contains("bridle mcp login notes"),
        "{before}"
    );

    let out = login(&h, "default").await;
    assert!(
        out.contains("Authorized tool 'notes' (scopes: notes")
            && out.contains("refreshed by Bridle"),
        "{out}"
    );
    let st = server.stats().await;
    assert_eq!(st["registered"], 1, "one dynamic client registration: {st}");
    assert_eq!(st["exchanged"], 1, "{st}");

    // The grant is in Vault, per tenant, and no token is anywhere in Redis.
    let kept = h
        .bao
        .api("GET", "secret/data/bridle-grants/default/notes", None)
        .await
        .unwrap();
    let grant: Value =
        serde_json::from_str(kept["data"]["data"]["grant"].as_str().unwrap()).unwrap();
    assert_eq!(grant["url"], url.as_str());
    let token = grant["credentials"]["token_response"]["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(token.starts_with("at_"), "{grant}");
    let dump = redis_dump(&h).await;
    assert!(!dump.contains(&token), "an access token is in Redis");
    assert!(
        !dump.contains("tools:oauth:pending"),
        "a finished flow is still pending"
    );

    assert_eq!(
        describe(&h, "default").await.unwrap(),
        vec!["notes__whoami".to_string()]
    );
    let first = whoami(&h, "default").await.unwrap();
    assert!(first.contains("subject alice via client"), "{first}");

    // After two seconds the token has less than 30s left: the next call refreshes it first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = whoami(&h, "default").await.unwrap();
    assert_eq!(first, second);
    let st = server.stats().await;
    assert!(st["refreshed"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(st["refresh_refused"], 0, "{st}");
    let kept = h
        .bao
        .api("GET", "secret/data/bridle-grants/default/notes", None)
        .await
        .unwrap();
    assert!(
        !kept["data"]["data"]["grant"]
            .as_str()
            .unwrap()
            .contains(&token),
        "the refreshed token replaced the first in Vault"
    );

    // The other tenant's use of the same server is not authorized by this one's login.
    let other = whoami(&h, "acme").await.unwrap_err();
    assert!(
        other.contains("tenant 'acme'") && other.contains("bridle mcp login notes"),
        "{other}"
    );

    // The authorization server revokes everything: the call fails and says to log in again.
    bridle_core::http_client::new()
        .post(format!("{}/test/revoke", server.base))
        .send()
        .await
        .unwrap();
    let revoked = whoami(&h, "default").await.unwrap_err();
    assert!(revoked.contains("bridle mcp login notes"), "{revoked}");

    // Logging in again works, and logging out forgets the grant.
    login(&h, "default").await;
    assert!(whoami(&h, "default").await.is_ok());
    let cli = bridle_testkit::paths::binary("bridle").unwrap();
    let out = tokio::process::Command::new(&cli)
        .args(["mcp", "logout", "notes", "--server", &h.orchestrator])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Forgot the authorization"));
    assert!(
        h.bao
            .api("GET", "secret/data/bridle-grants/default/notes", None)
            .await
            .is_err(),
        "the grant is gone from Vault"
    );
    let after = whoami(&h, "default").await.unwrap_err();
    assert!(after.contains("bridle mcp login notes"), "{after}");
}

/// Every string value in the harness's Redis.
async fn redis_dump(h: &Harness) -> String {
    let c = redis::Client::open(h.redis.url()).unwrap();
    let mut conn = c.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = keys.join("\n");
    for k in keys {
        let t: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        if t == "string" {
            let v: Vec<u8> = redis::cmd("GET")
                .arg(&k)
                .query_async(&mut conn)
                .await
                .unwrap();
            out.push_str(&String::from_utf8_lossy(&v));
        }
    }
    out
}
