//! Mutual TLS between the five service processes (certificates from deploy/certs/make-dev-ca.sh):
//! a run goes through, and a caller without a certificate from the deployment's CA cannot
//! talk to a service.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Duration;

use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use bridle_testkit::mock_openai::Reply;
use support::{Harness, Options, follow, tool_outputs};

#[tokio::test(flavor = "multi_thread")]
async fn a_run_goes_through_services_that_speak_mutual_tls() {
    let h = Harness::start_with(Options {
        tls: true,
        ..Default::default()
    })
    .await
    .unwrap();
    a_keyed_run_succeeds(&h).await;
    refusals(&h).await;
}

/// Every service finds its peers by DNS name (`dns:///localhost:port`): each address it
/// resolves to is dialled over TLS, checked against the peer's name, not the address.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_goes_through_services_found_by_dns_name_over_mutual_tls() {
    let h = Harness::start_with(Options {
        tls: true,
        peers_by_dns: true,
        ..Default::default()
    })
    .await
    .unwrap();
    a_keyed_run_succeeds(&h).await;
}

async fn a_keyed_run_succeeds(h: &Harness) {
    assert!(h.orchestrator.starts_with("https://"), "{}", h.orchestrator);
    // A tool with a secret: the tools service resolves it from the broker over TLS too.
    let keyed = r#"apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: keyed
spec:
  description: Says how long its key is.
  risk: read_only
  parameters: {type: object, properties: {}}
  container:
    image: bridle-sandbox:python
    command: ["python3", "-c", "import os; print('key length', len(os.environ['K']))"]
    env:
      K: secret://openai-api-key
    stdin: false
---
apiVersion: bridle.dev/v1
kind: Agent
metadata:
  name: keyed
spec:
  route: main
  instructions: You run tools.
  tools: [python, keyed]
"#;
    h.apply("m.yaml", &format!("{}---\n{keyed}", h.manifests_yaml()))
        .await
        .unwrap();
    h.mock.enqueue(Reply::tool_calls(&[
        ("c1", "python", r#"{"code": "print(6 * 7)"}"#),
        ("c2", "keyed", "{}"),
    ]));
    h.mock.enqueue(Reply::text("42"));
    let run = h.start_run("keyed", "go").await;
    let events = follow(h, &run, Duration::from_secs(120), |_| async {})
        .await
        .unwrap();
    let Some(Kind::RunFinished(f)) = &events.last().unwrap().kind else {
        panic!()
    };
    assert_eq!(f.status, pb::RunStatus::Succeeded as i32, "{}", h.logs());
    let outputs = tool_outputs(&events);
    let want = format!("key length {}", h.api_key.len());
    assert!(
        outputs.iter().any(|o| o.contains(&want)),
        "the keyed tool got its secret: {outputs:?}\n{}",
        h.logs()
    );
    // The router reached the broker over TLS: the provider got the key from OpenBao.
    assert_eq!(
        h.mock.requests()[0].authorization(),
        Some(format!("Bearer {}", h.api_key).as_str())
    );
}

async fn refusals(h: &Harness) {
    // Plain text to a TLS service fails.
    let plain = h.orchestrator.replacen("https://", "http://", 1);
    let r = async {
        pb::orchestrator_client::OrchestratorClient::connect(plain)
            .await?
            .list_agents(pb::ListAgentsRequest::default())
            .await
            .map_err(anyhow::Error::from)
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .map(|r| r.is_err())
            .unwrap_or(true)
    );

    // A certificate from another CA is refused in the handshake.
    let other = tempfile::tempdir().unwrap();
    let script = bridle_testkit::paths::workspace_root().join("deploy/certs/make-dev-ca.sh");
    assert!(
        tokio::process::Command::new("bash")
            .arg(script)
            .arg(other.path())
            .status()
            .await
            .unwrap()
            .success()
    );
    bridle_core::config::install_crypto_provider();
    let certs = h.certs.clone().unwrap();
    let read = |d: &std::path::Path, f: &str| std::fs::read(d.join(f)).unwrap();
    let ep = tonic::transport::Endpoint::from_shared(h.orchestrator.clone())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read(
                    &certs, "ca.pem",
                )))
                .identity(tonic::transport::Identity::from_pem(
                    read(other.path(), "cli.pem"),
                    read(other.path(), "cli.key"),
                ))
                .domain_name("orchestrator"),
        )
        .unwrap();
    let r = async {
        pb::orchestrator_client::OrchestratorClient::new(ep.connect().await?)
            .list_agents(pb::ListAgentsRequest::default())
            .await
            .map_err(anyhow::Error::from)
    };
    let refused = tokio::time::timeout(Duration::from_secs(10), r)
        .await
        .map(|r| r.is_err())
        .unwrap_or(true);
    assert!(refused, "a certificate from another CA was accepted");
}
