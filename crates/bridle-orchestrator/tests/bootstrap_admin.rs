//! The bootstrap admin key (the Helm chart generates it into a Secret): registered by the
//! orchestrator at start, once however many replicas start, an admin of its tenant; revoking
//! it sticks across restarts; a malformed one stops the service before it binds. And the keys
//! an admin makes: their expiry, rotation without downtime, and who made and revoked them.

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

async fn admin(
    addr: std::net::SocketAddr,
) -> pb::admin_client::AdminClient<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    pb::admin_client::AdminClient::new(ch)
}

fn with_key<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

async fn whoami(
    addr: std::net::SocketAddr,
    key: &str,
) -> Result<pb::WhoAmIResponse, tonic::Status> {
    admin(addr)
        .await
        .who_am_i(with_key(key, pb::WhoAmIRequest::default()))
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

#[tokio::test(flavor = "multi_thread")]
async fn keys_expire_rotate_without_downtime_and_record_who_made_and_revoked_them() {
    let redis = RedisServer::start().await.unwrap();
    let prefix = bridle_testkit::unique("keys");
    let boss = format!("bk_{}", "Z9y8X7w6".repeat(5));
    let shutdown = Shutdown::new();
    let addr = bridle_orchestrator::start(options(&redis, &prefix, &boss), shutdown.clone())
        .await
        .unwrap();
    let boss_id = whoami(addr, &boss).await.unwrap().id;
    let mut a = admin(addr).await;
    let create = |expires: Option<Duration>| pb::CreateApiKeyRequest {
        tenant: String::new(),
        name: "ci deployer".into(),
        roles: vec!["operator".into()],
        expires_in: expires.map(bridle_core::timeutil::pb_duration),
    };

    // A life under a minute is refused; a longer one is recorded, with who made the key.
    let e = a
        .create_api_key(with_key(&boss, create(Some(Duration::from_secs(30)))))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("expires_in"), "{e:?}");
    let made = a
        .create_api_key(with_key(&boss, create(Some(Duration::from_secs(3600)))))
        .await
        .unwrap()
        .into_inner();
    let old = made.key.unwrap();
    assert_eq!(old.created_by, boss_id);
    let left = old.expires_at.unwrap().seconds - old.created_at.unwrap().seconds;
    assert!((3599..=3601).contains(&left), "{left}");

    // Rotated with an overlap: both keys work meanwhile; the new one says what it replaced.
    let r = a
        .rotate_api_key(with_key(
            &boss,
            pb::RotateApiKeyRequest {
                id: old.id.clone(),
                overlap: Some(bridle_core::timeutil::pb_duration(Duration::from_secs(600))),
                expires_in: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let new = r.key.unwrap();
    assert_eq!(
        (
            new.name.as_str(),
            new.rotated_from.as_str(),
            new.tenant.as_str()
        ),
        ("ci deployer", old.id.as_str(), "acme")
    );
    assert!(new.expires_at.is_none());
    let old_ends = r.old.unwrap().expires_at.unwrap().seconds;
    assert!(
        old_ends < old.expires_at.unwrap().seconds,
        "the overlap shortened the old key's life"
    );
    assert_eq!(whoami(addr, &made.secret).await.unwrap().id, old.id);
    assert_eq!(whoami(addr, &r.secret).await.unwrap().id, new.id);

    // Rotated with no overlap: the new key works and the one it replaced does not (a key not
    // used before the rotation, so no replica holds it in its short cache).
    let r2 = a
        .rotate_api_key(with_key(
            &boss,
            pb::RotateApiKeyRequest {
                id: new.id.clone(),
                overlap: None,
                expires_in: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let fresh = a
        .create_api_key(with_key(&boss, create(None)))
        .await
        .unwrap()
        .into_inner();
    let r3 = a
        .rotate_api_key(with_key(
            &boss,
            pb::RotateApiKeyRequest {
                id: fresh.key.unwrap().id,
                overlap: None,
                expires_in: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let e = whoami(addr, &fresh.secret).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("expired"), "{e:?}");
    whoami(addr, &r3.secret).await.unwrap();
    whoami(addr, &r2.secret).await.unwrap();
    // An expired key cannot be rotated again.
    let e = a
        .rotate_api_key(with_key(
            &boss,
            pb::RotateApiKeyRequest {
                id: r3.old.unwrap().id,
                overlap: None,
                expires_in: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // Revoking records who did.
    let id = r2.key.unwrap().id;
    a.revoke_api_key(with_key(&boss, pb::RevokeApiKeyRequest { id: id.clone() }))
        .await
        .unwrap();
    let listed = a
        .list_api_keys(with_key(&boss, pb::ListApiKeysRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .keys;
    let k = listed.iter().find(|k| k.id == id).unwrap();
    assert!(k.revoked);
    assert_eq!(k.revoked_by, boss_id);
    shutdown.trigger();
}
