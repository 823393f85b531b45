//! Where the harness is, and the clients to it: plain `http://`, or `https://` with the
//! system's CA roots, a CA file, and a client certificate for mutual TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bridle_core::peers::{Dial, Peer, PeerUrl, SystemResolver};
use bridle_proto::admin_client::AdminClient;
use bridle_proto::approvals_client::ApprovalsClient;
use bridle_proto::manifests_client::ManifestsClient;
use bridle_proto::orchestrator_client::OrchestratorClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The default orchestrator and approvals addresses, when no flag, environment variable or
/// context sets them.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";
pub const DEFAULT_APPROVALS_SERVER: &str = "http://127.0.0.1:50054";

/// Where the harness is, as the command line and the environment say; what they leave unset
/// comes from the context (config.rs), then the defaults.
#[derive(clap::Args, Clone, Debug)]
pub struct ConnFlags {
    /// The context (in the config file) to use instead of the current one.
    #[arg(long, global = true, env = "BRIDLE_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// The orchestrator's gRPC address; for several replicas, `dns:///host:port` (every
    /// address of the name) or a comma-separated list of addresses. Unset: the context's, else
    /// http://127.0.0.1:50051.
    #[arg(long, global = true, env = "BRIDLE_SERVER")]
    pub server: Option<String>,
    /// The approvals service's gRPC address (or `dns:///host:port`, or a comma-separated
    /// list). Unset: the context's, else http://127.0.0.1:50054.
    #[arg(long, global = true, env = "BRIDLE_APPROVALS_SERVER")]
    pub approvals_server: Option<String>,
    /// Tenant to act for (an API key bound to a tenant acts for its own). Unset: the
    /// context's, else the caller's (`default` without auth).
    #[arg(long, global = true, env = "BRIDLE_TENANT")]
    pub tenant: Option<String>,
    /// Bridle API key ("bk_..."), when the harness has auth on. Unset: the context's
    /// api-key-file or api-key-command.
    #[arg(long, global = true, env = "BRIDLE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// PEM file of the CA(s) that sign the servers' certificates, trusted for https://
    /// addresses instead of the system's roots (the services' `tls_ca`).
    #[arg(long, global = true, env = "BRIDLE_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate presented to https:// servers, for mutual TLS (the services'
    /// `tls_cert`); needs --tls-key.
    #[arg(long, global = true, env = "BRIDLE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (the services' `tls_key`).
    #[arg(long, global = true, env = "BRIDLE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// Where the harness is, settled: flag, else environment, else context, else default.
#[derive(Clone, Debug, Default)]
pub struct ConnArgs {
    /// The context the addresses came from (when no flag or variable set them), for
    /// messages: "context 'prod' (FILE)"; the orchestrator's, then the approvals service's.
    pub context: [Option<String>; 2],
    pub server: String,
    pub approvals_server: String,
    pub tenant: String,
    pub api_key: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl ConnFlags {
    /// Settles each setting: a flag or its environment variable (clap reads both; an empty
    /// value counts as unset), else the context's, else the default. The context's API key is
    /// read (its file, or its command run) only here, for commands that connect.
    pub fn resolve(&self) -> anyhow::Result<ConnArgs> {
        let loaded = crate::config::load()?;
        let picked = loaded.pick(self.context.as_deref())?;
        let ctx = picked.map(|(_, c)| c.clone()).unwrap_or_default();
        let s = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let p = |v: &Option<PathBuf>| v.clone().filter(|v| !v.as_os_str().is_empty());
        let from_ctx = |v: &Option<PathBuf>| v.as_ref().map(|v| loaded.resolve_path(v));
        let api_key = match s(&self.api_key) {
            Some(k) => Some(k),
            None => match picked {
                Some((name, c)) => crate::config::api_key(&loaded, name, c)?,
                None => None,
            },
        };
        Ok(ConnArgs {
            context: {
                let named =
                    picked.map(|(n, _)| format!("context '{n}' ({})", loaded.path.display()));
                let from = |flag: &Option<String>, ctx: &Option<String>| {
                    named.clone().filter(|_| s(flag).is_none() && ctx.is_some())
                };
                [
                    from(&self.server, &ctx.server),
                    from(&self.approvals_server, &ctx.approvals_server),
                ]
            },
            server: s(&self.server)
                .or(ctx.server)
                .unwrap_or_else(|| DEFAULT_SERVER.into()),
            approvals_server: s(&self.approvals_server)
                .or(ctx.approvals_server)
                .unwrap_or_else(|| DEFAULT_APPROVALS_SERVER.into()),
            tenant: s(&self.tenant).or(ctx.tenant).unwrap_or_default(),
            api_key,
            tls_ca: p(&self.tls_ca).or_else(|| from_ctx(&ctx.tls_ca)),
            tls_cert: p(&self.tls_cert).or_else(|| from_ctx(&ctx.tls_cert)),
            tls_key: p(&self.tls_key).or_else(|| from_ctx(&ctx.tls_key)),
        })
    }
}

/// Adds the API key to every call.
#[derive(Clone)]
pub struct KeyInterceptor(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for KeyInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Ch = tonic::codegen::InterceptedService<Peer, KeyInterceptor>;

/// Which server a channel goes to: its name in messages and the flag that sets its address.
#[derive(Clone, Copy)]
struct Target {
    what: &'static str,
    flag: &'static str,
}

const ORCHESTRATOR: Target = Target {
    what: "orchestrator",
    flag: "--server",
};
const APPROVALS: Target = Target {
    what: "approvals service",
    flag: "--approvals-server",
};

impl ConnArgs {
    /// A flag set to an empty value (`BRIDLE_TLS_CA=`) counts as not set.
    fn given(p: &Option<PathBuf>) -> Option<&Path> {
        p.as_deref().filter(|p| !p.as_os_str().is_empty())
    }

    /// Flags that only make sense together; checked before anything runs (a usage error).
    pub fn check(&self) -> Result<(), String> {
        match (Self::given(&self.tls_cert), Self::given(&self.tls_key)) {
            (Some(c), None) => Err(format!(
                "--tls-cert {} needs --tls-key (its private key; or BRIDLE_TLS_KEY): a client \
                 certificate is presented with its key, so set both or neither",
                c.display()
            )),
            (None, Some(k)) => Err(format!(
                "--tls-key {} needs --tls-cert (the certificate it belongs to; or \
                 BRIDLE_TLS_CERT): set both or neither",
                k.display()
            )),
            _ => Ok(()),
        }
    }

    /// The TLS flags that are set, for messages.
    fn tls_flags(&self) -> Vec<&'static str> {
        [
            ("--tls-ca", &self.tls_ca),
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
        ]
        .into_iter()
        .filter(|(_, p)| Self::given(p).is_some())
        .map(|(f, _)| f)
        .collect()
    }

    /// The client side of TLS: the CA file's roots, else the system's; the client
    /// certificate when one is given.
    fn tls_config(&self) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        // rustls has two crypto providers compiled in; without a choice the first handshake
        // would panic.
        bridle_core::config::install_crypto_provider();
        let read = |flag: &str, p: &Path| {
            std::fs::read(p).with_context(|| format!("reading {flag} {}", p.display()))
        };
        let mut cfg = ClientTlsConfig::new();
        cfg = match Self::given(&self.tls_ca) {
            Some(ca) => cfg.ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?)),
            None => cfg.with_native_roots(),
        };
        if let (Some(c), Some(k)) = (Self::given(&self.tls_cert), Self::given(&self.tls_key)) {
            cfg = cfg.identity(Identity::from_pem(
                read("--tls-cert", c)?,
                read("--tls-key", k)?,
            ));
        }
        Ok(cfg)
    }

    async fn channel(&self, t: Target, url: &str) -> anyhow::Result<Peer> {
        let parsed = PeerUrl::parse(url)
            .map_err(|e| anyhow::anyhow!("{} address {e} ({})", t.what, t.flag))?;
        if parsed.is_discovered() {
            return self.discovered(t, url, &parsed);
        }
        let mut ep = tonic::transport::Endpoint::from_shared(url.to_string())
            .with_context(|| format!("{} address '{url}' ({})", t.what, t.flag))?
            .connect_timeout(Duration::from_secs(5));
        if ep.uri().scheme_str() == Some("https") {
            ep = ep.tls_config(self.tls_config()?).map_err(|e| {
                anyhow::anyhow!(
                    "the TLS settings ({}) cannot be used: {}",
                    self.tls_settings(),
                    chain(&e)
                )
            })?;
        } else if let Some(flag) = self.tls_flags().first() {
            // Dropping the flag silently would send in plain text what was meant to go over
            // TLS.
            anyhow::bail!(
                "{flag} is set, but the {} address {url} is not https://: use an https:// \
                 address in {} (or unset {flag})",
                t.what,
                t.flag
            );
        }
        let ch = ep
            .connect()
            .await
            .map_err(|e| self.connect_error(t, url, &e, false))?;
        // In TLS 1.3 the client's side of the handshake is done before the server has checked
        // the client's certificate (or its absence), and HTTP/2 is set up without waiting for
        // the server: a refusal, like a plain-text client at a TLS server, only shows at the
        // first call. Make that call here, where the address and the flags are known, so the
        // message can say which to change. The health service answers without credentials.
        let probe = HealthClient::new(ch.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        match probe {
            Err(s) if broken_connection(&s) => Err(self.connect_error(t, url, &s, true)),
            // Any answer (SERVING or not, even UNIMPLEMENTED) means the connection works.
            _ => Ok(Peer::single(ch)),
        }
    }

    /// Several replicas (`dns:///host:port` or a list): calls are spread over those that
    /// answer their health check. A `dns:///` name is dialled over TLS when a TLS flag is
    /// set; a list entry by its own scheme. Certificates must name the host as written, not
    /// the address it resolved to.
    fn discovered(&self, t: Target, raw: &str, url: &PeerUrl) -> anyhow::Result<Peer> {
        let flags = self.tls_flags();
        let https = match url {
            PeerUrl::Dns(_) => !flags.is_empty(),
            PeerUrl::List(v) => v.iter().any(|e| e.https),
            PeerUrl::Single(_) => false,
        };
        if let (false, Some(flag)) = (https, flags.first()) {
            anyhow::bail!(
                "{flag} is set, but no address in {} ({}) is https://: use https:// addresses \
                 (or unset {flag})",
                t.flag,
                t.what
            );
        }
        let tls = if https {
            Some(self.tls_config()?)
        } else {
            None
        };
        let dial = Dial {
            service: t.what.to_string(),
            // The CLI sets no deadline of its own (a watch streams for as long as the run
            // goes); this only bounds a call nothing answers.
            timeout: Duration::from_secs(24 * 3600),
            tls: tls.map(bridle_core::peers::ClientTls::Fixed),
            tls_name: None,
            resolve_interval: Duration::from_secs(30),
        };
        Peer::discover(dial, url, std::sync::Arc::new(SystemResolver))
            .map_err(|e| anyhow::anyhow!("{} address {raw} ({}): {e}", t.what, t.flag))
    }

    fn tls_settings(&self) -> String {
        let shown = |flag: &str, p: &Option<PathBuf>| {
            Self::given(p).map(|p| format!("{flag} {}", p.display()))
        };
        let v: Vec<String> = [
            shown("--tls-ca", &self.tls_ca),
            shown("--tls-cert", &self.tls_cert),
            shown("--tls-key", &self.tls_key),
        ]
        .into_iter()
        .flatten()
        .collect();
        if v.is_empty() {
            "the system's CA roots".into()
        } else {
            v.join(", ")
        }
    }

    /// Says why a connection failed, and for TLS failures which flag fixes it. `handshaken`:
    /// the connection was made and broke at its first call.
    fn connect_error(
        &self,
        t: Target,
        url: &str,
        e: &(dyn std::error::Error + 'static),
        handshaken: bool,
    ) -> anyhow::Error {
        use rustls::{AlertDescription as A, CertificateError as C, Error as R};
        let what = t.what;
        let ca_hint = match Self::given(&self.tls_ca) {
            Some(ca) => format!(
                "it is not signed by the CA in --tls-ca {}: pass the CA that signed it",
                ca.display()
            ),
            None => "pass the CA that signed it with --tls-ca FILE (or BRIDLE_TLS_CA)".into(),
        };
        let cert_hint = match Self::given(&self.tls_cert) {
            Some(c) => format!(
                "the client certificate --tls-cert {} may not be signed by a CA the server \
                 trusts: use one that is",
                c.display()
            ),
            None => "pass a client certificate with --tls-cert FILE and --tls-key FILE (or \
                     BRIDLE_TLS_CERT and BRIDLE_TLS_KEY)"
                .into(),
        };
        let why = match rustls_error(e) {
            Some(R::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => format!(
                "the {what} at {url} presented a TLS certificate that is not trusted (unknown \
                 issuer); {ca_hint}"
            ),
            Some(R::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
                format!(
                    "the {what} at {url} presented a TLS certificate that is not valid for that \
                     host name: use a host the certificate names in {}",
                    t.flag
                )
            }
            Some(R::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => {
                format!("the {what} at {url} presented an expired TLS certificate")
            }
            Some(R::InvalidCertificate(other)) => format!(
                "the {what} at {url} presented a TLS certificate that is not accepted \
                 ({other:?}); {ca_hint}"
            ),
            Some(R::AlertReceived(
                A::CertificateRequired | A::BadCertificate | A::UnknownCA | A::HandshakeFailure,
            )) => format!(
                "the {what} at {url} requires a client certificate (mutual TLS); {cert_hint}"
            ),
            Some(R::InvalidMessage(_) | R::InappropriateMessage { .. }) => format!(
                "the {what} at {url} does not answer in TLS: if it serves plain text, use an \
                 http:// address in {}",
                t.flag
            ),
            Some(other) => format!("TLS with the {what} at {url} failed: {other}"),
            // HTTP/2 carries an I/O error on as its text only, so a TLS alert from here on is
            // known by its words.
            None if handshaken && url.starts_with("https://") => {
                let detail = chain(e);
                let refused = [
                    "CertificateRequired",
                    "BadCertificate",
                    "UnknownCA",
                    "HandshakeFailure",
                ]
                .iter()
                .any(|a| detail.contains(&format!("fatal alert: {a}")));
                if refused {
                    format!(
                        "the {what} at {url} requires a client certificate it trusts (mutual \
                         TLS) and refused the connection ({detail}); {cert_hint}"
                    )
                } else {
                    format!(
                        "the {what} at {url} closed the connection right after the TLS \
                         handshake ({detail}): a server that requires a client certificate \
                         (mutual TLS) does that; {cert_hint}"
                    )
                }
            }
            None if handshaken => format!(
                "the {what} at {url} broke the connection at the first call ({}): if it serves \
                 TLS, use an https:// address in {}",
                chain(e),
                t.flag
            ),
            None => match &self.context[usize::from(t.flag != ORCHESTRATOR.flag)] {
                Some(c) => format!(
                    "cannot reach the {what} at {url} (is `bridle dev` running? the address \
                     comes from {c}; {} overrides it): {}",
                    t.flag,
                    chain(e)
                ),
                None => format!(
                    "cannot reach the {what} at {url} (is `bridle dev` running? is {} right?): {}",
                    t.flag,
                    chain(e)
                ),
            },
        };
        anyhow::anyhow!(why)
    }

    fn interceptor(&self) -> anyhow::Result<KeyInterceptor> {
        let v = match &self.api_key {
            Some(k) if !k.is_empty() => Some(format!("Bearer {k}").parse().map_err(|_| {
                anyhow::anyhow!("the API key contains characters that cannot be sent in a header")
            })?),
            _ => None,
        };
        Ok(KeyInterceptor(v))
    }

    pub async fn orchestrator(&self) -> anyhow::Result<OrchestratorClient<Ch>> {
        let ch = self.channel(ORCHESTRATOR, &self.server).await?;
        Ok(
            OrchestratorClient::with_interceptor(ch, self.interceptor()?)
                .max_decoding_message_size(64 << 20),
        )
    }

    pub async fn manifests(&self) -> anyhow::Result<ManifestsClient<Ch>> {
        let ch = self.channel(ORCHESTRATOR, &self.server).await?;
        Ok(ManifestsClient::with_interceptor(ch, self.interceptor()?))
    }

    pub async fn admin(&self) -> anyhow::Result<AdminClient<Ch>> {
        let ch = self.channel(ORCHESTRATOR, &self.server).await?;
        Ok(AdminClient::with_interceptor(ch, self.interceptor()?))
    }

    pub async fn approvals(&self) -> anyhow::Result<ApprovalsClient<Ch>> {
        let ch = self.channel(APPROVALS, &self.approvals_server).await?;
        Ok(ApprovalsClient::with_interceptor(ch, self.interceptor()?))
    }
}

/// The rustls error behind a failed connection, if TLS is why it failed. tokio-rustls wraps
/// it in an `io::Error`, whose `source()` skips the wrapped error itself, so each link is
/// looked into as well.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// A call that failed because the connection did, rather than with the server's answer.
fn broken_connection(s: &tonic::Status) -> bool {
    use std::error::Error as _;
    s.source().is_some()
        || matches!(
            s.code(),
            tonic::Code::Cancelled | tonic::Code::Unknown | tonic::Code::Unavailable
        )
}

/// An error and its causes on one line ("transport error: tcp connect error: Connection
/// refused").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    // A status's Display repeats its source's Debug; its message is the first link.
    let first = match e.downcast_ref::<tonic::Status>() {
        Some(s) => s.message().to_string(),
        None => e.to_string(),
    };
    let mut parts = vec![first];
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// A gRPC error as a one-line message: the status message, and the code when it adds
/// something.
pub fn status(what: &str, s: tonic::Status) -> anyhow::Error {
    let code = match s.code() {
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "timed out",
        tonic::Code::ResourceExhausted => "limit reached",
        _ => "failed",
    };
    anyhow::anyhow!("{what} {code}: {}", s.message())
}
