//! The orchestrator: the agent loop and the runs it drives.
//!
//! A run is state in Redis (checkpointed after every model reply, policy decision and tool
//! result) plus an event stream; its steps are tasks in a Redis Streams consumer group that any
//! number of orchestrator processes share. Each step calls the router for the model's reply,
//! the approvals service for every tool call's policy, and the tools service to run it.
//!
//! It must never lose a run, never run a completed tool call twice (calls carry an idempotency
//! key), never advance a run from two workers at once (writes are fenced by version), and
//! never resolve a secret: it holds none.

pub mod admin;
pub mod apply;
pub mod cancel;
pub mod clients;
pub mod engine;
mod error;
pub mod events;
pub mod listener;
mod mcp;
pub mod otel;

mod options;
mod pubsub;
pub mod queue;
pub mod retention;
pub mod service;
pub mod state;
pub mod store;
pub mod worker;

use std::net::SocketAddr;

use bridle_core::Shutdown;
use bridle_core::auth::{ApiKeyStore, Authenticator};
use bridle_core::manifest::Owner;
use bridle_core::redis_util::{self, Keys};
use bridle_core::store::ManifestStore;
use bridle_proto::admin_server::AdminServer;
use bridle_proto::manifests_server::ManifestsServer;
use bridle_proto::orchestrator_server::OrchestratorServer;

pub use error::Error;
pub use mcp::RESULT_TOOL;
pub use options::{DEFAULT_WORK_PARTITIONS, MAX_WORK_PARTITIONS, McpOptions, Options};

/// Registers the deployment's bootstrap admin key (idempotent: every replica does it at start).
async fn bootstrap_admin(
    store: &ApiKeyStore,
    key: &secrecy::SecretString,
    tenant: &str,
) -> Result<(), bridle_core::Error> {
    use bridle_core::auth::{Ensured, Role};
    use secrecy::ExposeSecret as _;
    match store
        .ensure(
            key.expose_secret(),
            tenant,
            "bootstrap admin",
            &[Role::Admin],
        )
        .await?
    {
        Ensured::Created(r) => {
            tracing::info!(key_id = %r.id, %tenant, "registered the bootstrap admin key");
        }
        Ensured::Already(r) => {
            tracing::debug!(key_id = %r.id, "the bootstrap admin key is registered already");
        }
        Ensured::Revoked(r) => tracing::warn!(
            key_id = %r.id,
            "the bootstrap admin key was revoked and stays revoked: remove bootstrap_admin_key \
             (or give a new key) to stop this warning"
        ),
    }
    Ok(())
}

/// Connects to Redis (failing clearly when it cannot), starts the workers and the approval
/// listener, binds and serves. Returns the bound address.
pub async fn start(opts: Options, shutdown: Shutdown) -> Result<SocketAddr, bridle_core::Error> {
    let conn = redis_util::connect(&opts.redis_url).await?;
    bridle_core::metrics::watch_redis(conn.clone(), &shutdown);
    // A counter that starts at 0, so that its first increase shows in rate() and increase().
    bridle_core::metrics::metrics()
        .queue_dead_lettered
        .add(0, &[]);
    let keys = Keys::new(&opts.key_prefix);
    let clients = clients::Clients::new(&opts)?;
    let store = store::RunStore::new(
        conn.clone(),
        keys.clone(),
        store::Lifetimes::from_options(&opts),
        opts.work_partitions,
    );
    let agents = ManifestStore::new(conn.clone(), &keys, Owner::Orchestrator);
    let api_keys = ApiKeyStore::new(conn, &keys);
    if let Some(k) = &opts.bootstrap_admin_key {
        bootstrap_admin(&api_keys, k, &opts.bootstrap_admin_tenant).await?;
    }
    let auth = Authenticator::for_people(&opts.server, api_keys.clone());
    let inflight = cancel::InFlight::default();
    let engine = engine::Engine {
        store,
        clients: clients.clone(),
        model_timeout: opts.model_timeout,
        tool_timeout: opts.tool_timeout,
    };
    shutdown.spawn(cancel::listen(
        opts.redis_url.clone(),
        engine.store.cancel_channel(),
        inflight.clone(),
        shutdown.clone(),
    ));
    let events = events::Hub::default();
    shutdown.spawn(events::listen(
        opts.redis_url.clone(),
        engine.store.events_channel(),
        events.clone(),
        shutdown.clone(),
    ));
    let consumer = opts.consumer.clone().unwrap_or_else(default_consumer);
    let consumed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(opts.work_partitions));
    worker::Workers {
        engine: engine.clone(),
        redis_url: opts.redis_url.clone(),
        consumer,
        claim_idle: opts.claim_idle,
        max_deliveries: opts.max_deliveries,
        inflight,
        workers: opts.workers,
        consumed: consumed.clone(),
    }
    .start(opts.workers, &shutdown)
    .await?;
    shutdown.spawn(listener::run(engine.clone(), shutdown.clone()));
    shutdown.spawn(worker::sample_queue(
        engine.store.clone(),
        consumed,
        shutdown.clone(),
    ));
    shutdown.spawn(retention::sweep(engine.store.clone(), shutdown.clone()));

    let svc = std::sync::Arc::new(service::OrchestratorService {
        engine,
        agents: agents.clone(),
        events,
        route_models: service::RouteModels::default(),
        shutdown: shutdown.clone(),
        caller_trace: opts.caller_trace,
    });
    mcp::spawn(svc.clone(), auth.clone(), &opts.mcp, &shutdown).await?;
    let apply = apply::ApplyService { agents, clients };
    let routes = tonic::service::Routes::new(
        OrchestratorServer::from_arc(svc).max_decoding_message_size(16 << 20),
    )
    .add_service(ManifestsServer::new(apply).max_decoding_message_size(16 << 20))
    .add_service(AdminServer::new(admin::AdminService { keys: api_keys }));
    bridle_core::service::spawn_grpc_with_auth(
        "orchestrator",
        &opts.server,
        routes,
        &[
            "bridle.v1.Orchestrator",
            "bridle.v1.Manifests",
            "bridle.v1.Admin",
        ],
        Some(auth),
        &shutdown,
    )
    .await
}

fn default_consumer() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let rand = ulid::Ulid::new().to_string();
    format!("{host}-{}-{}", std::process::id(), &rand[rand.len() - 6..])
}

#[cfg(test)]
mod tests {
    /// Replicas started without `consumer` share the work stream's consumer group: each needs
    /// a name of its own, or the workers of two processes would carry the same names and the
    /// group's per-consumer pending lists (who holds which task) would mix them. The pid alone
    /// is not enough (every pod may be pid 1), nor the host name alone (replicas may share a
    /// machine): the random part keeps them apart.
    #[test]
    fn default_consumer_names_differ_between_replicas_on_one_host_with_one_pid() {
        let names: std::collections::HashSet<String> =
            (0..100).map(|_| super::default_consumer()).collect();
        assert_eq!(names.len(), 100, "{names:?}");
    }
}
