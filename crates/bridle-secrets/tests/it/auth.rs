//! The broker's own Vault login: AppRole and token, with short TTLs so renewal and re-login
//! happen during the test. (Kubernetes auth needs an API server to review the JWT; its options
//! are unit-tested only.)

use std::time::{Duration, Instant};

use bridle_core::Shutdown;
use secrecy::SecretString;
use tonic::Code;

use crate::helpers::{Bao, Broker, Env, binding, req, tool_scope};

const POLICY: &str = r#"path "secret/data/*" { capabilities = ["read"] }"#;

/// An AppRole whose tokens live `ttl` and at most `max`; returns (role_id, secret_id).
async fn approle(bao: &Bao, ttl: &str, max: &str) -> (String, String) {
    bao.api(
        "POST",
        "sys/auth/approle",
        Some(serde_json::json!({"type": "approle"})),
    )
    .await
    .unwrap();
    bao.api(
        "POST",
        "sys/policies/acl/bridle",
        Some(serde_json::json!({"policy": POLICY})),
    )
    .await
    .unwrap();
    bao.api(
        "POST",
        "auth/approle/role/broker",
        Some(serde_json::json!({"token_ttl": ttl, "token_max_ttl": max, "token_policies": ["bridle"]})),
    )
    .await
    .unwrap();
    let rid = bao
        .api("GET", "auth/approle/role/broker/role-id", None)
        .await
        .unwrap();
    let sid = bao
        .api("POST", "auth/approle/role/broker/secret-id", None)
        .await
        .unwrap();
    (
        rid["data"]["role_id"].as_str().unwrap().to_string(),
        sid["data"]["secret_id"].as_str().unwrap().to_string(),
    )
}

/// Resolves `name` every 250ms for `span`; every call must succeed.
async fn keep_resolving(b: &Broker, name: &str, want: &str, span: Duration) -> usize {
    let mut c = b.client("tools");
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < span {
        let r = c
            .resolve(req(tool_scope("default", "a", "py", ""), &[name]))
            .await
            .unwrap_or_else(|e| panic!("resolve #{n} after {:?}: {e:?}", start.elapsed()));
        assert_eq!(r.into_inner().secrets[0].value, want);
        n += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    n
}

#[tokio::test]
async fn approle_tokens_are_renewed_and_the_broker_logs_in_again_past_max_ttl() {
    let env = Env::start().await;
    let p = env.prefix.clone();
    env.bao
        .put_kv(&format!("{p}/k"), serde_json::json!({"value": "ar-1"}))
        .await;
    // Tokens live 4s and at most 10s: renewed at ~2.7s, capped, then a new login.
    let (role_id, secret_id) = approle(&env.bao, "4s", "10s").await;
    let dir = tempfile::tempdir().unwrap();
    let sid_file = dir.path().join("secret-id");
    std::fs::write(&sid_file, format!("{secret_id}\n")).unwrap();
    let mut o = env.options();
    o.vault_auth = bridle_secrets::VaultAuth::Approle;
    o.vault_token = None;
    o.vault_approle_role_id = role_id;
    o.vault_approle_secret_id_file = Some(sid_file);
    o.cache_ttl = Duration::ZERO; // every resolve reads Vault with the broker's token
    let b = Broker::start(o).await;
    b.apply(
        "default",
        &binding("k", &format!("  path: {p}/k\n  grants: [{{tool: py}}]")),
    )
    .await;

    let n = keep_resolving(&b, "k", "ar-1", Duration::from_secs(22)).await;
    assert!(n > 20, "{n}");
    assert!(
        env.bao.reads(&format!("secret/data/{p}/k")) >= n,
        "each resolve read Vault (cache_ttl 0)"
    );
    let renewals = env.bao.requests("auth/token/renew-self");
    let logins = env.bao.requests("auth/approle/login");
    println!("{n} resolves, {renewals} renewals, {logins} logins");
    assert!(renewals >= 1, "the token was renewed ({renewals})");
    assert!(
        logins >= 2,
        "logged in again past max_ttl ({logins} logins)"
    );
    b.stop().await;
}

#[tokio::test]
async fn a_given_token_is_renewed_before_it_expires() {
    let env = Env::start().await;
    let p = env.prefix.clone();
    env.bao
        .put_kv(&format!("{p}/k"), serde_json::json!({"value": "tk-1"}))
        .await;
    env.bao
        .api(
            "POST",
            "sys/policies/acl/bridle",
            Some(serde_json::json!({"policy": POLICY})),
        )
        .await
        .unwrap();
    let t = env
        .bao
        .api(
            "POST",
            "auth/token/create",
            Some(serde_json::json!({"policies": ["bridle"], "ttl": "4s", "explicit_max_ttl": "5m", "renewable": true})),
        )
        .await
        .unwrap();
    let mut o = env.options();
    o.vault_token = Some(SecretString::from(
        t["auth"]["client_token"].as_str().unwrap().to_string(),
    ));
    o.cache_ttl = Duration::ZERO;
    let b = Broker::start(o).await;
    b.apply(
        "default",
        &binding("k", &format!("  path: {p}/k\n  grants: [{{tool: py}}]")),
    )
    .await;
    // Three TTLs: without renewal the token would be dead after the first.
    keep_resolving(&b, "k", "tk-1", Duration::from_secs(12)).await;
    let renewals = env.bao.requests("auth/token/renew-self");
    assert!(
        renewals >= 2,
        "renewed at two thirds of each TTL ({renewals})"
    );
    b.stop().await;
}

#[tokio::test]
async fn refused_credentials_fail_the_start_without_echoing_them() {
    let env = Env::start().await;
    let (role_id, _) = approle(&env.bao, "1m", "10m").await;
    let mut o = env.options();
    o.vault_auth = bridle_secrets::VaultAuth::Approle;
    o.vault_approle_role_id = role_id;
    o.vault_approle_secret_id = Some(SecretString::from("not-the-secret-id-42".to_string()));
    let e = bridle_secrets::start(o, Shutdown::new()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.to_string().contains("AppRole login was refused"), "{e}");
    assert!(!e.to_string().contains("not-the-secret-id-42"), "{e}");

    let mut o = env.options();
    o.vault_token = Some(SecretString::from("hvs.not-a-token".to_string()));
    let e = bridle_secrets::start(o, Shutdown::new()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(
        e.to_string().contains("the broker's token was refused"),
        "{e}"
    );
    assert!(!e.to_string().contains("hvs.not-a-token"), "{e}");
}
