//! Issue 27 item 2: a credential bound at the egress boundary. The sandbox runs code the
//! model writes and calls an HTTPS API through the proxy; the proxy adds the credential and
//! scrubs it from the answer. The sandbox never holds the value: not in its environment, its
//! files or anything it reads back, in any form (checked reversed, which no redaction
//! catches, so a value that reached the sandbox would show).

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{Harness, Setup, code_tool};
use crate::secrets_and_list::broker_with;

/// An HTTPS API on 127.0.0.1 with a certificate for `localhost` from a CA of the test's own;
/// it records the Authorization header of each request and echoes it back in three forms,
/// in a chunked body.
struct Api {
    port: u16,
    ca_file: tempfile::NamedTempFile,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Api {
    async fn start() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        let mut ca_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut ca_file, ca_cert.pem().as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        #[allow(clippy::disallowed_methods)] // ends with the test's runtime
        tokio::spawn(async move {
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
                rec.lock().unwrap().push(auth.clone());
                let token = auth.strip_prefix("Bearer ").unwrap_or("");
                let body = json!({
                    "auth": auth,
                    "b64": base64::engine::general_purpose::STANDARD.encode(token),
                    "hex": hex::encode(token),
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
        Self {
            port,
            ca_file,
            seen,
        }
    }
}

#[tokio::test]
async fn a_credential_bound_at_the_boundary_is_used_but_never_seen_by_the_sandbox() {
    let token = format!("ghp-{}", bridle_testkit::unique("v"));
    let api = Api::start().await;
    let ((_bao, _redis), url, broker) = broker_with(&[("api-token", &token)]).await;
    let h = Harness::start_with(Setup {
        secrets_url: url,
        egress_upstream_ca_file: Some(api.ca_file.path().to_path_buf()),
        ..Setup::default()
    })
    .await;
    let port = api.port;
    // Model-written code with a credential: allowed without any opt-in, as it never holds it.
    h.apply(&code_tool(
        "gh",
        "python",
        &format!(
            "    egress: [\"localhost:{port}\"]\n    credentials:\n      - host: localhost\n        port: {port}\n        pathPrefix: /v1/\n        secret: secret://api-token\n"
        ),
    ))
    .await;
    let code = format!(
        r#"
import os, urllib.request
def get(url, headers={{}}):
    try:
        req = urllib.request.Request(url, headers=headers)
        return urllib.request.urlopen(req, timeout=20).read().decode()
    except Exception as e:
        return "refused " + str(e)
# The sandbox cannot choose the header: its own value is replaced.
print(get("https://localhost:{port}/v1/me", {{"Authorization": "Bearer made-up"}}))
# Outside the path prefix: no credential.
print(get("https://localhost:{port}/other"))
# Plain http to the bound host: refused, the credential is for https only.
print(get("http://localhost:{port}/v1/me"))
seen = "".join(os.environ.values())
for root, _, files in os.walk("/run"):
    for f in files:
        try:
            seen += open(os.path.join(root, f), errors="replace").read()
        except OSError:
            pass
print("REVERSED", seen[::-1])
"#
    );
    let r = h.call("run_b", "gh", json!({ "code": code })).await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    let first: serde_json::Value =
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(first["auth"], "Bearer [REDACTED]", "{r:?}");
    assert_eq!(
        (first["b64"].as_str(), first["hex"].as_str()),
        (Some("[REDACTED]"), Some("[REDACTED]")),
        "{r:?}"
    );
    let second: serde_json::Value =
        serde_json::from_str(lines[1]).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(
        second["auth"], "",
        "no credential outside the prefix: {r:?}"
    );
    assert_eq!(lines[2], "refused HTTP Error 403: Forbidden", "{r:?}");
    assert!(r.output.contains("sent over https only"), "{}", r.output);
    // The API got the real value, once, and the made-up one never.
    assert_eq!(
        api.seen.lock().unwrap().clone(),
        vec![format!("Bearer {token}"), String::new()]
    );
    // Nothing in the sandbox held it, in any form a reversal would not hide.
    let reversed: String = token.chars().rev().collect();
    assert!(r.stdout.contains("REVERSED"), "{r:?}");
    assert!(
        !r.stdout.contains(&reversed),
        "the sandbox held the value: {r:?}"
    );
    assert!(!r.stdout.contains(&token) && !r.output.contains(&token));
    h.stop().await;
    broker.trigger();
}
