//! The cache: one Vault request per secret however many callers ask at once (counted in
//! OpenBao's audit log), values served for their TTL and never after, Vault down or not (on a
//! clock the test moves, so no assertion depends on the machine's speed).

use std::time::Duration;

use bridle_core::timeutil::pb_duration;
use bridle_secrets::Clock;
use tonic::Code;

use crate::helpers::{Broker, Env, binding, req, tool_scope};

#[tokio::test]
async fn concurrent_resolves_make_one_vault_read_per_secret() {
    let env = Env::start().await;
    let p = env.prefix.clone();
    env.bao
        .put_kv(&format!("{p}/a"), serde_json::json!({"value": "va"}))
        .await;
    env.bao
        .put_kv(&format!("{p}/b"), serde_json::json!({"value": "vb"}))
        .await;
    let b = Broker::start(env.options()).await;
    b.apply(
        "default",
        &[
            binding("a", &format!("  path: {p}/a\n  grants: [{{tool: py}}]")),
            binding("b", &format!("  path: {p}/b\n  grants: [{{tool: py}}]")),
        ]
        .concat(),
    )
    .await;
    // Several connections, many calls each, all at once.
    let clients: Vec<_> = (0..4).map(|_| b.client("tools")).collect();
    let calls = (0..128).map(|i| {
        let mut c = clients[i % clients.len()].clone();
        let name = if i % 2 == 0 { "a" } else { "b" };
        async move {
            let r = c
                .resolve(req(tool_scope("default", "ag", "py", ""), &[name]))
                .await
                .unwrap()
                .into_inner();
            (name, r.secrets[0].value.clone())
        }
    });
    for (name, value) in futures::future::join_all(calls).await {
        assert_eq!(value, format!("v{name}"));
    }
    assert_eq!(env.bao.reads(&format!("secret/data/{p}/a")), 1);
    assert_eq!(env.bao.reads(&format!("secret/data/{p}/b")), 1);
    // And later callers within the TTL are served from memory too.
    for _ in 0..5 {
        b.client("tools")
            .resolve(req(tool_scope("default", "ag", "py", ""), &["a", "b"]))
            .await
            .unwrap();
    }
    assert_eq!(env.bao.reads(&format!("secret/data/{p}/a")), 1);
    b.stop().await;
}

#[tokio::test]
async fn values_are_served_within_their_ttl_and_never_after_when_vault_is_down() {
    let mut env = Env::start().await;
    let p = env.prefix.clone();
    env.bao
        .put_kv(&format!("{p}/k"), serde_json::json!({"value": "kept"}))
        .await;
    let ttl = Duration::from_secs(60);
    let mut o = env.options();
    o.cache_ttl = ttl;
    // The cache's time moves only when the test says: how fast the machine is cannot decide
    // which assertions run.
    let clock = Clock::manual();
    let b = Broker::start_with_clock(o, clock.clone()).await;
    b.apply(
        "default",
        &binding("k", &format!("  path: {p}/k\n  grants: [{{tool: py}}]")),
    )
    .await;
    let mut c = b.client("tools");
    let scope = tool_scope("default", "a", "py", "");

    let first = c
        .resolve(req(scope.clone(), &["k"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.secrets[0].value, "kept");
    env.bao.stop().await;

    clock.advance(ttl - Duration::from_secs(1));
    let r = c
        .resolve(req(scope.clone(), &["k"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.secrets[0].value, "kept",
        "served from memory within its TTL"
    );
    let ns = |d: prost_types::Duration| d.seconds * 1_000_000_000 + i64::from(d.nanos);
    let (was, left) = (first.secrets[0].ttl.unwrap(), r.secrets[0].ttl.unwrap());
    assert_eq!(
        ns(was),
        ns(pb_duration(ttl)),
        "a fresh value has its whole TTL"
    );
    assert_eq!(
        ns(left),
        ns(pb_duration(Duration::from_secs(1))),
        "the caller is told what is left"
    );

    // At its expiry, not a moment later, it is no longer served.
    clock.advance(Duration::from_secs(1));
    let e = c.resolve(req(scope, &["k"])).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::Unavailable,
        "at the end of its TTL with Vault down: {e:?}"
    );
    assert!(e.message().contains("vault at "), "{}", e.message());
    b.stop().await;
}
