//! Dynamic secrets with real leases: OpenBao's database engine making users in a real Redis
//! (redis-database-plugin), and its PKI engine with `generate_lease`.

use std::time::Duration;

use bridle_proto::SecretsEndRunRequest;
use tonic::Code;

use crate::helpers::{Bao, Broker, Env, binding, req, tool_scope};

/// Whether `user`/`pass` can log in to the Redis at `port`.
async fn can_log_in(port: u16, user: &str, pass: &str) -> bool {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("AUTH")
        .arg(user)
        .arg(pass)
        .query_async::<String>(&mut c)
        .await
        .is_ok()
}

async fn lease_alive(bao: &Bao, lease_id: &str) -> bool {
    bao.api(
        "PUT",
        "sys/leases/lookup",
        Some(serde_json::json!({ "lease_id": lease_id })),
    )
    .await
    .is_ok()
}

async fn end_run(b: &Broker, run: &str) -> u32 {
    b.client("orchestrator")
        .end_run(SecretsEndRunRequest {
            scope: Some(tool_scope("default", "a", "", run)),
        })
        .await
        .unwrap()
        .into_inner()
        .leases_revoked
}

#[tokio::test]
async fn database_credentials_are_leased_per_run_renewed_while_it_lives_and_revoked_at_its_end() {
    let env = Env::start().await;
    let port = env.redis.port();
    // The database engine administers the test's Redis through an ACL user of its own.
    let mut admin = env.redis.client().await.unwrap();
    let _: String = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("vaultadmin")
        .arg("on")
        .arg(">admin-pw-1")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .unwrap();
    let bao = &env.bao;
    bao.api(
        "POST",
        "sys/mounts/db",
        Some(serde_json::json!({"type": "database"})),
    )
    .await
    .unwrap();
    bao.api(
        "POST",
        "db/config/r",
        Some(serde_json::json!({
            "plugin_name": "redis-database-plugin", "host": "127.0.0.1", "port": port,
            "username": "vaultadmin", "password": "admin-pw-1", "allowed_roles": "*", "tls": false,
        })),
    )
    .await
    .unwrap();
    // Leases of 6s: several renewals happen within the test.
    bao.api(
        "POST",
        "db/roles/dyn",
        Some(serde_json::json!({
            "db_name": "r", "creation_statements": "[\"+@read\"]", "default_ttl": "6s", "max_ttl": "10m",
        })),
    )
    .await
    .unwrap();
    let b = Broker::start(env.options()).await;
    let spec = |key: &str| {
        format!("  engine: dynamic\n  path: db/creds/dyn\n  key: {key}\n  grants: [{{tool: psql}}]")
    };
    b.apply(
        "default",
        &[
            binding("db-user", &spec("username")),
            binding("db-pass", &spec("password")),
        ]
        .concat(),
    )
    .await;
    let mut tools = b.client("tools");
    let resolve = |run: &str| {
        req(
            tool_scope("default", "a", "psql", run),
            &["db-user", "db-pass"],
        )
    };

    // One read, one lease for both names of the run.
    let a = tools
        .resolve(resolve("run-a"))
        .await
        .unwrap()
        .into_inner()
        .secrets;
    assert!(
        !a[0].lease_id.is_empty() && a[0].lease_id == a[1].lease_id,
        "{:?}",
        a[0].lease_id
    );
    assert!(a[0].lease_id.starts_with("db/creds/dyn/"));
    let (user_a, pass_a, lease_a) = (
        a[0].value.clone(),
        a[1].value.clone(),
        a[0].lease_id.clone(),
    );
    assert!(
        can_log_in(port, &user_a, &pass_a).await,
        "the credentials are real"
    );
    let again = tools
        .resolve(resolve("run-a"))
        .await
        .unwrap()
        .into_inner()
        .secrets;
    assert_eq!(again[0].value, user_a, "the run keeps its credentials");
    // Another run gets its own.
    let bb = tools
        .resolve(resolve("run-b"))
        .await
        .unwrap()
        .into_inner()
        .secrets;
    assert_ne!(bb[0].value, user_a);
    assert_eq!(bao.requests("db/creds/dyn"), 2, "one read per run");

    // Three lease durations later the leases live: the broker renewed them.
    tokio::time::sleep(Duration::from_secs(18)).await;
    assert!(
        lease_alive(bao, &lease_a).await,
        "renewed while the run lives"
    );
    assert!(can_log_in(port, &user_a, &pass_a).await);
    assert!(
        bao.requests("sys/leases/renew") >= 4,
        "{}",
        bao.requests("sys/leases/renew")
    );

    // The run ends: its lease is revoked, and the database user is gone.
    assert_eq!(end_run(&b, "run-a").await, 1);
    assert!(!lease_alive(bao, &lease_a).await, "revoked at run end");
    assert!(
        !can_log_in(port, &user_a, &pass_a).await,
        "the user was dropped"
    );
    assert!(
        can_log_in(port, &bb[0].value, &bb[1].value).await,
        "other runs keep theirs"
    );
    assert_eq!(
        end_run(&b, "run-a").await,
        0,
        "ending twice revokes nothing more"
    );

    // Any replica can end a run: the leases are recorded in Redis.
    let other = Broker::start(env.options()).await;
    assert_eq!(end_run(&other, "run-b").await, 1);
    assert!(!can_log_in(port, &bb[0].value, &bb[1].value).await);

    // A dynamic secret belongs to a run.
    let e = tools.resolve(resolve("")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("can only be resolved within a run"),
        "{}",
        e.message()
    );
    other.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn certificates_issued_by_a_post_are_leased_and_revoked_at_run_end() {
    let env = Env::start().await;
    let bao = &env.bao;
    bao.api(
        "POST",
        "sys/mounts/pki",
        Some(serde_json::json!({"type": "pki", "config": {"max_lease_ttl": "2h"}})),
    )
    .await
    .unwrap();
    bao.api(
        "POST",
        "pki/root/generate/internal",
        Some(serde_json::json!({"common_name": "bridle-test-ca", "ttl": "2h"})),
    )
    .await
    .unwrap();
    bao.api(
        "POST",
        "pki/roles/web",
        Some(serde_json::json!({"allow_any_name": true, "generate_lease": true, "max_ttl": "1h"})),
    )
    .await
    .unwrap();
    let b = Broker::start(env.options()).await;
    b.apply(
        "default",
        &binding(
            "web-cert",
            "  engine: dynamic\n  path: pki/issue/web\n  method: POST\n  body: {common_name: web.example.com, ttl: 10m}\n  key: certificate\n  grants: [{tool: deploy}]",
        ),
    )
    .await;
    let r = b
        .client("tools")
        .resolve(req(
            tool_scope("default", "a", "deploy", "run-c"),
            &["web-cert"],
        ))
        .await
        .unwrap()
        .into_inner();
    let s = &r.secrets[0];
    assert!(
        s.value.starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        &s.value[..40]
    );
    assert!(s.lease_id.starts_with("pki/issue/web/"), "{}", s.lease_id);
    assert!(lease_alive(bao, &s.lease_id).await);
    assert_eq!(end_run(&b, "run-c").await, 1);
    assert!(!lease_alive(bao, &s.lease_id).await, "revoked at run end");
    b.stop().await;
}
