//! Mutual TLS material that follows its files: read at start (an unreadable or mismatched
//! file is a configuration error), then read again every `tls_reload_interval`. When the
//! files change and the new material is whole and consistent, new connections use it —
//! accepted ones get the new server certificate and CA, outgoing ones present the new client
//! certificate — and connections already open keep theirs. Material that does not load (a
//! certificate renewed before its key, a broken file) is refused with a warning and the last
//! good material stays, so a half-written rotation never takes a service down.
//!
//! One watch per set of files per process: the server and every client of a service share it
//! (`bridle dev`, which runs several services in one process, has one per service).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use crate::Error;
use crate::config::Tls;

/// The three files, as configured.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// One consistent generation of the material.
pub struct Material {
    pub pem: Tls,
    /// For accepted connections: this certificate, client certificates verified against the
    /// CA but optional (a person with an API key has none), HTTP/2 only.
    pub server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Material { .. }")
    }
}

impl Material {
    /// Builds the material from PEM, checking everything a handshake would need: the
    /// certificate chain, the key and that it belongs to the certificate, the CA.
    pub fn from_pem(pem: Tls, files: &TlsFiles) -> Result<Self, String> {
        crate::config::install_crypto_provider();
        let certs = read_certs(&pem.cert).map_err(|e| format!("{}: {e}", files.cert.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| {
            format!(
                "{}: no PEM private key could be read ({e})",
                files.key.display()
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(&pem.ca).map_err(|e| format!("{}: {e}", files.ca.display()))? {
            roots
                .add(c)
                .map_err(|e| format!("{}: not a CA certificate ({e})", files.ca.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots.clone()),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("{}: {e}", files.ca.display()))?;
        let mismatch = |e: rustls::Error| {
            format!(
                "{} and {}: {e} (is the key the certificate's?)",
                files.cert.display(),
                files.key.display()
            )
        };
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(mismatch)?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        // The client side is what tonic builds from the PEM at each connection; building it
        // here once finds what it would refuse.
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(mismatch)?;
        Ok(Self {
            pem,
            server: Arc::new(server),
        })
    }

    /// What outgoing connections present and verify, checked for `server_name`.
    pub fn client(&self) -> tonic::transport::ClientTlsConfig {
        crate::config::install_crypto_provider();
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.pem.ca))
            .identity(tonic::transport::Identity::from_pem(
                &self.pem.cert,
                &self.pem.key,
            ))
    }
}

fn read_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let v = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates ({e})"))?;
    if v.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(v)
}

/// The current material, kept current by the files' watch.
#[derive(Clone, Debug)]
pub struct Watched {
    rx: watch::Receiver<Arc<Material>>,
}

impl Watched {
    pub fn current(&self) -> Arc<Material> {
        self.rx.borrow().clone()
    }

    /// Waits for material newer than the last seen through this handle. Pending forever
    /// when nothing watches the files any more (no runtime to reload on).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Material that never changes (tests).
    pub fn fixed(m: Material) -> Self {
        let (_tx, rx) = watch::channel(Arc::new(m));
        Self { rx }
    }
}

fn read(files: &TlsFiles) -> Result<Tls, String> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    Ok(Tls {
        cert: read(&files.cert)?,
        key: read(&files.key)?,
        ca: read(&files.ca)?,
    })
}

type Watches = Mutex<HashMap<TlsFiles, Watched>>;

fn watches() -> &'static Watches {
    static W: std::sync::OnceLock<Watches> = std::sync::OnceLock::new();
    W.get_or_init(Watches::default)
}

/// The material of `files`, loaded now, and re-read every `interval` by a task on the current
/// tokio runtime (none: loaded once). Calls for the same files share one watch while its task
/// runs.
pub fn watch(files: &TlsFiles, interval: Duration) -> Result<Watched, Error> {
    let mut all = watches().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(w) = all.get(files)
        // A watch whose task ended (its runtime is gone) is replaced.
        && w.rx.has_changed().is_ok()
    {
        return Ok(w.clone());
    }
    let pem = read(files).map_err(Error::Config)?;
    let first = Material::from_pem(pem, files).map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let (tx, rx) = watch::channel(Arc::new(first));
    let w = Watched { rx };
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(follow(
            files.clone(),
            interval.max(Duration::from_secs(1)),
            tx,
        ));
        all.insert(files.clone(), w.clone());
    }
    Ok(w)
}

/// Re-reads the files every `interval`, for as long as the runtime it was spawned on runs.
async fn follow(files: TlsFiles, interval: Duration, tx: watch::Sender<Arc<Material>>) {
    let mut refused: Option<String> = None;
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let pem = match read(&files) {
            Ok(p) => p,
            Err(e) => {
                if refused.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "cannot read the TLS files again; the last good certificate stays in use");
                    refused = Some(e);
                }
                continue;
            }
        };
        let same = {
            let cur = tx.borrow();
            cur.pem.cert == pem.cert && cur.pem.key == pem.key && cur.pem.ca == pem.ca
        };
        if same {
            continue;
        }
        match Material::from_pem(pem, &files) {
            Ok(m) => {
                refused = None;
                tracing::info!(
                    cert = %files.cert.display(),
                    "TLS certificate, key or CA changed: new connections use them"
                );
                tx.send_replace(Arc::new(m));
            }
            Err(e) => {
                if refused.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "the changed TLS files do not load; the last good certificate stays in use");
                    refused = Some(e);
                }
            }
        }
    }
}
