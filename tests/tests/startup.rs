//! A service whose Redis or Vault cannot be reached at start says so and exits non-zero,
//! without a panic; a bad option exits 64 before binding anything.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Stdio;

async fn run(binary: &str, env: &[(&str, String)]) -> (i32, String) {
    let bin = bridle_testkit::paths::binary(binary).unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .env("BRIDLE_LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("exits")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn unreachable_redis_exits_69_naming_it() {
    let refusing = bridle_testkit::ports::refusing_port().unwrap();
    let port = refusing.port;
    let url = format!("redis://127.0.0.1:{port}/");
    let (code, text) = run(
        "bridle-orchestrator",
        &[("BRIDLE_ORCHESTRATOR_REDIS_URL", url)],
    )
    .await;
    assert_eq!(code, 69, "{text}");
    assert!(
        text.contains(&format!(
            "redis at redis://127.0.0.1:{port}/ is unavailable"
        )),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[tokio::test]
async fn unreachable_vault_exits_69_naming_it() {
    let refusing = bridle_testkit::ports::refusing_port().unwrap();
    let port = refusing.port;
    let (code, text) = run(
        "bridle-secrets",
        &[
            (
                "BRIDLE_SECRETS_VAULT_ADDR",
                format!("http://127.0.0.1:{port}"),
            ),
            ("BRIDLE_SECRETS_VAULT_TOKEN", "t".into()),
        ],
    )
    .await;
    assert_eq!(code, 69, "{text}");
    assert!(
        text.contains(&format!("vault at http://127.0.0.1:{port}")),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[tokio::test]
async fn bad_options_exit_64_before_binding() {
    let (code, text) = run(
        "bridle-orchestrator",
        &[("BRIDLE_ORCHESTRATOR_WORKERS", "0".into())],
    )
    .await;
    assert_eq!(code, 64, "{text}");
    assert!(text.contains("workers: must be at least 1"), "{text}");
    let (code, text) = run(
        "bridle-orchestrator",
        &[("BRIDLE_ORCHESTRATOR_ROUTER_URL", "not a url".into())],
    )
    .await;
    assert_eq!(code, 64, "{text}");
    assert!(text.contains("router_url"), "{text}");
}
