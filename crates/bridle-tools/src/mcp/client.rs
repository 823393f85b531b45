//! Connecting rmcp clients: over a sandbox's attached stdio, over a local child process, or
//! to a streamable-HTTP server. Each ends with the MCP `initialize` handshake done.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use rmcp::ServiceExt as _;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};

use crate::sandbox::backend::{Chunk, MainStdio};

/// A connected MCP client.
pub type Client = RunningService<RoleClient, Handler>;

/// The client's side of a session: a server's `notifications/tools/list_changed` moves the
/// service's tool-list generation on, so every list cached before it is read again.
#[derive(Clone, Debug, Default)]
pub struct Handler {
    pub lists: Arc<AtomicU64>,
}

impl rmcp::ClientHandler for Handler {
    fn on_tool_list_changed(
        &self,
        _: rmcp::service::NotificationContext<RoleClient>,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.lists.fetch_add(1, Ordering::SeqCst);
        tracing::info!("an MCP server's tool list changed; lists are read again");
        std::future::ready(())
    }
}

/// How a session is opened: the handler, and how long the server has to answer `initialize`
/// (the tools service's `mcp_init_timeout`).
#[derive(Clone, Debug)]
pub struct Connect {
    pub handler: Handler,
    pub init_timeout: Duration,
}
/// Bytes of a server's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

/// The last bytes a server wrote to stderr.
#[derive(Clone, Debug, Default)]
pub struct StderrTail(Arc<Mutex<Vec<u8>>>);

impl StderrTail {
    fn push(&self, b: &[u8]) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.extend_from_slice(b);
        if v.len() > STDERR_TAIL {
            let cut = v.len() - STDERR_TAIL;
            v.drain(..cut);
        }
    }

    pub fn text(&self) -> String {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&v).trim().to_string()
    }
}

/// The MCP session over a sandbox main process's stdio (stderr kept aside).
pub async fn over_stdio(stdio: MainStdio, how: &Connect) -> Result<(Client, StderrTail), String> {
    let tail = StderrTail::default();
    let t = tail.clone();
    let stdout = stdio.output.filter_map(move |item| {
        let out = match item {
            Ok(Chunk::Stdout(message)) => Some(Ok::<Bytes, std::io::Error>(message)),
            Ok(Chunk::Stderr(message)) => {
                t.push(&message);
                None
            }
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    });
    let reader = tokio_util::io::StreamReader::new(Box::pin(stdout));
    let client = tokio::time::timeout(
        how.init_timeout,
        how.handler.clone().serve((reader, stdio.input)),
    )
    .await
    .map_err(|_| {
        with_stderr(
            format!("no answer to initialize within {:?}", how.init_timeout),
            &tail,
        )
    })?
    .map_err(|e| with_stderr(format!("initialize failed: {e}"), &tail))?;
    Ok((client, tail))
}

/// `what`, with the end of the server's stderr when it wrote any.
pub fn with_stderr(what: String, tail: &StderrTail) -> String {
    let err = tail.text();
    if err.is_empty() {
        what
    } else {
        format!("{what}; the server's stderr ends: {err}")
    }
}

/// The environment a local server starts with: its configured variables only (the tools
/// service's own, `BRIDLE_*` credentials among them, never reach it), with a plain `PATH`
/// unless the configuration sets one.
pub fn local_env(env: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if !env.contains_key("PATH") {
        out.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    out
}

/// util-linux's `prlimit`, which applies a local server's limits as it executes it (setting
/// them in the child before exec would need unsafe code).
const PRLIMIT: &str = "/usr/bin/prlimit";

/// A local process named in the service's configuration, in a process group of its own (see
/// `LocalProcess`), with only its configured environment; its stderr is kept for errors.
pub async fn local_process(
    server: &super::LocalServer,
    how: &Connect,
) -> Result<(Client, LocalProcess), String> {
    let Some((program, args)) = server.command.split_first() else {
        return Err("the configured command is empty".into());
    };
    // With limits, `prlimit` sets them and executes the command in its own place (same pid,
    // same process group); it is looked up on the service's PATH, the command on the server's.
    let limits = server.limits.prlimit_args();
    let mut cmd = if limits.is_empty() {
        tokio::process::Command::new(program)
    } else {
        let mut c = tokio::process::Command::new(PRLIMIT);
        c.args(&limits).arg("--").arg(program);
        c
    };
    cmd.args(args)
        .env_clear()
        .envs(local_env(&server.env))
        .process_group(0)
        .kill_on_drop(true);
    let (proc, stderr) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            if limits.is_empty() {
                format!("cannot start '{program}': {e}")
            } else {
                format!(
                    "cannot start '{program}' under {PRLIMIT} (util-linux), which sets its limits: {e}"
                )
            }
        })?;
    let group = LocalProcess {
        pgid: proc.id(),
        stderr: StderrTail::default(),
    };
    if let Some(mut err) = stderr {
        let tail = group.stderr.clone();
        // Ends when the process closes its stderr (it exited, or was killed).
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut buf = [0u8; 1024];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.push(&buf[..n]);
            }
        });
    }
    let served = tokio::time::timeout(how.init_timeout, how.handler.clone().serve(proc)).await;
    let client = match served {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            group.kill();
            // A moment for the last words of a server that exited at once.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Err(with_stderr(
                format!("initialize with '{program}' failed: {e}"),
                &group.stderr,
            ));
        }
        Err(_) => {
            group.kill();
            return Err(with_stderr(
                format!(
                    "'{program}' did not answer initialize within {:?}",
                    how.init_timeout
                ),
                &group.stderr,
            ));
        }
    };
    Ok((client, group))
}

/// A local server's process group: the server and whatever it started (an `npm install`, a
/// helper), killed together when the session ends, not only the server itself.
#[derive(Debug)]
pub struct LocalProcess {
    pgid: Option<u32>,
    pub stderr: StderrTail,
}

impl LocalProcess {
    /// SIGKILL to the whole group (`kill -KILL -<pgid>`: no unsafe code for `killpg`).
    pub fn kill(&self) {
        if let Some(pgid) = self.pgid {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The HTTP client of a streamable-HTTP server: no redirects, no proxy, and only the
/// addresses the egress check admitted (no second lookup).
pub fn pinned_http(
    url: &str,
    timeout: Duration,
    pinned: &[std::net::SocketAddr],
) -> Result<reqwest::Client, crate::Error> {
    let mut http = bridle_core::http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout);
    if let Some(host) = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
    {
        http = http.resolve_to_addrs(host.trim_start_matches('[').trim_end_matches(']'), pinned);
    }
    http.build()
        .map_err(|e| crate::Error::Core(bridle_core::Error::internal(format!("http client: {e}"))))
}

/// The transport's configuration: the URL and extra headers.
fn http_config(
    url: &str,
    headers: &[(String, String)],
) -> Result<StreamableHttpClientTransportConfig, String> {
    let mut custom = HashMap::new();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("'{k}' is not a header name"))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| format!("the value of header '{k}' is not valid"))?;
        custom.insert(name, value);
    }
    Ok(StreamableHttpClientTransportConfig::with_uri(url).custom_headers(custom))
}

/// Opens a session over `transport`, within the initialize timeout.
async fn initialize<T, E, A>(url: &str, transport: T, how: &Connect) -> Result<Client, String>
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::time::timeout(how.init_timeout, how.handler.clone().serve(transport))
        .await
        .map_err(|_| {
            format!(
                "{url} did not answer initialize within {:?}",
                how.init_timeout
            )
        })?
        .map_err(|e| format!("initialize with {url} failed: {e}"))
}

/// A streamable-HTTP server, with headers (secrets already resolved).
pub async fn streamable_http(
    url: &str,
    headers: &[(String, String)],
    bearer: Option<&str>,
    timeout: Duration,
    pinned: &[std::net::SocketAddr],
    how: &Connect,
) -> Result<Client, String> {
    let mut config = http_config(url, headers)?;
    if let Some(b) = bearer {
        config = config.auth_header(b.to_string());
    }
    let http = pinned_http(url, timeout, pinned).map_err(|e| e.to_string())?;
    initialize(
        url,
        StreamableHttpClientTransport::with_client(http, config),
        how,
    )
    .await
}

/// A streamable-HTTP server whose requests carry an OAuth access token (`authorized` adds it,
/// refreshes it, and retries once when the server refuses it).
pub async fn streamable_http_with(
    url: &str,
    headers: &[(String, String)],
    authorized: rmcp::transport::auth::AuthClient<reqwest::Client>,
    how: &Connect,
) -> Result<Client, String> {
    let config = http_config(url, headers)?;
    initialize(
        url,
        StreamableHttpClientTransport::with_client(authorized, config),
        how,
    )
    .await
}
