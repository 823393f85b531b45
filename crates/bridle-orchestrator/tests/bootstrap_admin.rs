//! The bootstrap admin key (the Helm chart generates it into a Secret): registered by the
//! orchestrator at start, once however many replicas start, an admin of its tenant; revoking
//! it sticks across restarts; a malformed one stops the service before it binds.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::auth::{ApiKeyStore, AuthMode};
use bridle_core::config::{Options as _, ServerOptions};
use bridle_proto as pb;
use bridle_testkit::RedisServer;

fn options(redis: &RedisServer, prefix: &str, key: &str) -> bridle_orchestrator::Options {
    bridle_orchestrator::Options {
        server: ServerOptions {
            auth: AuthMode::Keys,
            internal_token: Some("an-internal-token-for-tests".to_string().into()),
            ..ServerOptions::with_port(0)
        },
        redis_url: redis.url(),
        key_prefix: prefix.to_string(),
        workers: 1,
        bootstrap_admin_key: Some(key.to_string().into()),
        bootstrap_admin_tenant: "acme".into(),
        ..Default::default()
    }
}

async fn whoami(
    addr: std::net::SocketAddr,
    key: &str,
) -> Result<pb::WhoAmIResponse, tonic::Status> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let mut req = tonic::Request::new(pb::WhoAmIRequest::default());
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    pb::admin_client::AdminClient::new(ch)
        .who_am_i(req)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bootstrap_key_is_registered_once_and_revoking_it_sticks() {
    let redis = RedisServer::start().await.unwrap();
    let prefix = bridle_testkit::unique("boot");
    let key = format!("bk_{}", "A1b2C3d4".repeat(5));
    let shutdown = Shutdown::new();

    // Two replicas start with the same key.
    let (a, b) = tokio::join!(
        bridle_orchestrator::start(options(&redis, &prefix, &key), shutdown.clone()),
        bridle_orchestrator::start(options(&redis, &prefix, &key), shutdown.clone()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    for addr in [a, b] {
        let me = whoami(addr, &key).await.unwrap();
        assert_eq!(me.tenant, "acme", "{me:?}");
        assert!(me.roles.iter().any(|r| r == "admin"), "{me:?}");
    }
    let store = ApiKeyStore::new(
        bridle_core::redis_util::connect(&redis.url())
            .await
            .unwrap(),
        &bridle_core::redis_util::Keys::new(&prefix),
    );
    let listed = store.list(Some("acme")).await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "one record however many replicas: {listed:?}"
    );
    assert_eq!(listed[0].name, "bootstrap admin");

    // Revoked, then a replica restarts with the same key: it stays revoked.
    assert!(store.revoke(&listed[0].id).await.unwrap());
    let c = bridle_orchestrator::start(options(&redis, &prefix, &key), shutdown.clone())
        .await
        .unwrap();
    let e = whoami(c, &key).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert_eq!(store.list(Some("acme")).await.unwrap().len(), 1);
    shutdown.trigger();
}

#[test]
fn a_malformed_bootstrap_key_is_refused_by_name_without_quoting_it() {
    let mut o = bridle_orchestrator::Options {
        bootstrap_admin_key: Some("bk_short-and-secret".to_string().into()),
        ..Default::default()
    };
    o.server.internal_token = Some("an-internal-token-for-tests".to_string().into());
    let problems = o.validate().join("; ");
    assert!(
        problems.contains("bootstrap_admin_key: an API key is 'bk_' and 32 to 125 letters and digits (this one has 16 characters after the prefix, not all letters and digits)"),
        "{problems}"
    );
    assert!(!problems.contains("short-and-secret"), "{problems}");
}
