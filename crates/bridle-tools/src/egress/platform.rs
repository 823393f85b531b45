//! The platform's side of egress. A Tool's `egress` list is written by a tenant and says
//! which public hosts its tool may reach; which loopback, private, link-local or otherwise
//! non-public destinations any tool may reach is this service's decision (its
//! `egress_private_allow` options), and some destinations are refused whatever either says:
//! cloud metadata endpoints, this service's own ports, and the Redis and secrets broker it is
//! configured with.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::manifest::{EgressHost, EgressRule, Host, split_host_port};
use ipnet::IpNet;

/// Cloud instance metadata endpoints: the node's own credentials on most clouds.
const METADATA_IPS: [&str; 4] = [
    // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle...
    "169.254.169.254",
    // AWS over IPv6.
    "fd00:ec2::254",
    // AWS ECS task metadata and credentials.
    "169.254.170.2",
    // Alibaba Cloud.
    "100.100.100.200",
];
const METADATA_NAMES: [&str; 2] = ["metadata.google.internal", "metadata.goog"];

/// One entry of the platform's allowlist: an address block or a name, and optionally a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    target: Target,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Net(IpNet),
    Name(String),
}

impl Entry {
    /// `10.0.0.0/8`, `10.1.2.3`, `10.1.2.3:6379`, `[fd00::1]:80`, `fd00::/8`, `db.internal`,
    /// `db.internal:5432`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (host, port) = split_host_port(s)?;
        let port = port
            .map(|p| match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("'{s}': '{p}' is not a port (1-65535)")),
            })
            .transpose()?;
        if host.is_empty() {
            return Err(format!("'{s}': no address or name"));
        }
        let target = if host.contains('/') {
            Target::Net(
                host.parse::<IpNet>()
                    .map_err(|e| format!("'{s}': not an address block: {e}"))?
                    .trunc(),
            )
        } else {
            match Host::parse(host) {
                Host::Ip(ip) => Target::Net(IpNet::from(ip)),
                Host::Name(n) => {
                    // The same check a Tool's egress rule gets.
                    EgressRule::parse(&n).map_err(|e| format!("'{s}': {e}"))?;
                    Target::Name(n)
                }
            }
        };
        Ok(Self { target, port })
    }

    fn covers(&self, host: &Host, ip: IpAddr, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
            && match (&self.target, host) {
                (Target::Net(n), _) => n.contains(&ip),
                (Target::Name(n), Host::Name(h)) => n == h,
                (Target::Name(_), Host::Ip(_)) => false,
            }
    }
}

/// Why a destination is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// Non-public and in no entry of the platform's allowlist for this tenant.
    Private,
    /// Refused whatever the allowlists say.
    Never(String),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Private => f.write_str("private address, not in the platform's allowlist"),
            Why::Never(what) => write!(f, "{what}, which tools may never reach"),
        }
    }
}

/// A platform service this service talks to, by name and by the addresses that name had when
/// last resolved.
#[derive(Clone, Debug)]
struct Service {
    what: String,
    host: Host,
    port: u16,
    addrs: Vec<IpAddr>,
}

/// What the platform lets tools reach beyond the public internet, and what never.
#[derive(Debug, Default)]
pub struct Platform {
    /// `egress_allow_private`: any non-public address (a laptop's setting).
    allow_private: bool,
    everyone: Vec<Entry>,
    tenants: BTreeMap<String, Vec<Entry>>,
    /// This service's own listening ports: refused on every non-public address.
    own_ports: RwLock<Vec<u16>>,
    services: RwLock<Vec<Service>>,
    /// None: the system's.
    resolver: Option<Arc<dyn super::Resolve>>,
    /// TLS to the real hosts of intercepted (credential-bound) requests; None: none is made.
    upstream_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Platform {
    /// From the options; errors name the option and the entry.
    pub fn new(
        allow_private: bool,
        everyone: &[String],
        tenants: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, String> {
        let parse = |field: &str, list: &[String]| {
            list.iter()
                .map(|e| Entry::parse(e).map_err(|why| format!("{field}: {why}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut by_tenant = BTreeMap::new();
        for (t, list) in tenants {
            by_tenant.insert(
                t.clone(),
                parse(&format!("egress_private_allow_tenants.{t}"), list)?,
            );
        }
        Ok(Self {
            allow_private,
            everyone: parse("egress_private_allow", everyone)?,
            tenants: by_tenant,
            own_ports: RwLock::new(Vec::new()),
            services: RwLock::new(Vec::new()),
            resolver: None,
            upstream_tls: None,
        })
    }

    /// The TLS client configuration for intercepted requests' real hosts.
    pub fn with_upstream_tls(mut self, c: Arc<rustls::ClientConfig>) -> Self {
        self.upstream_tls = Some(c);
        self
    }

    pub fn upstream_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.upstream_tls.clone()
    }

    /// Looks names up with `r` instead of the system's resolver (tests script DNS with it).
    pub fn with_resolver(mut self, r: Arc<dyn super::Resolve>) -> Self {
        self.resolver = Some(r);
        self
    }

    pub fn resolver(&self) -> &dyn super::Resolve {
        match &self.resolver {
            Some(r) => r.as_ref(),
            None => &super::SystemResolver,
        }
    }

    /// Adds one of this service's own listening ports.
    pub fn protect_own_port(&self, port: u16) {
        self.own_ports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(port);
    }

    /// Adds a platform service (`what`, e.g. "this platform's Redis (redis_url)") at a URL's
    /// host and port; its name is resolved now and kept fresh by [`Platform::keep_resolved`].
    pub fn protect_service(&mut self, what: &str, url: &str, default_port: u16) {
        let Ok(u) = url::Url::parse(url) else { return };
        let Some(host) = u.host_str() else { return };
        let port = u.port().unwrap_or(default_port);
        let host = Host::parse(host);
        let addrs = match &host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(_) => Vec::new(),
        };
        self.services
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .push(Service {
                what: what.to_string(),
                host,
                port,
                addrs,
            });
    }

    /// Resolves the platform services' names now and then every `every`, on a task owned by
    /// `shutdown`: a name's addresses are refused as the name is.
    pub async fn keep_resolved(self: &Arc<Self>, every: Duration, shutdown: &Shutdown) {
        self.resolve_services().await;
        let (me, token) = (Arc::downgrade(self), shutdown.token().clone());
        shutdown.spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(every) => {}
                }
                let Some(p) = me.upgrade() else { break };
                p.resolve_services().await;
            }
        });
    }

    async fn resolve_services(&self) {
        let names: Vec<(usize, String, u16)> = self
            .services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.host {
                Host::Name(n) => Some((i, n.clone(), s.port)),
                Host::Ip(_) => None,
            })
            .collect();
        for (i, name, port) in names {
            let Ok(found) = super::resolve(
                self.resolver(),
                &Host::Name(name),
                port,
                Duration::from_secs(5),
            )
            .await
            else {
                // Keep what was known: a failed lookup must not open the address up.
                continue;
            };
            let mut addrs: Vec<IpAddr> = found.iter().map(|a| a.ip().to_canonical()).collect();
            let mut services = self.services.write().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = services.get_mut(i) {
                addrs.extend(s.addrs.iter().copied());
                addrs.sort();
                addrs.dedup();
                // Bounded: a name whose records rotate keeps its latest few dozen.
                addrs.truncate(64);
                s.addrs = addrs;
            }
        }
    }

    fn entries<'a>(&'a self, tenant: &str) -> impl Iterator<Item = &'a Entry> {
        self.everyone
            .iter()
            .chain(self.tenants.get(tenant).into_iter().flatten())
    }

    /// Refused before any lookup: the host names a metadata endpoint or a platform service.
    fn never_by_name(&self, host: &Host, port: u16) -> Option<Why> {
        let Host::Name(n) = host else { return None };
        if METADATA_NAMES.contains(&n.as_str()) {
            return Some(Why::Never("a cloud metadata endpoint".into()));
        }
        self.services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|s| s.port == port && s.host == *host)
            .map(|s| Why::Never(s.what.clone()))
    }

    fn never_by_address(&self, ip: IpAddr, port: u16) -> Option<Why> {
        if METADATA_IPS
            .iter()
            .any(|m| m.parse::<IpAddr>().is_ok_and(|m| m == ip))
        {
            return Some(Why::Never("a cloud metadata endpoint".into()));
        }
        if !super::is_public(ip)
            && self
                .own_ports
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&port)
        {
            return Some(Why::Never("this tools service's own port".into()));
        }
        self.services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|s| s.port == port && s.addrs.contains(&ip))
            .map(|s| Why::Never(s.what.clone()))
    }

    /// Whether `tenant` may connect to `ip:port`, reached as `host`.
    pub fn check(&self, tenant: &str, host: &Host, ip: IpAddr, port: u16) -> Result<(), Why> {
        let ip = ip.to_canonical();
        if let Some(why) = self
            .never_by_name(host, port)
            .or_else(|| self.never_by_address(ip, port))
        {
            return Err(why);
        }
        if super::is_public(ip)
            || self.allow_private
            || self.entries(tenant).any(|e| e.covers(host, ip, port))
        {
            Ok(())
        } else {
            Err(Why::Private)
        }
    }

    /// Of the addresses `host` resolved to, those `tenant` may connect to; or, when none, the
    /// refusal of the first, as the model and the operator both read it.
    pub fn admit(
        &self,
        tenant: &str,
        host: &Host,
        port: u16,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, String> {
        if let Some(why) = self.never_by_name(host, port) {
            return Err(refusal(&host.to_string(), port, tenant, &why));
        }
        let mut first = None;
        let mut ok = Vec::new();
        for a in addrs {
            let a = SocketAddr::new(a.ip().to_canonical(), a.port());
            match self.check(tenant, host, a.ip(), port) {
                Ok(()) => ok.push(a),
                Err(why) => {
                    first.get_or_insert((a, why));
                }
            }
        }
        match (ok.is_empty(), first) {
            (false, _) => Ok(ok),
            (true, Some((a, why))) => {
                let shown = match host {
                    Host::Ip(_) => a.to_string(),
                    Host::Name(n) => format!("{n}:{port} ({})", a.ip()),
                };
                Err(refusal_of(&shown, tenant, &why))
            }
            (true, None) => Err(format!("'{host}' resolved to no address")),
        }
    }

    /// At apply: a tenant's rule that names a non-public address (or `localhost`, or a
    /// metadata name) the platform does not let that tenant reach. Rules naming hosts are
    /// checked when their names resolve, at connect time.
    pub fn check_rule(&self, tenant: &str, rule: &EgressRule) -> Option<String> {
        let ip = match &rule.host {
            EgressHost::Ip(ip) => ip.to_canonical(),
            EgressHost::Exact(n) if n == "localhost" => IpAddr::from([127, 0, 0, 1]),
            EgressHost::Exact(n) => {
                let host = Host::Name(n.clone());
                return METADATA_NAMES
                    .contains(&n.as_str())
                    .then(|| {
                        refusal_of(
                            &rule.to_string(),
                            tenant,
                            &Why::Never("a cloud metadata endpoint".into()),
                        )
                    })
                    .or_else(|| {
                        // A name the platform protects, on a port the rule allows.
                        let services = self.services.read().unwrap_or_else(|p| p.into_inner());
                        services
                            .iter()
                            .find(|s| s.host == host && rule.allows_host(&host, s.port))
                            .map(|s| {
                                refusal_of(&rule.to_string(), tenant, &Why::Never(s.what.clone()))
                            })
                    });
            }
            EgressHost::Suffix(_) => return None,
        };
        if let Some(why) = self.never_by_address(ip, 0) {
            // Metadata addresses, whatever the port.
            return Some(refusal_of(&rule.to_string(), tenant, &why));
        }
        if super::is_public(ip)
            || self.allow_private
            || self
                .entries(tenant)
                .any(|e| matches!(&e.target, Target::Net(n) if n.contains(&ip)))
        {
            None
        } else {
            Some(refusal_of(&rule.to_string(), tenant, &Why::Private))
        }
    }
}

fn refusal(host: &str, port: u16, tenant: &str, why: &Why) -> String {
    refusal_of(&format!("{host}:{port}"), tenant, why)
}

fn refusal_of(target: &str, tenant: &str, why: &Why) -> String {
    format!("egress to {target} is not allowed for tenant {tenant}: {why}")
}

#[cfg(test)]
#[path = "platform_tests.rs"]
mod tests;
