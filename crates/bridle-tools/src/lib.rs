//! The tool service: the registry of each tenant's tools (their `Tool` manifests, served
//! through `bridle.v1.Manifests`) and their execution (`bridle.v1.Tools`). `container` and
//! `code` tools run in hardened, network-less, unprivileged Docker sandboxes, one set per
//! run (taken from warm pools, destroyed when the run ends) around the run's workspace;
//! `http` tools make one request from this service; `mcp` tools call the tools of MCP
//! servers (in a sandbox, a configured local process, or streamable HTTP). Egress is allowed
//! per tool through this service's proxy only. Arguments are validated against the tool's
//! JSON Schema before anything runs; a call with an idempotency key runs at most once.
//!
//! This service must never run a tool whose arguments failed validation, never create a
//! sandbox outside [`sandbox::container::Factory::create`] and its backend (Docker's builds
//! each container through [`sandbox::config::build`], where privileged mode, added
//! capabilities and the Docker socket are refused), never hand a sandbox or workspace of one
//! run to another run or tenant, never let a sandbox reach the network except through its
//! allowlist, never log or store a secret value, and never return a tool's output without
//! first scrubbing the secrets that call resolved.

pub mod affinity;
mod args;
pub mod egress;
mod error;
mod exec;
mod idempotency;
mod kinds;
mod manifests;
pub mod mcp;
mod options;
mod quota;
mod registry;
pub mod sandbox;
mod secrets;
mod service;
mod user;
pub mod workspace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::manifest::Owner;
use bridle_core::manifest_service::ManifestsService;
use bridle_core::redis_util::{self, Keys};
use bridle_core::store::ManifestStore;
use bridle_proto::manifests_server::ManifestsServer;
use bridle_proto::secrets_client::SecretsClient;
use bridle_proto::tools_server::ToolsServer;

pub use error::Error;
pub use options::Options;

/// Connects to Redis (failing when it cannot be reached), binds, and serves on a task owned
/// by `shutdown`. Docker being down is not fatal: only container tools need it, and they
/// report UNAVAILABLE until the engine answers. Returns the bound address.
pub async fn start(opts: Options, shutdown: Shutdown) -> Result<SocketAddr, bridle_core::Error> {
    let conn = redis_util::connect(&opts.redis_url).await?;
    bridle_core::metrics::watch_redis(conn.clone(), &shutdown);
    let keys = Keys::new(&opts.key_prefix);
    let store = ManifestStore::new(conn.clone(), &keys, Owner::Tools);
    let quotas = opts.quotas().map_err(bridle_core::Error::internal)?;
    let snapshot_max = opts.snapshot_max().map_err(bridle_core::Error::internal)?;
    let replicas = affinity::Replicas::new(conn.clone(), keys.clone(), opts.replica_lease);
    let outgoing = bridle_core::client::Outgoing::new("tools", &opts.server);
    let affinity = affinity::Affinity::new(
        replicas.clone(),
        opts.run_idle_ttl,
        outgoing.clone(),
        opts.server.request_timeout,
    );

    let engine = Arc::new(sandbox::Engine::new(opts.docker_host.clone()));
    let runtimes = Arc::new(opts.runtimes());
    match engine.client().await {
        Ok(_) => {
            tracing::info!(docker = engine.shown(), "connected to the docker engine");
            sandbox::checks::at_start(&engine, &runtimes, &opts.sandbox_limits_unenforced).await?;
        }
        Err(e) => tracing::warn!(
            "{e}; starting anyway: sandboxed tools will fail with UNAVAILABLE until the engine answers"
        ),
    }
    let cleanup = sandbox::Cleanup::new(shutdown.clone());
    // The one place the engine is chosen: everything else makes and removes sandboxes
    // through the backend.
    let backend: Arc<dyn sandbox::Backend> =
        sandbox::docker::DockerBackend::new(engine.clone(), cleanup.clone());
    cleanup.sweep_on_shutdown(backend.clone(), opts.server.grace_period);

    let instance = ulid::Ulid::new().to_string().to_lowercase();
    let workspaces = workspace::Workspaces::create(
        &opts.workspace_root(),
        &instance,
        shutdown.clone(),
        workspace::HostIds {
            sandbox: opts.sandbox_host_uid,
            engine_gid: opts.engine_gid,
        },
        opts.workspace_mode,
    )
    .map_err(|e| bridle_core::Error::internal(e.to_string()))?;
    let warm_pools = workspaces.reaches_started_sandboxes();
    let orphans = Orphans {
        ns: opts.label_namespace.clone(),
        instance: instance.clone(),
        grace: opts.orphan_grace,
    };
    let factory = Arc::new(sandbox::container::Factory {
        backend: backend.clone(),
        workspaces: workspaces.clone(),
        cleanup: cleanup.clone(),
        label_namespace: opts.label_namespace.clone(),
        instance,
        agentless: Default::default(),
    });
    let pool = sandbox::pool::Pool::new(
        factory.clone(),
        opts.pool_max_warm,
        opts.pool_parallel_starts,
        opts.pool_idle_ttl,
    );
    let snapshots = affinity::snapshot::Snapshots::new(
        replicas.clone(),
        snapshot_max,
        opts.workspace_snapshot_max.clone(),
        opts.run_idle_ttl,
    );
    let sandboxes =
        sandbox::runs::Sandboxes::new(factory, pool, opts.run_idle_ttl, quotas, snapshots);

    // Trace context and this service's identity (its mTLS certificate, or the internal token
    // and name) on every call: the broker resolves tool scopes for the tools service only.
    let channel = bridle_core::client::traced(
        "secrets",
        &opts.secrets_url,
        Duration::from_secs(30),
        outgoing,
    )?;
    let egress = Arc::new(
        opts.egress_platform()
            .map_err(bridle_core::Error::internal)?,
    );
    egress
        .keep_resolved(Duration::from_secs(60), &shutdown)
        .await;
    let exec = Arc::new(exec::Executor {
        registry: registry::Registry::new(store.clone()),
        oauth: mcp::oauth::OAuth::new(
            conn.clone(),
            keys.clone(),
            SecretsClient::new(channel.clone()),
            egress.clone(),
            opts.server.request_timeout,
        ),
        idempotency: idempotency::Idempotency::new(conn, keys, opts.idempotency_ttl, replicas),
        backend: backend.clone(),
        secrets: SecretsClient::new(channel),
        run_secrets: secrets::RunSecrets::new(opts.run_idle_ttl),
        label_namespace: opts.label_namespace.clone(),
        cleanup: cleanup.clone(),
        sandboxes: sandboxes.clone(),
        mcp: mcp::Mcp::new(
            opts.mcp_local_servers.clone(),
            opts.mcp_init_timeout,
            opts.mcp_tools_ttl,
        ),
        egress: egress.clone(),
        runtimes: runtimes.clone(),
    });
    background(
        &shutdown,
        &exec,
        &cleanup,
        workspaces,
        opts.server.grace_period,
        orphans,
        &affinity,
    );
    let routes = tonic::service::Routes::new(ToolsServer::new(service::ToolsService::new(
        exec,
        opts.server.auth,
        affinity.clone(),
    )))
    .add_service(ManifestsServer::new(manifests::ToolManifests {
        inner: ManifestsService::new(store, Owner::Tools),
        quotas,
        egress: egress.clone(),
        runtimes,
        backend,
        warm_pools,
    }));
    if opts.server.listen.port() != 0 {
        egress.protect_own_port(opts.server.listen.port());
    }
    let addr = bridle_core::service::spawn_grpc(
        "tools",
        &opts.server,
        routes,
        &["bridle.v1.Tools", "bridle.v1.Manifests"],
        &shutdown,
    )
    .await?;
    egress.protect_own_port(addr.port());
    let advertise = opts.advertise(addr, std::env::var("POD_IP").ok().as_deref());
    match &advertise {
        Some(url) => {
            tracing::info!(replica = %affinity.me(), advertise = %url, "tools replica announced")
        }
        None => tracing::warn!(
            replica = %affinity.me(),
            "listening on every address with neither advertise_url nor POD_IP: other tools replicas cannot forward a run's calls here (fine with one replica)"
        ),
    }
    affinity.register(advertise).await?;
    Ok(addr)
}

/// Which stopped sandboxes the reaper may take as abandoned by other instances.
struct Orphans {
    ns: String,
    instance: String,
    grace: Duration,
}

/// The reaper (idle runs, unused pools, other instances' abandoned sandboxes) and the shutdown
/// sequence: warm and idle sandboxes
/// and MCP sessions go at once, busy ones when their calls end (or the grace period nearly
/// has), then the workspaces.
fn background(
    shutdown: &Shutdown,
    exec: &Arc<exec::Executor>,
    cleanup: &sandbox::Cleanup,
    workspaces: workspace::Workspaces,
    grace: Duration,
    orphans: Orphans,
    affinity: &affinity::Affinity,
) {
    // The replica's announcement, renewed until the end of shutdown (calls draining may still
    // be forwarded here), then withdrawn so its runs move at once.
    let replicas = affinity.replicas.clone();
    shutdown.spawn(async move {
        let mut tick = tokio::time::interval(replicas.lease() / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            if replicas.retired() {
                break;
            }
            if let Err(e) = replicas.heartbeat().await {
                tracing::warn!(error = %e, "cannot renew this tools replica's lease");
            }
        }
    });
    let (sd, ex, ws) = (shutdown.clone(), exec.clone(), workspaces.clone());
    shutdown.spawn(async move {
        // The first tick is at once: a restarted instance clears what its predecessor left.
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                () = sd.triggered() => break,
                _ = tick.tick() => {
                    ex.sandboxes.reap().await;
                    ex.run_secrets.reap();
                    ws.sweep_dead().await;
                    ex.backend
                        .sweep_orphans(&orphans.ns, &orphans.instance, orphans.grace)
                        .await;
                }
            }
        }
    });
    let (sd, ex, cl) = (shutdown.clone(), exec.clone(), cleanup.clone());
    let replicas = affinity.replicas.clone();
    shutdown.spawn(async move {
        sd.triggered().await;
        ex.sandboxes.shutdown().await;
        ex.mcp.close_all().await;
        let deadline = tokio::time::Instant::now() + grace.mul_f64(0.8);
        while cl.live_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        workspaces.remove_all().await;
        replicas.retire().await;
    });
}
