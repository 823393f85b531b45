//! Egress: which hosts a tool may reach, enforced outside its sandbox.
//!
//! A sandbox never has a network interface besides loopback (`network_mode: none`). A tool
//! with an allowlist gets, in its slot, a Unix socket served by this service's proxy
//! ([`proxy`]), mounted at `/run/bridle/proxy.sock`, and a small forwarder in the sandbox
//! turns `127.0.0.1:3128` into that socket so ordinary clients work with `HTTP(S)_PROXY`.
//! The forwarder is a convenience, not a guard: whatever the tool does inside, the only way
//! out is the socket, and the proxy checks every CONNECT and every absolute-URI request
//! against the allowlist of the call in progress (nothing is allowed between calls).
//!
//! Who decides what: a Tool's rules (written by its tenant) say which hosts it may reach; the
//! platform ([`platform`], this service's options) says which non-public addresses a tenant's
//! tools may reach at all, and some never (cloud metadata, this service's own ports, its
//! Redis and secrets broker). A name is resolved once, every address is checked, and the
//! connection goes to a checked address, so DNS cannot turn a rule against the platform.

pub mod inject;
pub mod platform;
pub mod proxy;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bridle_core::manifest::{EgressRule, Host};

pub use platform::Platform;

/// Where the forwarder inside the sandbox listens; tools get it as HTTP(S)_PROXY.
pub const FORWARDER_ADDR: &str = "127.0.0.1:3128";
/// The proxy's socket inside the sandbox.
pub const SOCKET_IN_SANDBOX: &str = "/run/bridle/proxy.sock";
pub const SOCKET_NAME: &str = "proxy.sock";

/// The forwarder: python, started beside the sandbox's main process; it forks once it
/// listens.
pub const FORWARDER_PY: &str = r#"
import os, socket, threading
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass
def serve(c):
    u = socket.socket(socket.AF_UNIX)
    try:
        u.connect("/run/bridle/proxy.sock")
    except OSError:
        c.close()
        return
    t = threading.Thread(target=pump, args=(c, u), daemon=True)
    t.start()
    pump(u, c)
    t.join(5)
    c.close()
    u.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 3128))
s.listen(128)
# Listening: the parent returns, so whoever started it knows it is ready.
if os.fork() > 0:
    os._exit(0)
os.setsid()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The environment that makes clients trust the proxy's authority (a call with credentials):
/// the system's roots and the authority's certificate in one bundle, for the libraries that
/// read a bundle (OpenSSL, Python's requests, curl, git), and the authority alone for Node.
pub fn ca_env() -> Vec<(String, String)> {
    let bundle = format!("/run/bridle/{}", inject::BUNDLE_FILE);
    [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ]
    .into_iter()
    .map(|k| (k.to_string(), bundle.clone()))
    .chain([(
        "NODE_EXTRA_CA_CERTS".to_string(),
        format!("/run/bridle/{}", inject::CA_FILE),
    )])
    .collect()
}

/// The environment that points clients at the forwarder.
pub fn proxy_env() -> Vec<(String, String)> {
    let url = format!("http://{FORWARDER_ADDR}");
    ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"]
        .into_iter()
        .map(|k| (k.to_string(), url.clone()))
        .chain([
            ("NO_PROXY".to_string(), String::new()),
            (
                "BRIDLE_EGRESS_SOCKET".to_string(),
                SOCKET_IN_SANDBOX.to_string(),
            ),
        ])
        .collect()
}

/// The allowlist of one tool of one tenant: the tenant's rules (which hosts), under the
/// platform's (which non-public addresses, and which never). Empty allows nothing.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    rules: Vec<EgressRule>,
    platform: Arc<Platform>,
    tenant: String,
    /// Credentials the proxy adds for this call (`credentials` of the Tool), resolved.
    injections: Vec<inject::Injection>,
}

impl Allowlist {
    /// The allowlist of exactly `url`'s host and port (a destination a tenant named: an MCP
    /// server, its authorization server), with that host and port.
    pub fn for_url(
        url: &url::Url,
        platform: Arc<Platform>,
        tenant: &str,
    ) -> Result<(Self, Host, u16), String> {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(443);
        let allow = Self::parse(&[format!("{host}:{port}")], platform, tenant)?;
        Ok((allow, Host::parse(host), port))
    }

    /// The addresses a connection to `host:port` may go to: resolved once, then admitted by
    /// the platform ([`Self::resolve`], then [`Self::admit`]).
    pub async fn addresses(
        &self,
        host: &Host,
        port: u16,
        timeout: std::time::Duration,
    ) -> Result<Vec<SocketAddr>, String> {
        let addrs = self.resolve(host, port, timeout).await?;
        self.admit(host, port, addrs)
    }

    /// Parses manifest entries (validated when the manifest was applied).
    pub fn parse(
        entries: &[String],
        platform: Arc<Platform>,
        tenant: &str,
    ) -> Result<Self, String> {
        let rules = entries
            .iter()
            .map(|e| EgressRule::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            rules,
            platform,
            tenant: tenant.to_string(),
            injections: Vec::new(),
        })
    }

    /// This call's credentials, added by the proxy at the boundary.
    pub fn with_injections(mut self, injections: Vec<inject::Injection>) -> Self {
        self.injections = injections;
        self
    }

    pub fn injections(&self) -> &[inject::Injection] {
        &self.injections
    }

    /// Whether a credential is bound to `host:port` (its requests are intercepted).
    pub fn binds(&self, host: &Host, port: u16) -> bool {
        let Host::Name(n) = host else { return false };
        self.injections
            .iter()
            .any(|i| i.binding.port == port && i.binding.host.eq_ignore_ascii_case(n))
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Why connecting to `host:port` is refused by the tenant's rules, or None when a rule
    /// allows it (by name: the addresses it resolves to are checked by [`Allowlist::admit`]).
    pub fn refusal(&self, host: &Host, port: u16) -> Option<String> {
        if self.rules.iter().any(|r| r.allows_host(host, port)) {
            None
        } else if self.rules.is_empty() {
            Some("this tool may not reach the network".into())
        } else {
            Some(format!(
                "'{host}:{port}' is not in this tool's egress allowlist"
            ))
        }
    }

    /// The addresses of `host:port`, looked up once by the platform's resolver.
    pub async fn resolve(
        &self,
        host: &Host,
        port: u16,
        timeout: std::time::Duration,
    ) -> Result<Vec<SocketAddr>, String> {
        resolve(self.platform.resolver(), host, port, timeout).await
    }

    /// Of the addresses `host` resolved to, those a connection may go to (the platform's
    /// decision), or why none.
    pub fn admit(
        &self,
        host: &Host,
        port: u16,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, String> {
        self.platform.admit(&self.tenant, host, port, addrs)
    }
}

/// Looks names up: the system's resolver in the service, a scripted one in tests.
pub trait Resolve: Send + Sync + std::fmt::Debug {
    fn lookup(
        &self,
        name: &str,
        port: u16,
    ) -> futures::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>;
}

/// The system's resolver (`getaddrinfo`: /etc/hosts, then DNS).
#[derive(Debug)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup(
        &self,
        name: &str,
        port: u16,
    ) -> futures::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let name = name.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((name.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// Where `host:port` goes: its addresses, resolved once here (an IP literal in any spelling
/// is not looked up); the caller connects to exactly these, never to a second lookup's.
pub async fn resolve(
    resolver: &dyn Resolve,
    host: &Host,
    port: u16,
    timeout: std::time::Duration,
) -> Result<Vec<SocketAddr>, String> {
    match host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Name(n) => match tokio::time::timeout(timeout, resolver.lookup(n, port)).await {
            Ok(Ok(a)) if a.is_empty() => Err(format!("'{n}' resolved to no address")),
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => Err(format!("cannot resolve '{n}': {e}")),
            Err(_) => Err(format!(
                "cannot resolve '{n}': no answer in {}s",
                timeout.as_secs()
            )),
        },
    }
}

/// Globally routable, as far as std can tell without the unstable helpers.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_means_globally_routable() {
        assert!(!is_public("10.1.2.3".parse().unwrap()));
        assert!(!is_public("::ffff:192.168.1.1".parse().unwrap()));
        assert!(!is_public("fd00::1".parse().unwrap()));
        assert!(!is_public("100.64.0.1".parse().unwrap()));
        assert!(is_public("2606:4700::1".parse().unwrap()));
        assert!(is_public("93.184.215.14".parse().unwrap()));
    }
}
