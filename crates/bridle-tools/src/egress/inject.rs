//! Credentials added at the egress boundary. A Tool's `credentials` bind a secret to one
//! destination (host, port, optional path prefix) and a header; the sandbox never holds the
//! value. For a CONNECT to a bound destination the proxy answers the tunnel itself: it
//! terminates TLS with a certificate for the host issued by the sandbox's own authority
//! ([`Authority`]: generated in memory when the sandbox's proxy starts, its key never leaves
//! this process; the sandbox trusts its certificate through `SSL_CERT_FILE` and friends),
//! reads one request, sends it on over TLS to the real host with the credential added (any
//! value the sandbox put in that header is dropped), reads the whole answer, scrubs every
//! form of the value it can recognise from the answer's headers and body, and hands it back.
//!
//! One request per connection (`Connection: close` both ways) and `Accept-Encoding: identity`
//! upstream, so the body the scrubber reads is the body as sent. Answers are read whole, up to
//! [`MAX_ANSWER`]: a larger one is refused rather than passed on unscrubbed. A binary (non-UTF-8)
//! body is scrubbed of the value's plain bytes only.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine as _;
use bridle_core::manifest::CredentialBinding;
use bridle_core::redact::Redactor;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The largest answer the proxy reads, scrubs and passes on.
pub const MAX_ANSWER: usize = 32 * 1024 * 1024;
const MAX_HEAD: usize = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the sandbox finds the authority's certificate (`ca.pem`) and the system's roots with
/// it (`bundle.pem`), in the proxy's folder.
pub const CA_FILE: &str = "ca.pem";
pub const BUNDLE_FILE: &str = "bundle.pem";

/// One credential of the call in progress, resolved.
#[derive(Clone)]
pub struct Injection {
    pub binding: CredentialBinding,
    pub value: SecretString,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection")
            .field("host", &self.binding.host)
            .field("port", &self.binding.port)
            .field("header", &self.binding.header_name())
            .field("query", &self.binding.query)
            .finish_non_exhaustive()
    }
}

impl Injection {
    fn value_text(&self) -> String {
        self.binding
            .format()
            .replacen("{}", self.value.expose_secret(), 1)
    }

    /// The request target with the credential as its query parameter (any the sandbox put
    /// under that name dropped).
    fn with_query(&self, name: &str, target: &str) -> String {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k != name {
                q.append_pair(&k, &v);
            }
        }
        q.append_pair(name, &self.value_text());
        format!("{path}?{}", q.finish())
    }
}

/// A certificate authority of one sandbox's proxy, in memory.
pub struct Authority {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authority")
    }
}

impl Authority {
    pub fn new() -> Result<Self, String> {
        let key = rcgen::KeyPair::generate().map_err(|e| format!("egress CA key: {e}"))?;
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| format!("egress CA: {e}"))?;
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            "Bridle egress proxy (one sandbox)",
        );
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).map_err(|e| format!("egress CA: {e}"))?;
        Ok(Self { cert, key })
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A TLS server configuration presenting a certificate for `host`, issued now.
    fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, String> {
        let key = rcgen::KeyPair::generate().map_err(|e| format!("leaf key: {e}"))?;
        let mut p = rcgen::CertificateParams::new(vec![host.to_string()])
            .map_err(|e| format!("certificate for '{host}': {e}"))?;
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let leaf = p
            .signed_by(&key, &self.cert, &self.key)
            .map_err(|e| format!("certificate for '{host}': {e}"))?;
        let chain = vec![leaf.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("certificate for '{host}': {e}"))?;
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's roots as PEM (for the sandbox's bundle), read once.
pub fn system_roots_pem() -> &'static str {
    static PEM: LazyLock<String> = LazyLock::new(|| {
        let found = rustls_native_certs::load_native_certs();
        found.certs.iter().map(|c| pem("CERTIFICATE", c)).collect()
    });
    &PEM
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The TLS client configuration for the real hosts: the system's roots, and the PEM
/// certificates of `extra_ca` (the `egress_upstream_ca_file` option) when set.
pub fn upstream_tls(
    extra_ca: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(path) = extra_ca {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("egress_upstream_ca_file: {}: {e}", path.display()))?;
        let certs = pem_certs(&text);
        if certs.is_empty() {
            return Err(format!(
                "egress_upstream_ca_file: {} holds no PEM certificate",
                path.display()
            ));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("egress_upstream_ca_file: {}: {e}", path.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn pem_certs(text: &str) -> Vec<CertificateDer<'static>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("-----BEGIN CERTIFICATE-----") {
        let body = &rest[i + 27..];
        let Some(j) = body.find("-----END CERTIFICATE-----") else {
            break;
        };
        let b64: String = body[..j].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(CertificateDer::from(der));
        }
        rest = &body[j..];
    }
    out
}

/// Serves one intercepted tunnel: `client` is the sandbox's side (the 200 already sent),
/// `upstream` a TCP connection to a checked address of `host:port`.
pub async fn intercept<C, U>(
    client: C,
    upstream: U,
    host: &str,
    port: u16,
    injections: &[Injection],
    authority: &Authority,
    upstream_tls: Arc<rustls::ClientConfig>,
) -> Result<(), String>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(authority.server_config(host)?);
    let mut inside = tokio::time::timeout(IO_TIMEOUT, acceptor.accept(client))
        .await
        .map_err(|_| "the sandbox's TLS handshake timed out".to_string())?
        .map_err(|e| format!("the sandbox's TLS handshake failed: {e}"))?;
    let mut buf = Vec::with_capacity(4096);
    let head_len = read_head(&mut inside, &mut buf, MAX_HEAD).await?;
    let head = String::from_utf8_lossy(&buf[..head_len]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let chosen = injections
        .iter()
        .find(|i| i.binding.applies(host, port, path));
    let request_line = match chosen.and_then(|c| Some((c, c.binding.query.as_deref()?))) {
        Some((c, name)) => {
            let mut parts = request_line.splitn(3, ' ');
            let (method, target, version) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or("/"),
                parts.next().unwrap_or("HTTP/1.1"),
            );
            format!("{method} {} {version}", c.with_query(name, target))
        }
        None => request_line,
    };
    let mut out = format!("{request_line}\r\n");
    for l in lines.filter(|l| !l.is_empty()) {
        let name = l
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let dropped = matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "proxy-authorization"
                | "accept-encoding"
        ) || chosen
            .and_then(|c| c.binding.header_name())
            .is_some_and(|h| h.eq_ignore_ascii_case(&name));
        if !dropped {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    if let Some(c) = chosen
        && let Some(h) = c.binding.header_name()
    {
        out.push_str(&format!("{h}: {}\r\n", c.value_text()));
    }
    out.push_str("Accept-Encoding: identity\r\nConnection: close\r\n\r\n");

    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("'{host}' is not a TLS server name"))?;
    let connector = tokio_rustls::TlsConnector::from(upstream_tls);
    let mut outside = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, upstream))
        .await
        .map_err(|_| format!("TLS with {host}:{port} timed out"))?
        .map_err(|e| format!("TLS with {host}:{port} failed: {e}"))?;
    outside
        .write_all(out.as_bytes())
        .await
        .map_err(|e| format!("sending to {host}: {e}"))?;
    // The request's body: what came with the head, then the rest as the sandbox sends it,
    // while the answer is read.
    outside
        .write_all(&buf[head_len..])
        .await
        .map_err(|e| format!("sending to {host}: {e}"))?;
    let (mut in_read, mut in_write) = tokio::io::split(inside);
    let (mut out_read, mut out_write) = tokio::io::split(outside);
    let body_up = async {
        let _ = tokio::io::copy(&mut in_read, &mut out_write).await;
        std::future::pending::<()>().await;
    };
    let answer = tokio::select! {
        () = body_up => unreachable_answer(),
        a = tokio::time::timeout(IO_TIMEOUT, read_answer(&mut out_read)) => a
            .map_err(|_| format!("{host} did not answer within {}s", IO_TIMEOUT.as_secs()))?,
    }?;
    let redactor = Redactor::new(
        injections
            .iter()
            .map(|i| i.value.expose_secret().to_string()),
    );
    let scrubbed = scrub(&answer, &redactor, injections);
    in_write
        .write_all(&scrubbed)
        .await
        .map_err(|e| format!("answering the sandbox: {e}"))?;
    let _ = in_write.shutdown().await;
    Ok(())
}

fn unreachable_answer() -> Result<Answer, String> {
    Err("the request's body ended the connection".into())
}

/// An answer as read: its head lines (status line first) and its body, de-chunked.
pub struct Answer {
    pub head: Vec<String>,
    pub body: Vec<u8>,
}

/// Reads into `buf` until the end of an HTTP head (at most `max` bytes, each read within
/// [`IO_TIMEOUT`]); returns the head's length with its blank line. The proxy reads the
/// sandbox's requests with it too.
pub(super) async fn read_head<R: AsyncRead + Unpin>(
    s: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<usize, String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(i + 4);
        }
        if buf.len() > max {
            return Err(format!("the head is larger than {} KiB", max >> 10));
        }
        let n = tokio::time::timeout(IO_TIMEOUT, s.read(&mut chunk))
            .await
            .map_err(|_| "no head in time".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection ended before the head did".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn read_answer<R: AsyncRead + Unpin>(s: &mut R) -> Result<Answer, String> {
    let mut buf = Vec::with_capacity(8192);
    let head_len = read_head(s, &mut buf, MAX_HEAD).await?;
    let head: Vec<String> = String::from_utf8_lossy(&buf[..head_len - 4])
        .split("\r\n")
        .map(str::to_string)
        .collect();
    let header = |n: &str| {
        head.iter().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(n)
                .then(|| v.trim().to_string())
        })
    };
    let mut rest = buf[head_len..].to_vec();
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
    if length.is_some_and(|l| l > MAX_ANSWER) {
        return Err(format!(
            "the answer is larger than {} MiB",
            MAX_ANSWER >> 20
        ));
    }
    // Read to the end of the connection (the request said Connection: close), bounded.
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(l) = length
            && rest.len() >= l
        {
            rest.truncate(l);
            break;
        }
        if rest.len() > MAX_ANSWER {
            return Err(format!(
                "the answer is larger than {} MiB",
                MAX_ANSWER >> 20
            ));
        }
        match s.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => rest.extend_from_slice(&chunk[..n]),
            // A TLS peer that closes without close_notify: what came is what there is.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let body = if chunked { dechunk(&rest)? } else { rest };
    Ok(Answer { head, body })
}

/// The body of a chunked message (extensions and trailers dropped).
pub fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(b.len());
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line without its end")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("'{size_text}' is not a chunk size"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            return Err("a chunk is shorter than its size".into());
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or_default();
    }
}

/// The answer as the sandbox gets it: every recognisable form of the values scrubbed from its
/// headers and body, framed by Content-Length, `Connection: close`.
pub fn scrub(a: &Answer, redactor: &Redactor, injections: &[Injection]) -> Vec<u8> {
    let body = match std::str::from_utf8(&a.body) {
        Ok(text) => redactor.redact(text).into_bytes(),
        Err(_) => {
            let mut b = a.body.clone();
            for i in injections {
                b = replace_bytes(&b, i.value.expose_secret().as_bytes(), b"[REDACTED]");
            }
            b
        }
    };
    let mut out = String::new();
    for (n, l) in a.head.iter().enumerate() {
        let name = l
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if n > 0
            && matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "connection" | "keep-alive"
            )
        {
            continue;
        }
        out.push_str(&redactor.redact(l));
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

fn replace_bytes(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_read_and_answers_scrubbed_and_reframed() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n").unwrap(),
            b"hello world"
        );
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"5\r\nhi").is_err());
        let tok = "s3cr3t-t0ken-value";
        let inj = Injection {
            binding: bridle_core::yaml::from_str("host: api.example.com\nsecret: secret://t\n")
                .unwrap(),
            value: SecretString::from(tok),
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(tok);
        let a = Answer {
            head: vec![
                "HTTP/1.1 200 OK".into(),
                format!("X-Echo: Bearer {tok}"),
                "Transfer-Encoding: chunked".into(),
            ],
            body: format!("{{\"auth\":\"Bearer {tok}\",\"b64\":\"{b64}\"}}").into_bytes(),
        };
        let r = Redactor::new([tok.to_string()]);
        let out = String::from_utf8(scrub(&a, &r, std::slice::from_ref(&inj))).unwrap();
        assert!(!out.contains(tok) && !out.contains(&b64), "{out}");
        assert!(
            out.starts_with("HTTP/1.1 200 OK\r\nX-Echo: Bearer [REDACTED]\r\n"),
            "{out}"
        );
        assert!(
            !out.to_ascii_lowercase().contains("transfer-encoding"),
            "{out}"
        );
        assert!(out.contains("Connection: close\r\n\r\n{"), "{out}");
        assert!(
            format!("{inj:?}").find(tok).is_none(),
            "Debug never shows the value"
        );
        assert!(CredentialBinding::applies(
            &inj.binding,
            "API.example.com.",
            443,
            "/x"
        ));
    }

    #[test]
    fn binary_bodies_lose_the_plain_value() {
        let a = Answer {
            head: vec!["HTTP/1.1 200 OK".into()],
            body: [&[0xff, 0xfe][..], b"tok123", &[0x00]].concat(),
        };
        let inj = Injection {
            binding: bridle_core::yaml::from_str("host: h.example\nsecret: secret://t\n").unwrap(),
            value: SecretString::from("tok123"),
        };
        let out = scrub(&a, &Redactor::new(["tok123".to_string()]), &[inj]);
        assert!(out.ends_with(b"\xff\xfe[REDACTED]\x00"));
    }
}
