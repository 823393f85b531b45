//! The CLI over TLS, against the real orchestrator and approvals services serving TLS with
//! certificates from deploy/certs/make-dev-ca.sh: with a CA file, with the system's roots,
//! refused (and saying which flag to set) without the CA, and with a client certificate for a
//! server that requires one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::config::ServerOptions;
use bridle_testkit::RedisServer;

use crate::support::{Ran, bridle, run};

struct Services {
    _redis: RedisServer,
    certs: tempfile::TempDir,
    shutdown: Shutdown,
    /// https:// addresses.
    orchestrator: String,
    approvals: String,
    /// An orchestrator on the same data without TLS, for the proxy that requires client
    /// certificates.
    plain_orchestrator: SocketAddr,
}

impl Services {
    async fn start() -> Services {
        let redis = RedisServer::start().await.unwrap();
        let certs = make_ca().await;
        let prefix = bridle_testkit::unique("cli-tls");
        let shutdown = Shutdown::new();
        let tls = |svc: &str| ServerOptions {
            tls_cert: Some(certs.path().join(format!("{svc}.pem"))),
            tls_key: Some(certs.path().join(format!("{svc}.key"))),
            tls_ca: Some(certs.path().join("ca.pem")),
            ..ServerOptions::unauthenticated(0)
        };
        let approvals = bridle_approvals::start(
            bridle_approvals::Options {
                server: tls("approvals"),
                redis_url: redis.url(),
                key_prefix: prefix.clone(),
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let orchestrator_options = |server: ServerOptions| bridle_orchestrator::Options {
            server,
            redis_url: redis.url(),
            key_prefix: prefix.clone(),
            approvals_url: format!("https://{approvals}"),
            // Never called by what these tests do.
            router_url: "https://127.0.0.1:9".into(),
            tools_url: "https://127.0.0.1:9".into(),
            secrets_url: "https://127.0.0.1:9".into(),
            workers: 1,
            ..Default::default()
        };
        let orchestrator =
            bridle_orchestrator::start(orchestrator_options(tls("orchestrator")), shutdown.clone())
                .await
                .unwrap();
        let plain_orchestrator = bridle_orchestrator::start(
            bridle_orchestrator::Options {
                // Without TLS material of its own it cannot follow the approvals service;
                // nothing here needs it to.
                approvals_url: "http://127.0.0.1:9".into(),
                ..orchestrator_options(ServerOptions::unauthenticated(0))
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        Services {
            _redis: redis,
            certs,
            shutdown,
            orchestrator: format!("https://{orchestrator}"),
            approvals: format!("https://{approvals}"),
            plain_orchestrator,
        }
    }

    fn cert(&self, file: &str) -> PathBuf {
        self.certs.path().join(file)
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.shutdown.drain(Duration::from_secs(10)).await;
    }
}

/// A development CA and its certificates (orchestrator, approvals, cli, ...), as
/// deploy/certs/make-dev-ca.sh makes them.
async fn make_ca() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = bridle_testkit::paths::workspace_root().join("deploy/certs/make-dev-ca.sh");
    let made = tokio::process::Command::new("bash")
        .arg(script)
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(made.status.success(), "make-dev-ca.sh: {made:?}");
    dir
}

/// `bridle runs list` against `server`, with extra arguments before the command.
async fn runs_list(server: &str, args: &[&str]) -> Ran {
    run(bridle()
        .args(["--server", server])
        .args(args)
        .args(["runs", "list"]))
    .await
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_reaches_services_over_tls_with_the_ca_or_the_system_roots() {
    let s = Services::start().await;
    let ca = s.cert("ca.pem");

    let r = runs_list(&s.orchestrator, &["--tls-ca", arg(&ca)]).await;
    assert_eq!(r.code, Some(0), "runs list with --tls-ca: {r}");

    // The approvals service over https too, the CA from the environment this time.
    let r = run(bridle().env("BRIDLE_TLS_CA", &ca).args([
        "--approvals-server",
        &s.approvals,
        "approvals",
        "list",
    ]))
    .await;
    assert_eq!(r.code, Some(0), "approvals list with BRIDLE_TLS_CA: {r}");

    // No CA file: the system's roots, here a CA bundle named by SSL_CERT_FILE as an
    // administrator would install one.
    let r =
        run(bridle()
            .env("SSL_CERT_FILE", &ca)
            .args(["--server", &s.orchestrator, "runs", "list"]))
        .await;
    assert_eq!(r.code, Some(0), "runs list with the system roots: {r}");

    // Plain text to a TLS server: told to use https://.
    let plain = s.orchestrator.replacen("https://", "http://", 1);
    let r = runs_list(&plain, &[]).await;
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("use an https:// address in --server"),
        "{r}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_ca_the_cli_says_the_certificate_is_not_trusted_and_which_flag_to_set() {
    let s = Services::start().await;
    // The system's roots (Debian's bundle) do not include the development CA.
    let r = runs_list(&s.orchestrator, &[]).await;
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("not trusted"), "{r}");
    assert!(r.stderr.contains("--tls-ca"), "{r}");
    assert!(r.stderr.contains(&s.orchestrator), "{r}");

    // A CA that did not sign the server's certificate: the message names the file given.
    let other = make_ca().await;
    let wrong = other.path().join("ca.pem");
    let r = runs_list(&s.orchestrator, &["--tls-ca", arg(&wrong)]).await;
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("not trusted"), "{r}");
    assert!(r.stderr.contains(arg(&wrong)), "{r}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_requires_a_client_certificate_gets_it_from_tls_cert_and_tls_key() {
    let s = Services::start().await;
    let proxy = mtls_proxy(s.certs.path(), s.plain_orchestrator, &s.shutdown).await;
    let server = format!("https://{proxy}");
    let ca = s.cert("ca.pem");

    let r = runs_list(&server, &["--tls-ca", arg(&ca)]).await;
    assert_eq!(r.code, Some(1), "no client certificate: {r}");
    assert!(r.stderr.contains("client certificate"), "{r}");
    assert!(r.stderr.contains("--tls-cert"), "{r}");

    // A certificate from another CA is refused, and the message names the file.
    let other = make_ca().await;
    let stranger = other.path().join("cli.pem");
    let r = runs_list(
        &server,
        &[
            "--tls-ca",
            arg(&ca),
            "--tls-cert",
            arg(&stranger),
            "--tls-key",
            arg(&other.path().join("cli.key")),
        ],
    )
    .await;
    assert_eq!(r.code, Some(1), "a client certificate from another CA: {r}");
    assert!(r.stderr.contains(arg(&stranger)), "{r}");

    let (cert, key) = (s.cert("cli.pem"), s.cert("cli.key"));
    let r = runs_list(
        &server,
        &[
            "--tls-ca",
            arg(&ca),
            "--tls-cert",
            arg(&cert),
            "--tls-key",
            arg(&key),
        ],
    )
    .await;
    assert_eq!(r.code, Some(0), "with --tls-cert and --tls-key: {r}");

    // The same from the environment, named like the services' options.
    let r = run(bridle()
        .env("BRIDLE_TLS_CA", &ca)
        .env("BRIDLE_TLS_CERT", &cert)
        .env("BRIDLE_TLS_KEY", &key)
        .args(["--server", &server, "runs", "list"]))
    .await;
    assert_eq!(
        r.code,
        Some(0),
        "with BRIDLE_TLS_CERT and BRIDLE_TLS_KEY: {r}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_client_certificate_without_its_key_is_a_usage_error_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("cli.pem");
    std::fs::write(&pem, "").unwrap();
    for r in [
        run(bridle().args(["--tls-cert", arg(&pem), "runs", "list"])).await,
        run(bridle().env("BRIDLE_TLS_CERT", &pem).args(["runs", "list"])).await,
        run(bridle().args(["--tls-key", arg(&pem), "runs", "list"])).await,
    ] {
        assert_eq!(r.code, Some(2), "{r}");
        assert!(
            r.stderr.contains("--tls-cert") && r.stderr.contains("--tls-key"),
            "{r}"
        );
    }
}

#[tokio::test]
async fn tls_settings_with_a_plain_http_address_are_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "").unwrap();
    let r = runs_list("http://127.0.0.1:9", &["--tls-ca", arg(&ca)]).await;
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("--tls-ca") && r.stderr.contains("https://"),
        "{r}"
    );
}

/// A TLS front that requires a client certificate signed by the development CA (as an
/// ingress doing mutual TLS would), passing the decrypted stream to `backend`. The services
/// themselves ask for client certificates but accept callers without one (people with API
/// keys), so a server that insists is built here.
async fn mtls_proxy(certs: &Path, backend: SocketAddr, shutdown: &Shutdown) -> SocketAddr {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    bridle_core::config::install_crypto_provider();
    let chain = |f: &str| {
        CertificateDer::pem_file_iter(certs.join(f))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in chain("ca.pem") {
        roots.add(c).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let mut cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            chain("orchestrator.pem"),
            PrivateKeyDer::from_pem_file(certs.join("orchestrator.key")).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sd = shutdown.clone();
    shutdown.spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                a = listener.accept() => a.unwrap(),
                _ = sd.triggered() => return,
            };
            let acceptor = acceptor.clone();
            sd.spawn(async move {
                // A handshake without a client certificate fails here, and the client is told
                // so by the TLS alert.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut up) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dns_name_or_a_list_of_servers_is_dialled_over_tls_checking_the_name_as_written() {
    let s = Services::start().await;
    let ca = s.cert("ca.pem");
    let port = s.orchestrator.rsplit_once(':').unwrap().1;

    // Every address of localhost, over TLS because a TLS flag is set; the certificate is
    // checked against "localhost", the name as written.
    let r = runs_list(&format!("dns:///localhost:{port}"), &["--tls-ca", arg(&ca)]).await;
    assert_eq!(r.code, Some(0), "runs list at dns:///localhost: {r}");

    // A list with an address where nothing listens: the one that answers serves the calls.
    let r = runs_list(
        &format!("https://127.0.0.1:9,{}", s.orchestrator),
        &["--tls-ca", arg(&ca)],
    )
    .await;
    assert_eq!(r.code, Some(0), "runs list over a list: {r}");

    // Without TLS, the TLS server answers no probe: no address is used, and the error says
    // which and why.
    let r = runs_list(&format!("http://127.0.0.1:9,http://127.0.0.1:{port}"), &[]).await;
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr
            .contains("orchestrator is unavailable: none of the 2 addresses"),
        "{r}"
    );
    s.stop().await;
}
