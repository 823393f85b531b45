//! Channels to other Bridle services. Connections are lazy, so services can start in any
//! order; every call gets a deadline from the channel; a dead peer surfaces as UNAVAILABLE
//! naming the service and its address. A peer URL with several replicas (`dns:///host:port`
//! or a comma-separated list) is balanced over them: see [`crate::peers`].

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::Error;
use crate::peers::{Peer, PeerUrl, Resolve, SystemResolver};

/// A lazily connected channel to `url` ("http://127.0.0.1:50051").
pub fn channel(service: &str, url: &str, timeout: Duration) -> Result<Channel, Error> {
    let ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::Config(format!("{service} url '{url}': {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(ep.connect_lazy())
}

/// Maps a failed call to another service into an error that names it.
pub fn call_error(service: &str, status: tonic::Status) -> Error {
    crate::error::from_status(service, status)
}

/// What a service adds to every call it makes: the W3C trace context of the current span, and
/// its identity (name, and the internal token when auth is on).
#[derive(Clone, Default)]
pub struct Outgoing {
    name: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    tls: Option<crate::tls::Watched>,
    resolve_interval: std::time::Duration,
}

impl Outgoing {
    /// `me` is the calling service; the token comes from its server options.
    pub fn new(me: &str, opts: &crate::config::ServerOptions) -> Self {
        use secrecy::ExposeSecret as _;
        Self {
            name: me.parse().ok(),
            token: opts
                .internal_token
                .as_ref()
                .and_then(|t| t.expose_secret().parse().ok()),
            // Validated when the options were loaded; the same watch as the server's.
            tls: opts.tls_watch().ok().flatten(),
            resolve_interval: opts.peer_resolve_interval,
        }
    }

    /// How to dial the replicas of `service` (its certificates must name `service`).
    pub fn dial(&self, service: &str, timeout: Duration) -> crate::peers::Dial {
        let tls = self.tls.clone().map(crate::peers::ClientTls::Watched);
        crate::peers::Dial {
            service: service.to_string(),
            timeout,
            tls,
            tls_name: Some(service.to_string()),
            resolve_interval: if self.resolve_interval.is_zero() {
                Duration::from_secs(30)
            } else {
                self.resolve_interval
            },
        }
    }
}

impl tonic::service::Interceptor for Outgoing {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let cx = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut MetadataInjector(req.metadata_mut()))
        });
        if let Some(n) = &self.name {
            req.metadata_mut()
                .insert(crate::auth::SERVICE_NAME_HEADER, n.clone());
        }
        if let Some(t) = &self.token {
            req.metadata_mut()
                .insert(crate::auth::SERVICE_TOKEN_HEADER, t.clone());
        }
        Ok(req)
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>(),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// A channel that carries trace context and the caller's identity on every call.
pub type Traced = tonic::codegen::InterceptedService<Peer, Outgoing>;

/// A channel to `url` (one address, `dns:///host:port`, or a list), wrapped so every call
/// carries trace context and identity.
pub fn traced(
    service: &str,
    url: &str,
    timeout: Duration,
    outgoing: Outgoing,
) -> Result<Traced, Error> {
    let peer = peer(service, url, timeout, &outgoing, Arc::new(SystemResolver))?;
    Ok(tonic::codegen::InterceptedService::new(peer, outgoing))
}

/// The channel under [`traced`], with the resolver names go through (tests give their own
/// records).
pub fn peer(
    service: &str,
    url: &str,
    timeout: Duration,
    outgoing: &Outgoing,
    resolver: Arc<dyn Resolve>,
) -> Result<Peer, Error> {
    let mut parsed =
        PeerUrl::parse(url).map_err(|e| Error::Config(format!("{service} url {e}")))?;
    // With TLS material one address is a list of one: discovery redials it when the
    // material is rotated, which a single channel could not.
    if let (PeerUrl::Single(u), Some(_)) = (&parsed, &outgoing.tls) {
        parsed = PeerUrl::one(u).map_err(|e| Error::Config(format!("{service} url {e}")))?;
    }
    if parsed.is_discovered() {
        return Peer::discover(outgoing.dial(service, timeout), &parsed, resolver);
    }
    Ok(Peer::single(channel(service, url, timeout)?))
}

/// A channel over mutual TLS: the server must present a certificate for `service` signed by
/// the CA, and this side presents its own.
pub fn channel_tls(
    service: &str,
    url: &str,
    timeout: Duration,
    tls: &crate::config::Tls,
) -> Result<Channel, Error> {
    crate::config::install_crypto_provider();
    let cfg = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca))
        .identity(tonic::transport::Identity::from_pem(&tls.cert, &tls.key))
        .domain_name(service);
    let ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::Config(format!("{service} url '{url}': {e}")))?
        .tls_config(cfg)
        .map_err(|e| Error::Config(format!("{service} TLS: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(ep.connect_lazy())
}
