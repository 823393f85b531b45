//! Process scaffolding shared by the five service binaries and `bridle dev`.
//!
//! Startup order: runtime -> tracing -> options (exit 64 when invalid, before any port is
//! bound) -> the service's `start` (connects its dependencies, exits 69 when one is
//! unreachable) -> serve until SIGTERM/SIGINT -> drain within the grace period -> flush
//! telemetry.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use tonic::service::Routes;

use crate::config::{self, EXIT_CONFIG, Options};
use crate::server::GrpcServer;
use crate::{Error, Shutdown, telemetry};

/// Exit status when a dependency (Redis, Vault, Docker) cannot be reached at start (BSD
/// EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: i32 = 69;

/// Flags every service binary takes; anything else comes from the config file and env.
#[derive(Debug, Clone, clap::Parser, Serialize)]
pub struct CommonFlags {
    /// TOML config file (layered over defaults, under BRIDLE_* env and these flags).
    #[arg(long, env = "BRIDLE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0 = any free port).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Write the bound address to this file once listening.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr_file: Option<PathBuf>,
}

/// Runs a service binary: `start` binds and spawns the service (returning once it serves),
/// then this waits for a shutdown signal and drains.
pub fn run_main<O, F, Fut>(
    binary: &'static str,
    grace: impl Fn(&O) -> std::time::Duration,
    start: F,
) -> ExitCode
where
    O: Options,
    F: FnOnce(O, Shutdown) -> Fut,
    Fut: Future<Output = Result<SocketAddr, Error>>,
{
    let flags = <CommonFlags as clap::Parser>::parse();
    crate::config::install_crypto_provider();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("{binary}: cannot start the async runtime: {e}");
            }
            return ExitCode::from(70);
        }
    };
    rt.block_on(async move {
        let mut telemetry = telemetry::init(binary);
        if !telemetry.refused().is_empty() {
            tracing::error!("{binary} cannot start: {}", telemetry.refused().join("; "));
            telemetry.shutdown();
            return ExitCode::from(EXIT_CONFIG as u8);
        }
        let opts: O = match config::load(flags.config.as_deref(), &flags) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("{e}");
                telemetry.shutdown();
                return ExitCode::from(EXIT_CONFIG as u8);
            }
        };
        let grace = grace(&opts);
        let shutdown = Shutdown::on_signals();
        let metrics_listen = opts.server().metrics_listen;
        let scrape = telemetry.start_metrics(metrics_listen.is_some());
        if let (Some(at), Some(scrape)) = (metrics_listen, scrape)
            && let Err(e) = serve_metrics(at, scrape, &shutdown).await
        {
            tracing::error!("{binary} cannot start: {e}");
            telemetry.shutdown();
            return ExitCode::from(EXIT_CONFIG as u8);
        }
        let code = match start(opts, shutdown.clone()).await {
            Ok(addr) => {
                tracing::info!(%addr, "{binary} ready");
                shutdown.triggered().await;
                0
            }
            Err(e) => {
                tracing::error!("{binary} cannot start: {e}");
                match e {
                    Error::Config(_) => EXIT_CONFIG,
                    Error::Unavailable { .. }
                    | Error::Redis(_)
                    | Error::RedisOutOfMemory { .. } => EXIT_UNAVAILABLE,
                    _ => 1,
                }
            }
        };
        shutdown.drain(grace).await;
        tracing::info!("{binary} stopped");
        telemetry.shutdown();
        ExitCode::from(code as u8)
    })
}

/// Binds `metrics_listen` and serves the metrics there until shutdown.
async fn serve_metrics(
    at: SocketAddr,
    scrape: crate::prometheus::Scrape,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .map_err(|e| Error::Config(format!("metrics_listen: cannot listen on {at}: {e}")))?;
    let addr = listener.local_addr().unwrap_or(at);
    tracing::info!(%addr, "serving metrics (Prometheus text) at /metrics");
    let s = shutdown.clone();
    shutdown.spawn(async move {
        if let Err(e) = crate::prometheus::serve(listener, scrape, s).await {
            tracing::error!("metrics listener failed: {e}");
        }
    });
    Ok(())
}

/// Binds, then serves `routes` on a task owned by `shutdown`. A server that fails after
/// start triggers shutdown of the whole process rather than leaving it half alive.
pub async fn spawn_grpc(
    name: &'static str,
    opts: &config::ServerOptions,
    routes: Routes,
    service_names: &'static [&'static str],
    shutdown: &Shutdown,
) -> Result<SocketAddr, Error> {
    spawn_grpc_with_auth(name, opts, routes, service_names, None, shutdown).await
}

/// [`spawn_grpc`] with an authenticator that knows API keys (for services people call).
pub async fn spawn_grpc_with_auth(
    name: &'static str,
    opts: &config::ServerOptions,
    routes: Routes,
    service_names: &'static [&'static str],
    auth: Option<crate::auth::Authenticator>,
    shutdown: &Shutdown,
) -> Result<SocketAddr, Error> {
    let mut server = GrpcServer::bind(name, opts).await?;
    if let Some(a) = auth {
        server = server.with_auth(a);
    }
    let addr = server.local_addr();
    let s = shutdown.clone();
    shutdown.spawn(async move {
        if let Err(e) = server.serve(routes, service_names, s.clone()).await {
            tracing::error!(service = name, "gRPC server failed: {e}");
            s.trigger();
        }
    });
    Ok(addr)
}
