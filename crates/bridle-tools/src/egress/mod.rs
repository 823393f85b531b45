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
//! Names are resolved by the proxy; a name that resolves to a loopback, private, link-local
//! or otherwise non-public address is refused unless the matching rule names that address
//! itself (an IP rule, or `localhost`) or the service allows it (`egress_allow_private`), so
//! a wildcard rule cannot be turned against the host or its network by DNS.

pub mod proxy;

use std::net::{IpAddr, SocketAddr};

use bridle_core::manifest::EgressRule;

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

/// A parsed allowlist. Empty allows nothing.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    rules: Vec<EgressRule>,
    allow_private: bool,
}

impl Allowlist {
    /// Parses manifest entries (validated when the manifest was applied).
    pub fn parse(entries: &[String], allow_private: bool) -> Result<Self, String> {
        let rules = entries
            .iter()
            .map(|e| EgressRule::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            rules,
            allow_private,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule allowing `host:port`.
    pub fn find(&self, host: &str, port: u16) -> Option<&EgressRule> {
        self.rules.iter().find(|r| r.allows(host, port))
    }

    /// Why connecting to `host:port` is refused, or None when it is allowed (name only; the
    /// addresses it resolves to are checked by [`Allowlist::usable`]).
    pub fn refusal(&self, host: &str, port: u16) -> Option<String> {
        if self.find(host, port).is_some() {
            None
        } else if self.rules.is_empty() {
            Some("this tool may not reach the network".into())
        } else {
            Some(format!(
                "'{host}:{port}' is not in this tool's egress allowlist"
            ))
        }
    }

    /// The resolved addresses of `host` this allowlist lets a connection go to.
    pub fn usable(&self, host: &str, port: u16, addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let explicit = self
            .rules
            .iter()
            .any(|r| r.allows(host, port) && r.names_address());
        if explicit || self.allow_private {
            return addrs;
        }
        addrs.into_iter().filter(|a| is_public(a.ip())).collect()
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
    fn names_resolving_to_private_addresses_need_an_explicit_rule() {
        let a =
            Allowlist::parse(&["*.example.com".into(), "127.0.0.1:8080".into()], false).unwrap();
        let lo: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let public: SocketAddr = "93.184.215.14:443".parse().unwrap();
        assert_eq!(
            a.usable("x.example.com", 443, vec![lo, public]),
            vec![public]
        );
        let lo8080: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(a.usable("127.0.0.1", 8080, vec![lo8080]), vec![lo8080]);
        assert!(a.refusal("x.example.com", 443).is_none());
        assert_eq!(
            a.refusal("example.com", 443).unwrap(),
            "'example.com:443' is not in this tool's egress allowlist"
        );
        let open = Allowlist::parse(&["*.example.com".into()], true).unwrap();
        assert_eq!(open.usable("x.example.com", 443, vec![lo]), vec![lo]);
        assert!(!is_public("10.1.2.3".parse().unwrap()));
        assert!(!is_public("::ffff:192.168.1.1".parse().unwrap()));
        assert!(!is_public("fd00::1".parse().unwrap()));
        assert!(is_public("2606:4700::1".parse().unwrap()));
    }
}
