//! The Bridle model router: serves `bridle.v1.Router` (Complete, CompleteStream, ListModels)
//! and `bridle.v1.Manifests` for ModelRoutes over gRPC, and, with `http_listen`, HTTP gateway
//! fronts compatible with OpenAI's Chat Completions and Anthropic's Messages.
//!
//! A call names a ModelRoute of the caller's tenant. The router checks the call's rate limits
//! (shared by every replica through Redis), orders the route's targets by its strategy
//! (fallback, weighted, least latency, cheapest), skips targets whose circuit breaker is open,
//! resolves each target's `secret://` key through the secrets broker for the caller's scope,
//! calls the provider (OpenAI Chat Completions and compatible servers including Azure
//! OpenAI, Anthropic Messages, or the scripted provider that replays turns written in the
//! manifest), retries transient failures with backoff, fails over, and returns the normalized
//! message with every attempt, the token usage and the cost.
//!
//! It must never log a key or put one in an error, Redis, an attempt or a span; never report
//! an unknown cost as zero; never fail over a stream after its first delta; never let a
//! request past its limits reach a provider; and never pass a scripted reply off as a model's.

mod budgets;
mod dispatch;
mod engine;
mod error;
mod gateway;
mod health;
mod keys;
mod limits;
mod manifests;
mod options;
pub mod prices;
mod provider;
mod request;
mod retry;
mod routes;
mod select;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::auth::{ApiKeyStore, Authenticator};
use bridle_core::config::Options as _;
use bridle_core::manifest::Owner;
use bridle_core::manifest_service::ManifestsService;
use bridle_core::redis_util::{self, Keys};
use bridle_core::store::ManifestStore;
use bridle_proto::manifests_server::ManifestsServer;
use bridle_proto::router_server::RouterServer;
use bridle_proto::secrets_client::SecretsClient;

pub use error::{Error, FailureCode};
/// For the fuzz targets in `fuzz/` only: the gateway's request parsing and the SSE parser.
#[doc(hidden)]
pub use gateway::fuzzing;
pub use options::Options;

/// Where a started router listens.
#[derive(Clone, Copy, Debug)]
pub struct Listening {
    pub grpc: SocketAddr,
    /// The HTTP gateway fronts, when `http_listen` is set.
    pub http: Option<SocketAddr>,
}

/// Connects to Redis (failing when it cannot), binds, and serves on tasks owned by `shutdown`.
/// The secrets broker is connected lazily, so the services can start in any order. Returns the
/// bound gRPC address.
pub async fn start(opts: Options, shutdown: Shutdown) -> Result<SocketAddr, bridle_core::Error> {
    Ok(start_all(opts, shutdown).await?.grpc)
}

/// [`start`], returning the HTTP front's address too.
pub async fn start_all(opts: Options, shutdown: Shutdown) -> Result<Listening, bridle_core::Error> {
    let problems = opts.validate();
    if !problems.is_empty() {
        return Err(bridle_core::Error::Config(problems.join("; ")));
    }
    // Read before anything connects: a bad table stops the router here, exiting 64.
    let prices = Arc::new(
        prices::Prices::load(opts.prices_file.as_deref()).map_err(bridle_core::Error::Config)?,
    );
    tracing::info!(
        models = prices.entries().len(),
        prices_file = opts.prices_file.as_ref().map(|p| p.display().to_string()),
        "price table read"
    );
    let conn = redis_util::connect(&opts.redis_url).await?;
    bridle_core::metrics::watch_redis(conn.clone(), &shutdown);
    let keys = Keys::new(&opts.key_prefix);
    let store = ManifestStore::new(conn.clone(), &keys, Owner::Router);
    let secrets = bridle_core::client::traced(
        "secrets",
        &opts.secrets_url,
        Duration::from_secs(10),
        bridle_core::client::Outgoing::new("router", &opts.server),
    )?;
    let resolver = keys::KeyResolver::new(SecretsClient::new(secrets), opts.key_cache_ttl);
    // A provider's redirect is not followed: reqwest drops only `authorization` on a redirect
    // to another host, and Anthropic's `x-api-key` or Azure's `api-key` would go along.
    let http = bridle_core::http_client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("bridle-router/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| bridle_core::Error::Config(format!("http client: {e}")))?;
    // A counter that starts at 0, so that its first increase shows in rate() and increase().
    bridle_core::metrics::metrics().budget_warnings.add(0, &[]);
    let budgets = budgets::Budgets::new(
        store.clone(),
        opts.route_cache_ttl,
        conn.clone(),
        &keys,
        http.clone(),
        shutdown.clone(),
        opts.budget_max_output_tokens,
    );
    let engine = engine::Engine::new(
        http,
        resolver,
        health::Health::new(health::BreakerConfig {
            failures: opts.breaker_failures,
            cooldown: opts.breaker_cooldown,
        }),
        engine::EngineConfig {
            try_timeout: opts.try_timeout,
            call_timeout: opts.call_timeout,
            max_retries: opts.max_retries,
            retry_base_delay: opts.retry_base_delay,
            retry_max_delay: opts.retry_max_delay,
        },
        prices.clone(),
    );
    let limiter = limits::Limiter::new(conn.clone(), &keys, opts.limit_defaults());
    let dispatch = Arc::new(dispatch::Dispatcher::new(
        routes::Routes::new(store.clone(), opts.route_cache_ttl),
        engine,
        limiter,
        budgets,
        shutdown.clone(),
        opts.max_request_bytes,
    ));
    // People and applications call the router too (ListModels, the gateway): it knows API
    // keys as well as the services' internal token.
    let auth = Authenticator::for_people(&opts.server, ApiKeyStore::new(conn, &keys));
    let routes = tonic::service::Routes::new(RouterServer::new(service::RouterService::new(
        dispatch.clone(),
    )))
    .add_service(ManifestsServer::new(manifests::RouteManifests::new(
        ManifestsService::new(store, Owner::Router),
        prices,
    )));
    let grpc = bridle_core::service::spawn_grpc_with_auth(
        "router",
        &opts.server,
        routes,
        &["bridle.v1.Router", "bridle.v1.Manifests"],
        Some(auth.clone()),
        &shutdown,
    )
    .await?;
    let http = match opts.http_listen {
        Some(listen) => Some(
            gateway::spawn(
                listen,
                opts.http_addr_file.clone(),
                opts.http_header_read_timeout,
                gateway::Gateway {
                    dispatch,
                    auth,
                    max_body: opts.max_request_bytes,
                    body_timeout: opts.http_body_read_timeout,
                },
                &shutdown,
            )
            .await?,
        ),
        None => None,
    };
    Ok(Listening { grpc, http })
}
