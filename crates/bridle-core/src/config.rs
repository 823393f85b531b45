//! Typed options, layered: defaults -> config file -> `BRIDLE_*` environment -> flags.
//!
//! Every service has an options struct (serde, with defaults) that implements [`Options`].
//! [`load`] layers the sources and validates the result; a process calls it before binding any
//! port, and exits with status 64 (EX_USAGE) on an error, naming the key that is wrong.
//!
//! Environment: `BRIDLE_<KEY>` applies to every service (for example `BRIDLE_REDIS_URL`), and
//! `BRIDLE_<SERVICE>_<KEY>` to one service only (`BRIDLE_ROUTER_LISTEN`), winning over the
//! shared form. Nested keys use a double underscore.
//!
//! Unknown keys are refused, naming the nearest valid one (see [`keys`]): every key of the
//! file must be an option, and a `BRIDLE_*` variable within two edits of an option's name is
//! taken for a misspelling of it; other variables sharing the prefix are left alone.

pub mod keys;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Exit status for a bad configuration (BSD EX_USAGE), distinct from a crash.
pub const EXIT_CONFIG: i32 = 64;

pub trait Options: Serialize + DeserializeOwned + Default + schemars::JsonSchema {
    /// Service name, lowercase ("router"); also the env prefix `BRIDLE_ROUTER_`.
    const SERVICE: &'static str;

    /// The options every service has (listen address, auth, TLS, ...).
    fn server(&self) -> &ServerOptions;

    /// Checks the values together; returns "key: what is wrong" messages.
    fn validate(&self) -> Vec<String>;
}

/// Loads options from the layers and validates them.
pub fn load<T: Options>(file: Option<&Path>, flags: &impl Serialize) -> Result<T, Error> {
    let service_prefix = format!("BRIDLE_{}_", T::SERVICE.to_ascii_uppercase());
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(Error::Config(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    let services = SERVICE_PREFIXES;
    let known = keys::Known::of::<T>();
    let mut unknown = Vec::new();
    if let Some(path) = file {
        let table: serde_json::Map<String, serde_json::Value> =
            Figment::from(Toml::file_exact(path))
                .extract()
                .map_err(|e| Error::Config(describe_figment_error(e)))?;
        unknown.extend(
            keys::unknown_in_file(&known, &table)
                .into_iter()
                .map(|e| format!("{}: {e}", path.display())),
        );
    }
    unknown.extend(keys::misspelt_in_env(
        &known,
        T::SERVICE,
        &services,
        std::env::vars(),
    ));
    if !unknown.is_empty() {
        return Err(Error::Config(unknown.join("; ")));
    }
    fig = fig
        .merge(
            Env::prefixed("BRIDLE_")
                .filter(move |k| {
                    let up = k.as_str().to_ascii_uppercase();
                    !services.iter().any(|s| up.starts_with(s))
                })
                .split("__"),
        )
        .merge(Env::prefixed(&service_prefix).split("__"))
        .merge(Serialized::defaults(flags));
    let opts: T = fig
        .extract()
        .map_err(|e| Error::Config(describe_figment_error(e)))?;
    let problems = opts.validate();
    if problems.is_empty() {
        Ok(opts)
    } else {
        Err(Error::Config(problems.join("; ")))
    }
}

/// The service-specific environment prefixes after `BRIDLE_`. The shared prefix must not also
/// pick up the variables of other services (BRIDLE_ROUTER_LISTEN is not the orchestrator's
/// "router_listen"); DEV_ and CLI_ are `bridle dev`'s and the CLI's own.
pub const SERVICE_PREFIXES: [&str; 7] = [
    "ORCHESTRATOR_",
    "ROUTER_",
    "TOOLS_",
    "APPROVALS_",
    "SECRETS_",
    "DEV_",
    "CLI_",
];

fn describe_figment_error(e: figment::Error) -> String {
    e.into_iter()
        .map(|err| {
            let key = if err.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", err.path.join("."))
            };
            let from = err
                .metadata
                .as_ref()
                .map(|m| {
                    let src = m
                        .source
                        .as_ref()
                        .map(|s| format!(" in {s}"))
                        .unwrap_or_default();
                    format!(" (from {}{src})", m.name)
                })
                .unwrap_or_default();
            format!("{key}{}{from}", err.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Options every gRPC server shares.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct ServerOptions {
    /// Address to listen on; port 0 picks a free port (the bound address is logged and, with
    /// `addr_file`, written to that file).
    pub listen: SocketAddr,
    /// Deadline for unary requests that carry none.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub request_timeout: Duration,
    /// Requests handled at once per connection; more wait.
    pub concurrency_limit: usize,
    /// How long shutdown waits for in-flight work.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub grace_period: Duration,
    /// Write the bound address here once listening (for supervisors and tests).
    pub addr_file: Option<PathBuf>,
    /// `keys` (the default: API keys for callers; services prove themselves with the
    /// internal token or their TLS client certificate) or `off` (anyone is an anonymous
    /// admin: only where nobody else can reach the services).
    pub auth: crate::auth::AuthMode,
    /// The token services present to each other (`x-bridle-service-token`) when auth is on.
    #[serde(skip_serializing)]
    #[schemars(with = "Option<String>")]
    pub internal_token: Option<secrecy::SecretString>,
    /// PEM certificate (and `tls_key`, its key) this service serves with and presents to
    /// the services it calls. Set all three for mutual TLS between the services.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM CA that signs the services' certificates: servers require client certificates
    /// from it (the certificate's CN is the calling service), clients verify servers with it.
    pub tls_ca: Option<PathBuf>,
    /// How often the three TLS files are read again: a rotated certificate, key or CA reaches
    /// new connections within this time, without a restart.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub tls_reload_interval: Duration,
    /// A second listener, plaintext, that serves only `grpc.health.v1.Health`: for probes
    /// that cannot speak (mutual) TLS, such as the kubelet's gRPC probes. Off when unset.
    pub health_listen: Option<SocketAddr>,
    /// Where to serve the metrics in Prometheus' text format (`GET /metrics`, plaintext
    /// HTTP), for a scraper. Off when unset; the same metrics go over OTLP when an endpoint is
    /// set either way.
    pub metrics_listen: Option<SocketAddr>,
    /// How often a peer URL's names (`dns:///host:port`, or host names in a list) are
    /// resolved again; sooner after a name resolved to nothing or a replica dropped out.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub peer_resolve_interval: Duration,
    /// OIDC issuers whose tokens (JWTs) people may present instead of an API key, on the
    /// services people call (orchestrator, approvals, router). Empty: API keys only.
    pub oidc: Vec<crate::oidc::OidcIssuer>,
}

impl ServerOptions {
    /// The three TLS files, when configured (all three: `validate` refuses fewer).
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => None,
        }
    }

    /// The TLS material, loaded and then kept current from its files (see [`crate::tls`]).
    pub fn tls_watch(&self) -> Result<Option<crate::tls::Watched>, Error> {
        self.tls()?;
        self.tls_files()
            .map(|f| crate::tls::watch(&f, self.tls_reload_interval))
            .transpose()
    }

    /// Mutual TLS material, when configured.
    pub fn tls(&self) -> Result<Option<Tls>, Error> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => Ok(None),
            (Some(c), Some(k), Some(ca)) => {
                let read = |p: &PathBuf| {
                    std::fs::read(p).map_err(|e| Error::Config(format!("{}: {e}", p.display())))
                };
                Ok(Some(Tls {
                    cert: read(c)?,
                    key: read(k)?,
                    ca: read(ca)?,
                }))
            }
            _ => Err(Error::Config(
                "tls_cert, tls_key and tls_ca: set all three for mutual TLS, or none".into(),
            )),
        }
    }
}

/// Installs rustls's crypto provider (ring, the only one compiled in) for the process, once.
/// reqwest is built without a provider of its own (`rustls-no-provider`, which keeps aws-lc-rs
/// out) and panics when a client is built before one is installed; tonic and tokio-rustls are
/// given ring explicitly, but share it from here too. Idempotent.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: another part of the process installed one first; that one stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Mutual TLS material (PEM).
#[derive(Clone)]
pub struct Tls {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

impl ServerOptions {
    pub fn with_port(port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            ..Self::default()
        }
    }

    /// On `port` of 127.0.0.1 with auth off: every caller is an anonymous admin. For tests,
    /// benches and a one-process dev harness, which say so by calling this.
    pub fn unauthenticated(port: u16) -> Self {
        Self {
            auth: crate::auth::AuthMode::Off,
            ..Self::with_port(port)
        }
    }

    pub fn validate(&self, out: &mut Vec<String>) {
        if self.request_timeout.is_zero() {
            out.push("request_timeout: must be more than zero".into());
        }
        if self.concurrency_limit == 0 {
            out.push("concurrency_limit: must be at least 1".into());
        }
        if self.peer_resolve_interval < Duration::from_secs(1) {
            out.push("peer_resolve_interval: must be at least 1s".into());
        }
        if self.tls_reload_interval < Duration::from_secs(1) {
            out.push("tls_reload_interval: must be at least 1s".into());
        }
        crate::oidc::validate(&self.oidc, out);
        let tls_set = self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_ca.is_some();
        if self.auth == crate::auth::AuthMode::Keys && self.internal_token.is_none() && !tls_set {
            out.push(
                "auth: 'keys' (the default) needs a way for the services to know each other: set \
                 internal_token (the same secret on every service) or tls_cert, tls_key and \
                 tls_ca (mutual TLS); or set auth = \"off\" where nobody else can reach the \
                 services (every caller is then an admin)"
                    .into(),
            );
        }
        if let Err(e) = self.tls() {
            out.push(
                e.to_string()
                    .trim_start_matches("invalid configuration: ")
                    .to_string(),
            );
        }
        if let Some(t) = &self.internal_token {
            use secrecy::ExposeSecret as _;
            if t.expose_secret().len() < 16 {
                out.push("internal_token: must be at least 16 characters".into());
            }
        }
        if let Some(m) = self.metrics_listen
            && m.port() != 0
        {
            for (key, other) in [
                ("listen", Some(self.listen)),
                ("health_listen", self.health_listen),
            ] {
                if other.is_some_and(|o| o.port() == m.port()) {
                    out.push(format!(
                        "metrics_listen: {m} uses the port of {key}; give the metrics their own port"
                    ));
                }
            }
        }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            request_timeout: Duration::from_secs(120),
            concurrency_limit: 256,
            grace_period: Duration::from_secs(20),
            addr_file: None,
            auth: crate::auth::AuthMode::Keys,
            internal_token: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_reload_interval: Duration::from_secs(10),
            health_listen: None,
            metrics_listen: None,
            peer_resolve_interval: Duration::from_secs(30),
            oidc: Vec::new(),
        }
    }
}

/// Checks a URL option: it parses and has one of the schemes.
/// Whether `u` is `https://` to some host, or `http://` to a loopback one (`localhost`, a
/// loopback address): where a credential may travel, on a network or only on this machine.
pub fn https_or_loopback(u: &url::Url) -> bool {
    match (u.scheme(), u.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Domain(d))) => d == "localhost",
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        _ => false,
    }
}

pub fn check_url(key: &str, value: &str, schemes: &[&str], out: &mut Vec<String>) {
    match url::Url::parse(value) {
        Ok(u) if schemes.contains(&u.scheme()) => {}
        Ok(u) => out.push(format!(
            "{key}: scheme '{}' is not one of {}",
            u.scheme(),
            schemes.join(", ")
        )),
        Err(e) => out.push(format!("{key}: '{value}' is not a URL ({e})")),
    }
}

/// A `redis_url`: one server, `redis+sentinel://` or `redis+cluster://`
/// (`redis_util::url`). The message never repeats the URL, which may hold a password.
pub fn check_redis_url(key: &str, value: &str, out: &mut Vec<String>) {
    if let Err(e) = crate::redis_util::RedisUrl::parse(value) {
        out.push(format!("{key}: {e}"));
    }
}

/// Checks a peer URL option: one http(s):// address, `dns:///host:port`, or a
/// comma-separated list of addresses.
pub fn check_peer_url(key: &str, value: &str, out: &mut Vec<String>) {
    match crate::peers::PeerUrl::parse(value) {
        Ok(crate::peers::PeerUrl::Single(u)) => check_url(key, &u, &["http", "https"], out),
        Ok(_) => {}
        Err(e) => out.push(format!("{key}: {e}")),
    }
}

#[cfg(test)]
mod tests;
