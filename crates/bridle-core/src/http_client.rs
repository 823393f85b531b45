//! HTTP clients (reqwest) with the workspace's one crypto provider, ring.
//!
//! reqwest is built with `rustls-no-provider`, so that aws-lc-rs is not compiled in beside ring
//! (tonic's, rcgen's, jsonwebtoken's). Such a reqwest panics when a client is built before the
//! process has a crypto provider: every client of the workspace is built here, after
//! [`install_crypto_provider`](crate::config::install_crypto_provider) (clippy's
//! disallowed-methods refuses `reqwest::Client::new`/`builder` anywhere else). A service
//! binary installs it first thing as well (`service::run_main`), for the clients that
//! libraries build themselves (vaultrs, rmcp's OAuth, the OTLP exporter).

/// A client builder, the process's crypto provider installed.
pub fn builder() -> reqwest::ClientBuilder {
    crate::config::install_crypto_provider();
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place that builds HTTP clients, after installing the provider"
    )]
    reqwest::Client::builder()
}

/// A client with reqwest's defaults, the process's crypto provider installed.
pub fn new() -> reqwest::Client {
    crate::config::install_crypto_provider();
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place that builds HTTP clients, after installing the provider"
    )]
    reqwest::Client::new()
}

#[cfg(test)]
mod tests {
    /// Without a provider of its own, reqwest would panic here if ring were not installed.
    #[test]
    fn clients_build_with_ring_installed() {
        assert!(super::builder().build().is_ok());
        let _ = super::new();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
