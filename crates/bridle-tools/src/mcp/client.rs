//! Connecting rmcp clients: over a sandbox's attached stdio, over a local child process, or
//! to a streamable-HTTP server. Each ends with the MCP `initialize` handshake done.

use std::collections::{BTreeMap, HashMap};
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
pub type Client = RunningService<RoleClient, ()>;

/// How long a server has to answer `initialize`.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(60);
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
pub async fn over_stdio(stdio: MainStdio) -> Result<(Client, StderrTail), String> {
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
    let client = tokio::time::timeout(INIT_TIMEOUT, ().serve((reader, stdio.input)))
        .await
        .map_err(|_| format!("no answer to initialize within {INIT_TIMEOUT:?}"))?
        .map_err(|e| {
            let err = tail.text();
            if err.is_empty() {
                format!("initialize failed: {e}")
            } else {
                format!("initialize failed: {e}; the server's stderr: {err}")
            }
        })?;
    Ok((client, tail))
}

/// A local process named in the service's configuration.
pub async fn local_process(
    command: &[String],
    env: &BTreeMap<String, String>,
) -> Result<Client, String> {
    let Some((program, args)) = command.split_first() else {
        return Err("the configured command is empty".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).envs(env).kill_on_drop(true);
    let (proc, _stderr) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start '{program}': {e}"))?;
    tokio::time::timeout(INIT_TIMEOUT, ().serve(proc))
        .await
        .map_err(|_| format!("'{program}' did not answer initialize within {INIT_TIMEOUT:?}"))?
        .map_err(|e| format!("initialize with '{program}' failed: {e}"))
}

/// A streamable-HTTP server, with headers (secrets already resolved).
pub async fn streamable_http(
    url: &str,
    headers: &[(String, String)],
    bearer: Option<&str>,
    timeout: Duration,
    pinned: &[std::net::SocketAddr],
) -> Result<Client, String> {
    let mut custom = HashMap::new();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("'{k}' is not a header name"))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| format!("the value of header '{k}' is not valid"))?;
        custom.insert(name, value);
    }
    let mut config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(custom);
    if let Some(b) = bearer {
        config = config.auth_header(b.to_string());
    }
    let mut http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout);
    // Only the addresses the egress check admitted: no second lookup.
    if let Some(host) = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
    {
        http = http.resolve_to_addrs(host.trim_start_matches('[').trim_end_matches(']'), pinned);
    }
    let http = http.build().map_err(|e| format!("http client: {e}"))?;
    let transport = StreamableHttpClientTransport::with_client(http, config);
    tokio::time::timeout(INIT_TIMEOUT, ().serve(transport))
        .await
        .map_err(|_| format!("{url} did not answer initialize within {INIT_TIMEOUT:?}"))?
        .map_err(|e| format!("initialize with {url} failed: {e}"))
}
