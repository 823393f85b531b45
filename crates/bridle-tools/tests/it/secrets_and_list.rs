//! Secrets reach the tool through the real broker and never come back out; ListTools shows
//! what the model sees.

use bridle_core::Shutdown;
use bridle_core::config::ServerOptions;
use bridle_proto::{ListToolsRequest, RiskClass};
use secrecy::SecretString;

use crate::helpers::{Harness, Setup, TENANT, python_tool, with_secrets_for_model_code};

#[tokio::test]
async fn a_secret_env_value_reaches_the_tool_and_is_redacted_from_its_output() {
    let bao = bridle_testkit::OpenBao::start().await.unwrap();
    let redis = bridle_testkit::RedisServer::start().await.unwrap();
    let prefix = bridle_testkit::unique("t");
    let value = format!("tok-{}", bridle_testkit::unique("v"));
    bao.put_kv(
        &format!("{prefix}/tool-token"),
        serde_json::json!({ "value": value }),
    )
    .await
    .unwrap();
    let broker_shutdown = Shutdown::new();
    let broker = bridle_secrets::start(
        bridle_secrets::Options {
            server: ServerOptions::unauthenticated(0),
            vault_addr: bao.addr(),
            vault_token: Some(SecretString::from(bao.root_token().to_string())),
            redis_url: redis.url(),
            key_prefix: prefix.clone(),
            // No SecretBinding: names follow the path convention.
            unbound: bridle_secrets::Unbound::Convention,
            path_prefix: prefix,
            ..Default::default()
        },
        broker_shutdown.clone(),
    )
    .await
    .unwrap();

    let h = Harness::start_with(Setup {
        secrets_url: format!("http://{broker}"),
        ..Setup::default()
    })
    .await;
    h.apply(&with_secrets_for_model_code(&python_tool(
        "py",
        "    env:\n      TOKEN: secret://tool-token\n      PLAIN: visible\n",
    )))
    .await;
    let r = h
        .python("import os, sys; t = os.environ['TOKEN']; print(t); print(t[::-1]); print(os.environ['PLAIN']); sys.stderr.write(t)")
        .await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    let reversed: String = value.chars().rev().collect();
    assert!(
        r.stdout.contains(&reversed),
        "the value reached the tool: {}",
        r.stdout
    );
    for text in [&r.stdout, &r.stderr, &r.output] {
        assert!(!text.contains(&value), "secret leaked: {text}");
    }
    assert!(r.stdout.starts_with("[REDACTED]\n"), "{}", r.stdout);
    assert_eq!(r.stderr, "[REDACTED]");
    assert!(r.stdout.contains("visible\n"));
    h.stop().await;
    broker_shutdown
        .drain(std::time::Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn list_tools_returns_schemas_and_missing_names() {
    let h = Harness::start().await;
    h.apply(&python_tool("py", "")).await;
    h.apply(&python_tool("calc", "").replace("risk: read_only", "risk: destructive"))
        .await;
    let mut c = h.tools.clone();
    let r = c
        .list_tools(ListToolsRequest {
            tenant: TENANT.into(),
            names: vec!["py".into(), "nope".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.missing, vec!["nope".to_string()]);
    assert_eq!(r.tools.len(), 1);
    let t = &r.tools[0];
    assert_eq!(t.name, "py");
    assert_eq!(t.kind(), bridle_proto::ToolKind::Container);
    assert_eq!(t.risk, RiskClass::ReadOnly as i32);
    assert_eq!(t.tags, vec!["python".to_string(), "test".to_string()]);
    assert_eq!(
        t.description,
        "Runs a Python snippet and returns what it prints."
    );
    let schema: serde_json::Value = serde_json::from_str(&t.parameters_json_schema).unwrap();
    assert_eq!(schema["properties"]["code"]["type"], "string");
    assert_eq!(schema["required"], serde_json::json!(["code"]));

    let all = c
        .list_tools(ListToolsRequest {
            tenant: TENANT.into(),
            names: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = all.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["calc", "py"]);
    assert_eq!(all.tools[0].risk, RiskClass::Destructive as i32);
    assert!(all.missing.is_empty());

    let other = c
        .list_tools(ListToolsRequest {
            tenant: "other".into(),
            names: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(other.tools.is_empty(), "tools belong to their tenant");
    h.stop().await;
}

/// A real OpenBao behind a real broker holding `secrets` (name -> value).
pub async fn broker_with(
    secrets: &[(&str, &str)],
) -> (
    (bridle_testkit::OpenBao, bridle_testkit::RedisServer),
    String,
    Shutdown,
) {
    let bao = bridle_testkit::OpenBao::start().await.unwrap();
    let redis = bridle_testkit::RedisServer::start().await.unwrap();
    let prefix = bridle_testkit::unique("t");
    for (name, value) in secrets {
        bao.put_kv(
            &format!("{prefix}/{name}"),
            serde_json::json!({ "value": value }),
        )
        .await
        .unwrap();
    }
    let shutdown = Shutdown::new();
    let addr = bridle_secrets::start(
        bridle_secrets::Options {
            server: ServerOptions::unauthenticated(0),
            vault_addr: bao.addr(),
            vault_token: Some(SecretString::from(bao.root_token().to_string())),
            redis_url: redis.url(),
            key_prefix: prefix.clone(),
            // No SecretBinding: names follow the path convention.
            unbound: bridle_secrets::Unbound::Convention,
            path_prefix: prefix,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    ((bao, redis), format!("http://{addr}"), shutdown)
}

#[tokio::test]
async fn secret_files_and_http_headers_are_resolved_per_call_and_scrubbed() {
    let token = format!("tok-{}", bridle_testkit::unique("v"));
    let key = format!("key-{}", bridle_testkit::unique("v"));
    let (_bao, url, broker) = broker_with(&[("api-token", &token), ("file-key", &key)]).await;
    let up = crate::net::Upstream::start().await;
    let h = Harness::start_with(Setup {
        secrets_url: url,
        ..Setup::default()
    })
    .await;
    h.apply(&with_secrets_for_model_code(&crate::helpers::code_tool(
        "py",
        "python",
        "    secretFiles:\n      key: secret://file-key\n",
    )))
    .await;
    let code = "import base64, os\nk = open('/run/secrets/key').read()\nprint(k)\nprint(base64.b64encode(k.encode()).decode())\nprint(k[::-1])\nprint(oct(os.stat('/run/secrets/key').st_mode & 0o777))";
    let r = h
        .call("run_s", "py", serde_json::json!({ "code": code }))
        .await;
    let reversed: String = key.chars().rev().collect();
    assert!(
        r.stdout.contains(&reversed),
        "the file reached the tool: {r:?}"
    );
    assert_eq!(
        r.stdout,
        format!("[REDACTED]\n[REDACTED]\n{reversed}\n0o444\n"),
        "plain and base64 forms are scrubbed"
    );
    // The file exists during its tool's calls only: another tool in the same sandbox and
    // run does not see it.
    h.apply(&crate::helpers::code_tool("plain", "python", ""))
        .await;
    let r = h
        .call(
            "run_s",
            "plain",
            serde_json::json!({ "code": "import os; print(os.listdir('/run/secrets'))" }),
        )
        .await;
    assert_eq!(r.stdout, "[]\n", "{r:?}");

    h.apply(&format!(
        "apiVersion: bridle.dev/v1\nkind: Tool\nmetadata:\n  name: item\nspec:\n  description: Fetches an item.\n  parameters: {{type: object, properties: {{id: {{type: string}}}}}}\n  http:\n    url: http://127.0.0.1:{}/items/{{{{id}}}}\n    bearer: secret://api-token\n",
        up.addr.port()
    ))
    .await;
    let r = h
        .call("run_s", "item", serde_json::json!({"id": "7"}))
        .await;
    assert_eq!(r.http_status, 200, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.output).unwrap();
    assert_eq!(
        v["auth"], "Bearer [REDACTED]",
        "sent, and scrubbed from the answer: {v}"
    );
    assert!(!r.output.contains(&token));
    h.stop().await;
    broker.drain(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_result_that_quotes_the_models_arguments_is_scrubbed_where_it_leaves() {
    let token = format!("tok-{}", bridle_testkit::unique("v"));
    let (_bao, url, broker) = broker_with(&[("tool-token", &token)]).await;
    let h = Harness::start_with(Setup {
        secrets_url: url,
        ..Setup::default()
    })
    .await;
    h.apply(&with_secrets_for_model_code(&python_tool(
        "py",
        "    env:\n      TOKEN: secret://tool-token\n",
    )))
    .await;
    // The run resolves the value in its first call...
    let r = h
        .call("run_q", "py", serde_json::json!({ "code": "print(1)" }))
        .await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    // ...and a later call whose arguments hold it (a model that learned it) is refused with a
    // message that quotes them: nothing ran, yet the message leaves the service too.
    let r = h
        .call(
            "run_q",
            "py",
            serde_json::json!({ "code": "print(2)", &token: 1 }),
        )
        .await;
    assert_eq!(
        r.error_kind,
        bridle_proto::ToolErrorKind::InvalidArguments as i32,
        "{r:?}"
    );
    assert!(!r.output.contains(&token), "secret leaked: {}", r.output);
    assert!(r.output.contains("[REDACTED]"), "{}", r.output);
    h.stop().await;
    broker.drain(std::time::Duration::from_secs(5)).await;
}
