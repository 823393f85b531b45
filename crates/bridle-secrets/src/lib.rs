//! The secret broker: resolves `secret://<name>` references to values held in Vault or
//! OpenBao, for the scope a caller asks for.
//!
//! A name means the tenant's `SecretBinding` of that name (stored here, in Redis, through
//! `bridle.v1.Manifests`): a KV v2 entry or a dynamic engine read, granted to scopes (agent and
//! tool, or agent and model provider). Only the tools service resolves for tools and only the
//! router for providers. Dynamic secrets are leased per run: renewed while the run lives and
//! revoked at `EndRun`. Values are cached in memory for their TTL only, one Vault request per
//! secret at a time, and nothing is served past its TTL: Vault down means UNAVAILABLE.
//!
//! Values leave this service only in a `Resolve` response, toward the service that needs them.
//! It must never log a value, put one in an error message or Redis, or reveal the Vault path
//! behind a name to a caller.

mod access;
mod broker;
mod cache;
mod clock;
mod error;
mod grants;
mod leases;
mod options;
mod service;
mod vault;

use std::net::SocketAddr;
use std::sync::Arc;

use bridle_core::Shutdown;
use bridle_core::manifest::Owner;
use bridle_core::redis_util::Keys;
use bridle_proto::manifests_server::ManifestsServer;
use bridle_proto::secrets_server::SecretsServer;

pub use clock::Clock;
pub use error::Error;
pub use options::{DEFAULT_KUBERNETES_TOKEN_FILE, Options, Unbound, VaultAuth};

/// Connects to Redis and Vault (failing when either cannot be reached or Vault refuses the
/// credentials), binds, and serves on tasks owned by `shutdown`, with the token renewal beside
/// them. Returns the bound address.
pub async fn start(opts: Options, shutdown: Shutdown) -> Result<SocketAddr, bridle_core::Error> {
    start_with_clock(opts, shutdown, Clock::system()).await
}

/// [`start`] with the clock that cached values and leases expire by (a test's manual clock).
pub async fn start_with_clock(
    opts: Options,
    shutdown: Shutdown,
    clock: Clock,
) -> Result<SocketAddr, bridle_core::Error> {
    // Vault first: refused credentials or an unreachable server are the likeliest mistakes.
    let vault = vault::Vault::connect(&opts)
        .await
        .map_err(bridle_core::Error::from)?;
    let conn = bridle_core::redis_util::connect(&opts.redis_url).await?;
    bridle_core::metrics::watch_redis(conn.clone(), &shutdown);
    let probed = vault.clone();
    bridle_core::metrics::watch_dependency(
        "vault",
        move || {
            let v = probed.clone();
            async move { v.probe().await }
        },
        &shutdown,
    );
    let keys = Keys::new(&opts.key_prefix);
    vault::spawn_keeper(vault.clone(), &shutdown);
    let store = bridle_core::store::ManifestStore::new(conn.clone(), &keys, Owner::Secrets);
    let leases = leases::Leases::new(vault.clone(), conn, keys, shutdown.clone(), clock.clone());
    let grants = grants::Grants::new(vault.clone(), &opts.kv_mount, &opts.grants_prefix);
    let broker = Arc::new(broker::Broker::new(
        vault,
        store.clone(),
        leases,
        &opts,
        clock,
    ));
    let svc = service::SecretsService::new(broker, grants, opts.server.auth);
    let manifests = bridle_core::manifest_service::ManifestsService::new(store, Owner::Secrets);
    let routes = tonic::service::Routes::new(SecretsServer::new(svc))
        .add_service(ManifestsServer::new(manifests));
    bridle_core::service::spawn_grpc(
        "secrets",
        &opts.server,
        routes,
        &["bridle.v1.Secrets", "bridle.v1.Manifests"],
        &shutdown,
    )
    .await
}
