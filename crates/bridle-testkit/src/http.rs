//! HTTP clients for tests, with ring installed as the process's crypto provider first: reqwest
//! has no provider of its own in this workspace (`rustls-no-provider`), and would panic
//! otherwise. (bridle_core::http_client does the same for the services; the testkit does not
//! depend on bridle-core.)

/// A reqwest client with its defaults.
pub fn client() -> reqwest::Client {
    // Err: a provider is installed already (ring: the only one compiled in).
    let _ = rustls::crypto::ring::default_provider().install_default();
    #[allow(
        clippy::disallowed_methods,
        reason = "the testkit's one place that builds HTTP clients, after installing the provider"
    )]
    reqwest::Client::new()
}
