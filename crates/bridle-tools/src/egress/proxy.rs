//! The egress proxy of one sandbox: a Unix socket in the sandbox's slot, speaking HTTP
//! proxy (CONNECT for TLS and anything else, absolute-URI requests for plain HTTP), allowing
//! only what the allowlist of the call in progress allows. When the call ends, its
//! allowlist is withdrawn and its connections are cut.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridle_core::Shutdown;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio_util::sync::{CancellationToken, DropGuard};

use bridle_core::manifest::Host;

use super::Allowlist;
use super::inject::{self, Authority};

const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one sandbox may hold open at once.
const MAX_CONNECTIONS: usize = 64;

#[derive(Clone)]
struct Current {
    allow: Arc<Allowlist>,
    tool: String,
    /// Cancelled when the call ends: its connections are cut.
    call: CancellationToken,
    /// What this call was refused, for its result (the model reads why, and stops retrying).
    refused: Arc<Mutex<Vec<String>>>,
}

/// Refusals one call keeps for its result; more are counted, not kept.
const MAX_REFUSALS: usize = 4;

impl Current {
    fn refuse(&self, why: &str) {
        let mut r = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() < MAX_REFUSALS && !r.iter().any(|w| w == why) {
            r.push(why.to_string());
        }
    }
}

/// The running proxy of one sandbox; stops when dropped.
pub struct Gate {
    current: Arc<Mutex<Current>>,
    _stop: DropGuard,
}

impl Gate {
    /// Binds `<dir>/proxy.sock` and serves it on a task owned by `shutdown`.
    pub fn start(dir: &Path, shutdown: &Shutdown) -> std::io::Result<Self> {
        let path = dir.join(super::SOCKET_NAME);
        // The authority of this sandbox's intercepted requests: its key stays in memory; its
        // certificate, alone and with the system's roots, goes where the sandbox reads it.
        let authority = Arc::new(Authority::new().map_err(std::io::Error::other)?);
        let ca = authority.pem();
        std::fs::write(dir.join(inject::CA_FILE), &ca)?;
        std::fs::write(
            dir.join(inject::BUNDLE_FILE),
            format!("{}{ca}", inject::system_roots_pem()),
        )?;
        for f in [inject::CA_FILE, inject::BUNDLE_FILE] {
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644))?;
        }
        let listener = UnixListener::bind(&path)?;
        // The sandbox user must be able to connect; the folder's parent keeps others out.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        let stop = shutdown.token().child_token();
        let current = Arc::new(Mutex::new(Current {
            allow: Arc::new(Allowlist::default()),
            tool: String::new(),
            call: CancellationToken::new(),
            refused: Arc::default(),
        }));
        let (cur, token, sd) = (current.clone(), stop.clone(), shutdown.clone());
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        shutdown.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => break,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else { continue };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let snapshot = cur.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let (token, authority) = (token.clone(), authority.clone());
                sd.spawn(async move {
                    let _permit = permit;
                    tokio::select! {
                        () = token.cancelled() => {}
                        () = snapshot.call.cancelled() => {}
                        () = handle(stream, &snapshot, &authority) => {}
                    }
                });
            }
        });
        Ok(Self {
            current,
            _stop: stop.drop_guard(),
        })
    }

    /// The allowlist of the call starting now.
    pub fn open(&self, allow: Arc<Allowlist>, tool: &str) {
        self.replace(allow, tool);
    }

    /// The call ended: nothing is allowed and its connections are cut. Returns what the
    /// proxy refused during the call, each reason once.
    pub fn close(&self) -> Vec<String> {
        let ended = self.replace(Arc::new(Allowlist::default()), "");
        let mut r = ended.refused.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *r)
    }

    fn replace(&self, allow: Arc<Allowlist>, tool: &str) -> Current {
        let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        c.call.cancel();
        std::mem::replace(
            &mut *c,
            Current {
                allow,
                tool: tool.to_string(),
                call: CancellationToken::new(),
                refused: Arc::default(),
            },
        )
    }
}

async fn handle(mut client: UnixStream, cur: &Current, authority: &Authority) {
    let mut buf = Vec::with_capacity(2048);
    let head_end = match tokio::time::timeout(
        HEAD_TIMEOUT,
        inject::read_head(&mut client, &mut buf, MAX_HEAD),
    )
    .await
    {
        Ok(Ok(n)) => n,
        _ => {
            let _ = reply(
                &mut client,
                400,
                "the proxy request was incomplete or too large",
            )
            .await;
            return;
        }
    };
    let Some(Request {
        connect,
        host,
        port,
        upstream_head,
    }) = parse_head(&buf[..head_end])
    else {
        let _ = reply(
            &mut client,
            400,
            "use CONNECT host:port, or an absolute http:// URL (https goes through CONNECT)",
        )
        .await;
        return;
    };
    let rest = buf[head_end..].to_vec();
    let host = Host::parse(&host);
    if let Some(why) = cur.allow.refusal(&host, port) {
        tracing::info!(tool = %cur.tool, target = %format!("{host}:{port}"), %why, "egress refused");
        cur.refuse(&why);
        let _ = reply(&mut client, 403, &format!("bridle egress: {why}")).await;
        return;
    }
    // Resolved once: the connection goes to an address checked here, never to a later
    // lookup's (a name that rebinds between check and use gains nothing).
    let addrs = match cur.allow.resolve(&host, port, CONNECT_TIMEOUT).await {
        Ok(a) => a,
        Err(why) => {
            let _ = reply(&mut client, 502, &format!("bridle egress: {why}")).await;
            return;
        }
    };
    let bound = cur.allow.binds(&host, port);
    if bound && !connect {
        let why = format!(
            "a credential is bound to {host}:{port}; it is sent over https only (use https://{host})"
        );
        cur.refuse(&why);
        let _ = reply(&mut client, 403, &format!("bridle egress: {why}")).await;
        return;
    }
    let usable = match cur.allow.admit(&host, port, addrs) {
        Ok(u) => u,
        Err(why) => {
            tracing::warn!(tool = %cur.tool, %why, "egress refused");
            cur.refuse(&why);
            let _ = reply(&mut client, 403, &format!("bridle egress: {why}")).await;
            return;
        }
    };
    let mut upstream = None;
    for a in usable {
        if let Ok(Ok(s)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            upstream = Some(s);
            break;
        }
    }
    let Some(mut upstream) = upstream else {
        let _ = reply(
            &mut client,
            502,
            &format!("bridle egress: cannot connect to {host}:{port}"),
        )
        .await;
        return;
    };
    tracing::debug!(tool = %cur.tool, target = %format!("{host}:{port}"), "egress allowed");
    if bound {
        let Some(tls) = cur.allow.platform().upstream_tls() else {
            let _ = reply(
                &mut client,
                502,
                "bridle egress: this service makes no TLS connections for credentials",
            )
            .await;
            return;
        };
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let client = Prefixed {
            rest,
            inner: client,
        };
        let name = host.to_string();
        if let Err(why) = inject::intercept(
            client,
            upstream,
            &name,
            port,
            cur.allow.injections(),
            authority,
            tls,
        )
        .await
        {
            tracing::warn!(tool = %cur.tool, target = %format!("{name}:{port}"), %why, "intercepted request failed");
        }
        return;
    }
    if connect {
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    } else if upstream.write_all(upstream_head.as_bytes()).await.is_err() {
        return;
    }
    if !rest.is_empty() && upstream.write_all(&rest).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// A stream with bytes already read from it put back in front (what came after a CONNECT's
/// head: the start of the TLS handshake, for a client that does not wait for the 200).
struct Prefixed {
    rest: Vec<u8>,
    inner: UnixStream,
}

impl tokio::io::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.rest.is_empty() {
            let n = self.rest.len().min(buf.remaining());
            buf.put_slice(&self.rest[..n]);
            self.rest.drain(..n);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where a proxy request goes, read from its head.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// CONNECT (a tunnel); otherwise an absolute-URI request for plain HTTP.
    pub connect: bool,
    pub host: String,
    pub port: u16,
    /// For an absolute-URI request, the head sent upstream: the request line in origin form,
    /// the client's headers without the hop-by-hop ones, and `Connection: close`. Empty for
    /// CONNECT.
    pub upstream_head: String,
}

/// Parses a proxy request's head (through its blank line); None when its target is neither
/// `host:port` for CONNECT nor an absolute `http://` URL. Public so that the fuzz target
/// `egress_request` (in `fuzz/`) can reach it: the head is written by the tool's own code, the
/// least trusted input this service reads.
#[doc(hidden)]
pub fn parse_head(head: &[u8]) -> Option<Request> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("HTTP/1.1"),
    );
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(target, 443)?;
        return Some(Request {
            connect: true,
            host,
            port,
            upstream_head: String::new(),
        });
    }
    let (host, port, path) = absolute_http(target)?;
    let mut out = format!("{method} {path} {version}\r\n");
    for l in lines.filter(|l| !l.is_empty()) {
        let name = l
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "proxy-connection" | "proxy-authorization" | "connection" | "keep-alive"
        ) {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    Some(Request {
        connect: false,
        host,
        port,
        upstream_head: out,
    })
}

async fn reply(s: &mut UnixStream, code: u16, text: &str) -> std::io::Result<()> {
    let reason = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "Bad Gateway",
    };
    let body = format!("{text}\n");
    let msg = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(msg.as_bytes()).await?;
    s.shutdown().await
}

/// `host[:port]` or `[v6][:port]`; None when the host is empty (`[]`, `:443`) or anything but a
/// port follows a bracketed address.
fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((h.to_string(), port)).filter(|(h, _)| !h.is_empty());
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        _ => Some((s.to_string(), default_port)),
    }
    .filter(|(h, _)| !h.is_empty())
}

/// `http://host[:port]/path?q` -> (host, port, "/path?q").
fn absolute_http(target: &str) -> Option<(String, u16, String)> {
    let rest = target.strip_prefix("http://").or_else(|| {
        target
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("http://"))
            .map(|_| &target[7..])
    })?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = split_host_port(authority, 80)?;
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Some((host, port, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            split_host_port("example.com:8443", 443),
            Some(("example.com".into(), 8443))
        );
        assert_eq!(split_host_port("[::1]:80", 443), Some(("::1".into(), 80)));
        assert_eq!(
            split_host_port("example.com", 443),
            Some(("example.com".into(), 443))
        );
        assert_eq!(
            absolute_http("http://127.0.0.1:9000/a/b?c=1"),
            Some(("127.0.0.1".into(), 9000, "/a/b?c=1".into()))
        );
        assert_eq!(
            absolute_http("http://h?x"),
            Some(("h".into(), 80, "/?x".into()))
        );
        assert_eq!(absolute_http("https://h/"), None);
    }

    #[test]
    fn heads_parse_into_where_they_go_and_what_is_sent_on() {
        let c = parse_head(b"CONNECT api.example.com:8443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            (c.connect, c.host.as_str(), c.port, c.upstream_head.as_str()),
            (true, "api.example.com", 8443, "")
        );
        let g = parse_head(
            b"GET http://api.example.com/a?b HTTP/1.1\r\nHost: api.example.com\r\n\
              Proxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\n\
              Connection: keep-alive\r\nKeep-Alive: 5\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (g.connect, g.host.as_str(), g.port),
            (false, "api.example.com", 80)
        );
        assert_eq!(
            g.upstream_head,
            "GET /a?b HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(parse_head(b"GET /relative HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse_head(b"CONNECT :443 HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse_head(b"\r\n\r\n"), None);
    }

    /// Found by the fuzz target `egress_request` (fuzz/regressions/egress_request/): an empty
    /// bracketed host was taken as the host "".
    #[test]
    fn an_empty_or_trailing_bracketed_host_is_refused() {
        assert_eq!(split_host_port("[]:443", 443), None);
        assert_eq!(split_host_port("[]", 443), None);
        assert_eq!(split_host_port("[::1]x", 443), None);
        assert_eq!(absolute_http("http://[]/x"), None);
        assert_eq!(parse_head(b"CONNECT [] HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse_head(b"GET http://[]\xff/ HTTP/1.1\r\n\r\n"), None);
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod gate_tests;
