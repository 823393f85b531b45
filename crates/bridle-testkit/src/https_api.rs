//! An HTTPS API on 127.0.0.1 with a certificate for `localhost` from a certificate authority of
//! the test's own (its PEM in [`EchoApi::ca_file`], for the client to trust). It records the
//! `Authorization` header of each request and echoes it back, with the bearer token in base64
//! and hex, in a chunked JSON body and an `X-Seen` header: an API that leaks the credential it
//! was sent in every way, for the tests of credentials bound at the egress boundary.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub struct EchoApi {
    pub port: u16,
    /// The authority's certificate (PEM).
    pub ca_file: tempfile::NamedTempFile,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl EchoApi {
    pub async fn start() -> anyhow::Result<Self> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])?
            .signed_by(&key, &ca_cert, &ca_key)?;
        let mut ca_file = tempfile::NamedTempFile::new()?;
        std::io::Write::write_all(&mut ca_file, ca_cert.pem().as_bytes())?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        // Ends when the EchoApi is dropped (the handle aborts it) or with the test's runtime.
        #[allow(clippy::disallowed_methods)]
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let auth = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Authorization: "))
                    .unwrap_or("")
                    .to_string();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                rec.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((auth.clone(), target));
                let token = auth.strip_prefix("Bearer ").unwrap_or("");
                let body = serde_json::json!({
                    "auth": auth,
                    "b64": base64::engine::general_purpose::STANDARD.encode(token),
                    "hex": token.bytes().map(|b| format!("{b:02x}")).collect::<String>(),
                })
                .to_string();
                let (a, b) = body.split_at(body.len() / 2);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Seen: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                    a.len(),
                    b.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        Ok(Self {
            port,
            ca_file,
            seen,
            _task: task,
        })
    }

    /// The Authorization header of each request so far ("" when it had none).
    pub fn seen(&self) -> Vec<String> {
        self.requests().into_iter().map(|(a, _)| a).collect()
    }

    /// Each request so far: (Authorization header, request target).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for EchoApi {
    fn drop(&mut self) {
        self._task.abort();
    }
}
