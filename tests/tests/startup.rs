//! A service whose Redis or Vault cannot be reached at start says so and exits non-zero,
//! without a panic; a bad option exits 64 before binding anything.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Stdio;

async fn run(binary: &str, env: &[(&str, String)]) -> (i32, String) {
    // What these tests look at comes after the auth check.
    let mut all = vec![("BRIDLE_AUTH", "off".to_string())];
    all.extend(env.iter().cloned());
    run_as_configured(binary, &all).await
}

/// With `env` and nothing else of Bridle's (no BRIDLE_* variable of the test's own).
async fn run_as_configured(binary: &str, env: &[(&str, String)]) -> (i32, String) {
    let bin = bridle_testkit::paths::binary(binary).unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("BRIDLE_") {
            cmd.env_remove(k);
        }
    }
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
async fn unreachable_sentinels_exit_69_naming_each() {
    let (a, b) = (
        bridle_testkit::ports::refusing_port().unwrap(),
        bridle_testkit::ports::refusing_port().unwrap(),
    );
    let url = format!(
        "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/mymaster",
        a.port, b.port
    );
    let (code, text) = run("bridle-tools", &[("BRIDLE_TOOLS_REDIS_URL", url)]).await;
    assert_eq!(code, 69, "{text}");
    for p in [a.port, b.port] {
        assert!(
            text.contains(&format!("127.0.0.1:{p}: ")),
            "{p} is named: {text}"
        );
    }
    assert!(text.contains("every redis sentinel"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[tokio::test]
async fn an_unreachable_cluster_seed_exits_69_naming_it() {
    let seed = bridle_testkit::ports::refusing_port().unwrap();
    let url = format!("redis+cluster://:hunter2secret@127.0.0.1:{}", seed.port);
    let (code, text) = run(
        "bridle-orchestrator",
        &[("BRIDLE_ORCHESTRATOR_REDIS_URL", url)],
    )
    .await;
    assert_eq!(code, 69, "{text}");
    assert!(
        text.contains(&format!(
            "redis cluster seed at 127.0.0.1:{} is unavailable",
            seed.port
        )),
        "{text}"
    );
    assert!(
        !text.contains("hunter2secret"),
        "the password is not printed: {text}"
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

#[tokio::test]
async fn a_bad_price_table_exits_64_naming_the_file_the_entry_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prices.yaml");
    let entry = |input: &str, extra: &str| {
        format!(
            "prices:\n  - provider: openai\n    model: gpt-4o\n    input: {input}\n    \
             output: \"10\"\n    source: our contract\n    date: 2025-09{extra}\n"
        )
    };
    for (text, said) in [
        (
            entry("\"2.5000000001\"", ""),
            "prices[0].input: \"2.5000000001\" has 10 decimals: at most 9",
        ),
        (entry("\"-2\"", ""), "prices[0].input: \"-2\" is negative"),
        (
            entry("\"2.50\"", "\n    discount: \"0.1\""),
            "prices[0].discount: unknown field `discount`",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let (code, out) = run(
            "bridle-router",
            &[("BRIDLE_ROUTER_PRICES_FILE", file.display().to_string())],
        )
        .await;
        assert_eq!(code, 64, "{out}");
        assert!(
            out.contains(&format!("prices_file {}: {said}", file.display())),
            "{out}"
        );
        assert!(out.contains("line "), "{out}");
        assert!(!out.contains("panicked"), "{out}");
    }
    let missing = dir.path().join("missing.yaml");
    let (code, out) = run(
        "bridle-router",
        &[("BRIDLE_ROUTER_PRICES_FILE", missing.display().to_string())],
    )
    .await;
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains(&format!("prices_file {}: ", missing.display())),
        "{out}"
    );
}

#[tokio::test]
async fn unknown_options_exit_64_naming_the_nearest_valid_key() {
    // A misspelt key in the config file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("router.toml");
    std::fs::write(
        &file,
        "http_listn = \"127.0.0.1:0\"\n[inbox]\nlisten = \"x\"\n",
    )
    .unwrap();
    let bin = bridle_testkit::paths::binary("bridle-router").unwrap();
    let out = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&file)
        .env("BRIDLE_LOG_FORMAT", "text")
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(
        text.contains("http_listn: unknown option (did you mean 'http_listen'?)"),
        "{text}"
    );
    assert!(text.contains("inbox: unknown option"), "{text}");

    // A misspelt variable, with the service's prefix or the shared one.
    for var in ["BRIDLE_ROUTER_HTTP_LISTN", "BRIDLE_HTTP_LISTN"] {
        let (code, text) = run("bridle-router", &[(var, "127.0.0.1:0".into())]).await;
        assert_eq!(code, 64, "{text}");
        assert!(text.contains(var), "{text}");
        assert!(text.contains("did you mean 'http_listen'"), "{text}");
    }
}

#[tokio::test]
async fn other_programs_variables_sharing_the_prefix_are_left_alone() {
    // Compose's image names and Kubernetes' service links share the prefix; they are not
    // options and must not stop the service: it goes on to its Redis (refused: exit 69).
    let refusing = bridle_testkit::ports::refusing_port().unwrap();
    let (code, text) = run(
        "bridle-router",
        &[
            (
                "BRIDLE_ROUTER_REDIS_URL",
                format!("redis://127.0.0.1:{}/", refusing.port),
            ),
            ("BRIDLE_ROUTER_IMAGE", "bridle/router:dev".into()),
            ("BRIDLE_ROUTER_SERVICE_HOST", "10.96.0.12".into()),
            ("BRIDLE_ROUTER_PORT_50052_TCP_ADDR", "10.96.0.12".into()),
            ("BRIDLE_TOOLS_VENV", "/tmp/venv".into()),
            ("BRIDLE_QUICKSTART_ROUTE", "openai".into()),
        ],
    )
    .await;
    assert_eq!(code, 69, "{text}");
}

/// Every service reads the shared `BRIDLE_*` variables of all: one service's option (the
/// router's `BRIDLE_HTTP_LISTEN`) must never look to another like a misspelling of its own.
#[test]
fn no_services_option_is_taken_for_a_misspelling_by_another() {
    use bridle_core::config::keys::{Known, misspelt_in_env};
    use bridle_core::config::{Options, SERVICE_PREFIXES};
    fn known<T: Options>() -> (&'static str, Known) {
        (T::SERVICE, Known::of::<T>())
    }
    let all = [
        known::<bridle_orchestrator::Options>(),
        known::<bridle_router::Options>(),
        known::<bridle_tools::Options>(),
        known::<bridle_approvals::Options>(),
        known::<bridle_secrets::Options>(),
    ];
    let vars: Vec<(String, String)> = all
        .iter()
        .flat_map(|(_, k)| k.paths())
        .map(|p| {
            (
                format!("BRIDLE_{}", p.join("__").to_uppercase()),
                "x".into(),
            )
        })
        .collect();
    for (service, k) in &all {
        let errs = misspelt_in_env(k, service, &SERVICE_PREFIXES, vars.clone());
        assert!(errs.is_empty(), "{service}: {errs:#?}");
    }
}

/// Secure by default: a service started with no configuration at all is in `keys` mode and,
/// with no way for the services to know each other, refuses to start, saying what to set.
#[tokio::test]
async fn a_service_started_without_configuration_refuses_to_start_open() {
    for binary in [
        "bridle-orchestrator",
        "bridle-router",
        "bridle-tools",
        "bridle-approvals",
        "bridle-secrets",
    ] {
        let (code, text) = run_as_configured(binary, &[]).await;
        assert_eq!(code, 64, "{binary}: {text}");
        assert!(
            text.contains("auth: 'keys' (the default) needs a way for the services to know each other: set internal_token"),
            "{binary}: {text}"
        );
        // And with the internal token set, that complaint is gone (whatever else is missing).
        let (_, text) = run_as_configured(
            binary,
            &[("BRIDLE_INTERNAL_TOKEN", "a-token-of-enough-length".into())],
        )
        .await;
        assert!(!text.contains("auth: 'keys'"), "{binary}: {text}");
    }
}

#[tokio::test]
async fn otel_settings_bridle_cannot_carry_out_exit_64_naming_the_variable() {
    let (code, text) = run(
        "bridle-router",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9".into()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".into()),
        ],
    )
    .await;
    assert_eq!(code, 64, "{text}");
    assert!(
        text.contains("OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' is not a protocol"),
        "{text}"
    );
    let (code, text) = run(
        "bridle-secrets",
        &[("OTEL_TRACES_SAMPLER", "parentbased_jaeger_remote".into())],
    )
    .await;
    assert_eq!(code, 64, "{text}");
    assert!(
        text.contains("OTEL_TRACES_SAMPLER: 'parentbased_jaeger_remote'"),
        "{text}"
    );
    // The metrics listener shares no port with the service.
    let (code, text) = run(
        "bridle-approvals",
        &[
            ("BRIDLE_APPROVALS_HEALTH_LISTEN", "127.0.0.1:50999".into()),
            ("BRIDLE_APPROVALS_METRICS_LISTEN", "127.0.0.1:50999".into()),
        ],
    )
    .await;
    assert_eq!(code, 64, "{text}");
    assert!(
        text.contains("metrics_listen: 127.0.0.1:50999 uses the port of health_listen"),
        "{text}"
    );
}
