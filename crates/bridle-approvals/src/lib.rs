//! The approvals service: decides, before any tool call runs, whether the call is allowed,
//! denied, or needs a person's approval; keeps pending approvals and their decisions in Redis;
//! streams approval events (Watch) so parked runs resume; and writes an append-only audit
//! trail of every evaluation, decision and expiry.
//!
//! Policy is Cedar over the tenant's `Policy` manifests (validated on apply), or the built-in
//! rules for a tenant with none. People decide through gRPC, the `bridle approvals` CLI or the
//! web inbox; a webhook announces every new pending approval.
//!
//! It must never let a call through that it could not decide or audit: a tool the agent was
//! not granted is denied before any policy is asked, a policy that fails to evaluate denies,
//! policies that cannot be read or a failed audit write fail the request (fail closed), and an
//! approval binds to the exact arguments it was asked for. It never logs tool arguments.

pub mod audit;
mod canonical;
pub mod cedar;
mod error;
pub mod inbox;
pub mod keys;
mod manifests;
mod options;
mod policies;
pub mod policy;
mod record;
mod service;
mod store;
mod sweeper;
mod watch;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;

use bridle_core::Shutdown;
use bridle_proto::approvals_server::ApprovalsServer;

pub use canonical::{arguments_sha256, canonical_json};
pub use error::Error;
/// For the fuzz target `cedar_policy` in `fuzz/` only: what `Manifests.Apply` checks of each
/// Policy's Cedar text, without Redis.
#[doc(hidden)]
pub use manifests::check_policies;
pub use options::{InboxOptions, OidcLogin, Options, WebhookOptions};
pub use policy::{BuiltinRules, Decision, PolicyEngine, PolicyInput, Verdict, decide};

/// Where a started service listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Started {
    pub grpc: SocketAddr,
    /// The web inbox, when `inbox.listen` is set.
    pub inbox: Option<SocketAddr>,
}

/// Starts the service with the built-in rules for tenants without policies; returns the gRPC
/// address (the shape `run_main` wants).
pub async fn start(opts: Options, shutdown: Shutdown) -> Result<SocketAddr, bridle_core::Error> {
    Ok(start_with_engine(opts, Arc::new(BuiltinRules), shutdown)
        .await?
        .grpc)
}

/// Connects to Redis (failing when it cannot be reached), binds the gRPC server and, when
/// configured, the web inbox, and serves them on tasks owned by `shutdown`, with the expiry
/// sweeper and the webhook delivery beside them. `fallback` decides for tenants that have no
/// Policy manifests.
pub async fn start_with_engine(
    opts: Options,
    fallback: Arc<dyn PolicyEngine>,
    shutdown: Shutdown,
) -> Result<Started, bridle_core::Error> {
    let store =
        store::Store::connect(&opts.redis_url, &opts.key_prefix, opts.approval_retention).await?;
    bridle_core::metrics::watch_redis(store.conn(), &shutdown);
    let keys = bridle_core::redis_util::Keys::new(&opts.key_prefix);
    let manifest_store = bridle_core::store::ManifestStore::new(
        store.conn(),
        &keys,
        bridle_core::manifest::Owner::Approvals,
    );
    let policies = Arc::new(policies::Policies::new(
        manifest_store.clone(),
        store.conn(),
        store.keys().policy_versions(),
        fallback,
    ));
    // People call this service (Decide, List, the inbox): it knows API keys.
    let auth = bridle_core::auth::Authenticator::for_people(
        &opts.server,
        bridle_core::auth::ApiKeyStore::new(store.conn(), &keys),
    );
    let svc = Arc::new(service::ApprovalsService::new(
        store.clone(),
        policies.clone(),
        opts.approval_ttl,
        opts.server.auth,
        shutdown.token(),
    ));
    let manifests = manifests::PolicyManifests::new(
        bridle_core::manifest_service::ManifestsService::new(
            manifest_store,
            bridle_core::manifest::Owner::Approvals,
        ),
        policies,
    );
    // The inbox binds first: once the gRPC address is written (what supervisors and tests wait
    // for), the inbox's is too.
    let inbox = inbox::spawn(
        inbox::Inbox::new(svc.clone(), auth.clone(), &opts.inbox),
        &opts.inbox,
        &shutdown,
    )
    .await?;
    let routes = tonic::service::Routes::new(ApprovalsServer::from_arc(svc)).add_service(
        bridle_proto::manifests_server::ManifestsServer::new(manifests),
    );
    let grpc = bridle_core::service::spawn_grpc_with_auth(
        "approvals",
        &opts.server,
        routes,
        &["bridle.v1.Approvals", "bridle.v1.Manifests"],
        Some(auth),
        &shutdown,
    )
    .await?;
    webhook::spawn(
        &store,
        &opts.webhook,
        opts.inbox.public_url.clone(),
        &shutdown,
    )
    .await?;
    let audit = audit::AuditLog::new(store.conn(), &keys);
    sweeper::spawn(
        store,
        audit,
        opts.sweep_interval,
        opts.audit_retention,
        opts.approval_retention,
        &shutdown,
    );
    Ok(Started { grpc, inbox })
}
