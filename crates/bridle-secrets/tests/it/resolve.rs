//! Bindings, grants, caller identity, unbound names, and Vault being down.

use bridle_core::Shutdown;
use bridle_core::auth::AuthMode;
use bridle_core::config::ServerOptions;
use bridle_proto::{Scope, SecretsEndRunRequest};
use secrecy::SecretString;
use tonic::Code;

use crate::helpers::{Broker, Env, binding, provider_scope, req, tool_scope};

fn denied(e: &tonic::Status, code: Code, want: &str, prefix: &str) {
    assert_eq!(e.code(), code, "{e:?}");
    assert_eq!(e.message(), want);
    assert!(!e.message().contains(prefix), "must not reveal a path");
}

#[tokio::test]
async fn bound_names_resolve_for_granted_scopes_only() {
    let env = Env::start().await;
    let p = env.prefix.clone();
    env.bao
        .put_kv(
            &format!("{p}/openai"),
            serde_json::json!({"value": "sk-test-1"}),
        )
        .await;
    env.bao
        .put_kv(
            &format!("{p}/db"),
            serde_json::json!({"user": "u", "password": "pw-1", "port": 5432}),
        )
        .await;
    // A binding may name its own KV v2 mount.
    env.bao
        .api(
            "POST",
            "sys/mounts/team",
            Some(serde_json::json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await
        .unwrap();
    env.bao
        .api(
            "POST",
            "team/data/x",
            Some(serde_json::json!({"data": {"value": "team-1"}})),
        )
        .await
        .unwrap();
    let b = Broker::start(env.options()).await;
    b.apply(
        "default",
        &[
            binding(
                "openai-key",
                &format!("  path: {p}/openai\n  grants: [{{provider: main/openai}}]"),
            ),
            binding(
                "db-password",
                &format!(
                    "  path: {p}/db\n  key: password\n  grants: [{{agent: analyst, tool: psql}}]"
                ),
            ),
            binding(
                "db-port",
                &format!("  path: {p}/db\n  key: port\n  grants: [{{tool: psql}}]"),
            ),
            binding(
                "team-key",
                "  mount: team\n  path: x\n  grants: [{tool: psql}]",
            ),
            binding(
                "odd-field",
                &format!("  path: {p}/db\n  key: nope\n  grants: [{{tool: psql}}]"),
            ),
            binding(
                "no-value",
                &format!("  path: {p}/absent\n  grants: [{{tool: psql}}]"),
            ),
        ]
        .concat(),
    )
    .await;
    b.apply(
        "globex",
        &binding(
            "globex-key",
            &format!("  path: {p}/openai\n  grants: [{{provider: main/openai}}]"),
        ),
    )
    .await;
    let (mut router, mut tools) = (b.client("router"), b.client("tools"));

    let r = router
        .resolve(req(
            provider_scope("default", "anyone", "main/openai"),
            &["secret://openai-key"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.secrets[0].name, "openai-key");
    assert_eq!(r.secrets[0].value, "sk-test-1");
    assert!(r.secrets[0].lease_id.is_empty());
    let ttl = r.secrets[0].ttl.unwrap();
    assert!(
        ttl.seconds > 0 && ttl.seconds <= 60,
        "bounded by cache_ttl: {ttl:?}"
    );

    let s = tool_scope("default", "analyst", "psql", "");
    let r = tools
        .resolve(req(
            s.clone(),
            &["db-password", "secret://team-key", "db-port"],
        ))
        .await
        .unwrap()
        .into_inner();
    let values: Vec<(&str, &str)> = r
        .secrets
        .iter()
        .map(|s| (s.name.as_str(), s.value.as_str()))
        .collect();
    assert_eq!(
        values,
        [
            ("db-password", "pw-1"),
            ("team-key", "team-1"),
            ("db-port", "5432")
        ]
    );

    let e = tools
        .resolve(req(
            tool_scope("default", "other", "psql", ""),
            &["db-password"],
        ))
        .await
        .unwrap_err();
    denied(
        &e,
        Code::PermissionDenied,
        "secret 'db-password' is not granted to agent 'other' using tool 'psql' (tenant 'default')",
        &p,
    );
    let e = tools
        .resolve(req(
            tool_scope("default", "analyst", "curl", ""),
            &["db-password"],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = router
        .resolve(req(
            provider_scope("default", "a", "main/anthropic"),
            &["openai-key"],
        ))
        .await
        .unwrap_err();
    denied(
        &e,
        Code::PermissionDenied,
        "secret 'openai-key' is not granted to agent 'a' using provider 'main/anthropic' (tenant 'default')",
        &p,
    );

    let e = tools
        .resolve(req(s.clone(), &["secret://nope"]))
        .await
        .unwrap_err();
    denied(
        &e,
        Code::NotFound,
        "secret 'nope' is not known to the broker",
        &p,
    );
    // Bindings belong to their tenant.
    let e = router
        .resolve(req(
            provider_scope("globex", "a", "main/openai"),
            &["openai-key"],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let r = router
        .resolve(req(
            provider_scope("globex", "a", "main/openai"),
            &["globex-key"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.secrets[0].value, "sk-test-1");

    let e = tools
        .resolve(req(s.clone(), &["odd-field"]))
        .await
        .unwrap_err();
    denied(
        &e,
        Code::FailedPrecondition,
        "secret 'odd-field' has no field 'nope'",
        &p,
    );
    let e = tools
        .resolve(req(s.clone(), &["no-value"]))
        .await
        .unwrap_err();
    denied(
        &e,
        Code::NotFound,
        "secret 'no-value' is bound, but Vault holds no value for it",
        &p,
    );
    let e = tools
        .resolve(req(s, &["secret://Bad Name"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    b.stop().await;
}

#[tokio::test]
async fn only_the_service_a_scope_belongs_to_may_resolve_for_it() {
    let env = Env::start().await;
    let p = env.prefix.clone();
    env.bao
        .put_kv(&format!("{p}/k"), serde_json::json!({"value": "v-1"}))
        .await;
    let b = Broker::start(env.options()).await;
    b.apply(
        "default",
        &binding(
            "k",
            &format!("  path: {p}/k\n  grants: [{{tool: psql}}, {{provider: main/openai}}]"),
        ),
    )
    .await;
    let tool = tool_scope("default", "a", "psql", "run-1");
    let model = provider_scope("default", "a", "main/openai");

    assert!(
        b.client("tools")
            .resolve(req(tool.clone(), &["k"]))
            .await
            .is_ok()
    );
    assert!(
        b.client("router")
            .resolve(req(model.clone(), &["k"]))
            .await
            .is_ok()
    );
    let e = b
        .client("orchestrator")
        .resolve(req(tool.clone(), &["k"]))
        .await
        .unwrap_err();
    denied(
        &e,
        Code::PermissionDenied,
        "service 'orchestrator' may not resolve secrets for tool 'psql': only the tools service may",
        &p,
    );
    let e = b
        .client("router")
        .resolve(req(tool.clone(), &["k"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = b
        .client("tools")
        .resolve(req(model.clone(), &["k"]))
        .await
        .unwrap_err();
    denied(
        &e,
        Code::PermissionDenied,
        "service 'tools' may not resolve secrets for provider 'main/openai': only the router service may",
        &p,
    );
    let bare = Scope {
        tenant: "default".into(),
        agent: "a".into(),
        ..Default::default()
    };
    let e = b
        .client("orchestrator")
        .resolve(req(bare, &["k"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("without a tool or a provider"),
        "{}",
        e.message()
    );

    let end = || SecretsEndRunRequest {
        scope: Some(tool.clone()),
    };
    let e = b.client("tools").end_run(end()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let r = b
        .client("orchestrator")
        .end_run(end())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.leases_revoked, 0);

    // With auth off and no x-bridle-service header the broker cannot tell; it lets the call
    // through (documented: only auth or mTLS makes the check an enforcement).
    assert!(b.anonymous().await.resolve(req(tool, &["k"])).await.is_ok());
    b.stop().await;
}

#[tokio::test]
async fn with_auth_on_the_caller_is_the_holder_of_the_internal_token() {
    let env = Env::start().await;
    let p = env.prefix.clone();
    env.bao
        .put_kv(&format!("{p}/k"), serde_json::json!({"value": "v-2"}))
        .await;
    let mut o = env.options();
    o.server.auth = AuthMode::Keys;
    o.server.internal_token = Some(SecretString::from(
        "internal-token-0123456789abcdef".to_string(),
    ));
    let b = Broker::start(o).await;
    b.apply(
        "default",
        &binding(
            "k",
            &format!("  path: {p}/k\n  grants: [{{provider: main/openai}}]"),
        ),
    )
    .await;
    let model = provider_scope("default", "a", "main/openai");
    let r = b
        .client("router")
        .resolve(req(model.clone(), &["k"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.secrets[0].value, "v-2");
    let e = b
        .client("tools")
        .resolve(req(model.clone(), &["k"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Saying "router" without the token is not enough.
    let ch = bridle_core::client::traced(
        "secrets",
        &b.addr,
        std::time::Duration::from_secs(10),
        bridle_core::client::Outgoing::new("router", &ServerOptions::default()),
    )
    .unwrap();
    let e = bridle_proto::secrets_client::SecretsClient::new(ch)
        .resolve(req(model, &["k"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    b.stop().await;
}

#[tokio::test]
async fn unbound_names_are_denied_or_follow_the_convention() {
    let env = Env::start().await;
    let p = env.prefix.clone();
    env.bao
        .put_kv(&format!("{p}/plain"), serde_json::json!({"value": "c-1"}))
        .await;
    let scope = tool_scope("default", "a", "py", "");

    let b = Broker::start(env.options()).await;
    let e = b
        .client("tools")
        .resolve(req(scope.clone(), &["plain"]))
        .await
        .unwrap_err();
    denied(
        &e,
        Code::NotFound,
        "secret 'plain' is not known to the broker",
        &p,
    );
    b.stop().await;

    let mut o = env.options();
    o.unbound = bridle_secrets::Unbound::Convention;
    let b = Broker::start(o).await;
    let r = b
        .client("tools")
        .resolve(req(scope.clone(), &["plain"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.secrets[0].value, "c-1");
    let e = b
        .client("tools")
        .resolve(req(scope.clone(), &["absent"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(!e.message().contains(&p));
    // The convention does not lift the service check.
    let e = b
        .client("orchestrator")
        .resolve(req(scope, &["plain"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    b.stop().await;
}

#[tokio::test]
async fn vault_down_is_unavailable_and_start_fails_clearly() {
    let mut env = Env::start().await;
    let mut o = env.options();
    o.unbound = bridle_secrets::Unbound::Convention;
    let b = Broker::start(o.clone()).await;
    env.bao.stop().await;
    let e = b
        .client("tools")
        .resolve(req(tool_scope("default", "a", "py", ""), &["secret://x"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("vault at http://127.0.0.1:"),
        "{}",
        e.message()
    );
    b.stop().await;

    // Starting against a Vault that is down fails with a message naming it.
    let err = bridle_secrets::start(o, Shutdown::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.to_string().contains(&env.bao.addr()), "{err}");
}

#[tokio::test]
async fn a_static_secret_with_a_max_use_time_is_refused_to_a_run_past_it() {
    let env = Env::start().await;
    let p = env.prefix.clone();
    env.bao
        .put_kv(&format!("{p}/api"), serde_json::json!({"value": "v-1"}))
        .await;
    let b = Broker::start(env.options()).await;
    b.apply(
        "default",
        &binding(
            "api-key",
            &format!("  path: {p}/api\n  maxUseTime: 2s\n  grants: [{{tool: curl}}]"),
        ),
    )
    .await;
    let mut tools = b.client("tools");
    let resolve = |run: &str| req(tool_scope("default", "a", "curl", run), &["api-key"]);
    let r = tools.resolve(resolve("run_a")).await.unwrap().into_inner();
    assert_eq!(r.secrets[0].value, "v-1");
    let ttl = r.secrets[0].ttl.unwrap();
    assert!(ttl.seconds <= 2, "never kept past the use time: {ttl:?}");
    // Not a timing assertion: the run's use time is over once this much has passed.
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let e = tools.resolve(resolve("run_a")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message()
            .contains("secret 'api-key' may be used for 2.0s by a run"),
        "{e:?}"
    );
    // Another run has its own time; outside any run the limit cannot be kept.
    let r = tools.resolve(resolve("run_b")).await.unwrap().into_inner();
    assert_eq!(r.secrets[0].value, "v-1");
    let e = tools.resolve(resolve("")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    b.stop().await;
}
