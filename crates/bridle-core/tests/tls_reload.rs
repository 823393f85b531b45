//! Mutual TLS that follows its files: a real gRPC server (the stack every service uses)
//! rotated to certificates from a new CA without a restart, material that does not load
//! refused while the last good one stays, the plaintext health-only listener, and a service's
//! client following its own rotated material to a peer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bridle_core::Shutdown;
use bridle_core::config::ServerOptions;
use bridle_core::server::GrpcServer;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

struct Ca {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    let cert = p.self_signed(&key).unwrap();
    Ca { key, cert }
}

/// A certificate for `cn` (CN and DNS name), as a service's: (cert PEM, key PEM).
fn leaf(ca: &Ca, cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, cn.to_string());
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes a file whole (write, then rename), as a Kubernetes Secret volume swaps its files.
fn put(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `dir`/cert.pem, key.pem and ca.pem for `cn` signed by `ca`.
fn install(dir: &Path, ca: &Ca, cn: &str) {
    let (cert, key) = leaf(ca, cn);
    put(&dir.join("key.pem"), &key);
    put(&dir.join("cert.pem"), &cert);
    put(&dir.join("ca.pem"), &ca.cert.pem());
}

fn options(dir: &Path, listen: SocketAddr) -> ServerOptions {
    ServerOptions {
        listen,
        tls_cert: Some(dir.join("cert.pem")),
        tls_key: Some(dir.join("key.pem")),
        tls_ca: Some(dir.join("ca.pem")),
        tls_reload_interval: Duration::from_secs(1),
        health_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerOptions::unauthenticated(0)
    }
}

async fn serve(opts: &ServerOptions, shutdown: &Shutdown) -> (SocketAddr, SocketAddr) {
    let server = GrpcServer::bind("router", opts).await.unwrap();
    let addr = server.local_addr();
    let health = server.health_addr().expect("health_listen is set");
    let stop = shutdown.clone();
    shutdown.spawn(async move {
        let routes = tonic::service::Routes::default();
        server.serve(routes, &[], stop).await.unwrap();
    });
    (addr, health)
}

/// A fresh connection (no reuse) trusting `trust`, presenting a client certificate of
/// `client_ca`, asking the server's health: Ok, or the error's text.
async fn check_tls(addr: SocketAddr, trust: &Ca, client_ca: &Ca) -> Result<(), String> {
    let (cert, key) = leaf(client_ca, "orchestrator");
    bridle_core::config::install_crypto_provider();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(trust.cert.pem()))
        .identity(Identity::from_pem(cert, key))
        .domain_name("router");
    let ch = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    check(ch).await
}

async fn check(ch: Channel) -> Result<(), String> {
    HealthClient::new(ch)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

/// Waits (up to 15 s) for `f` to hold.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "within 15 s: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_rotated_certificate_and_ca_reach_new_connections_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (ca("first CA"), ca("second CA"));
    install(dir.path(), &ca1, "router");
    let shutdown = Shutdown::new();
    let (addr, health) = serve(
        &options(dir.path(), "127.0.0.1:0".parse().unwrap()),
        &shutdown,
    )
    .await;

    check_tls(addr, &ca1, &ca1).await.unwrap();
    // A client certificate from another CA is refused.
    let refused = check_tls(addr, &ca1, &ca2).await.unwrap_err();
    assert!(!refused.is_empty());

    install(dir.path(), &ca2, "router");
    eventually("the server presents the new certificate", || async {
        check_tls(addr, &ca2, &ca2).await.is_ok()
    })
    .await;
    // The old CA no longer verifies the server, and the server no longer takes its clients.
    assert!(check_tls(addr, &ca1, &ca1).await.is_err());
    assert!(check_tls(addr, &ca2, &ca1).await.is_err());

    // A key that is not the certificate's: refused, and the last good material stays.
    let (_, other_key) = leaf(&ca2, "router");
    put(&dir.path().join("key.pem"), &other_key);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    check_tls(addr, &ca2, &ca2).await.unwrap();

    // The health-only listener answers in plaintext, and serves nothing else.
    let plain = Endpoint::from_shared(format!("http://{health}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    check(plain.clone()).await.unwrap();
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    let asked = ServerReflectionClient::new(plain)
        .server_reflection_info(futures::stream::iter(vec![
            tonic_reflection::pb::v1::ServerReflectionRequest::default(),
        ]))
        .await;
    let err = asked.expect_err("the health listener serves reflection");
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    // The main port does not speak plaintext.
    let main_plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(3))
        .connect()
        .await;
    match main_plain {
        Err(_) => {}
        Ok(ch) => assert!(check(ch).await.is_err()),
    }
    shutdown.trigger();
}

#[tokio::test]
async fn a_service_reaches_its_peer_again_after_both_rotate_to_a_new_ca() {
    let (server_dir, client_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca1, ca2) = (ca("first CA"), ca("second CA"));
    install(server_dir.path(), &ca1, "router");
    install(client_dir.path(), &ca1, "orchestrator");
    let first = Shutdown::new();
    let opts = options(server_dir.path(), "127.0.0.1:0".parse().unwrap());
    let (addr, _) = serve(&opts, &first).await;

    let me = options(client_dir.path(), "127.0.0.1:0".parse().unwrap());
    let outgoing = bridle_core::client::Outgoing::new("orchestrator", &me);
    let peer = bridle_core::client::traced(
        "router",
        &format!("https://{addr}"),
        Duration::from_secs(5),
        outgoing,
    )
    .unwrap();
    let mut client = HealthClient::new(peer);
    client.check(HealthCheckRequest::default()).await.unwrap();

    // Both sides' files rotate to the new CA; the server restarts on the same port (its old
    // connections go), the client does not.
    install(server_dir.path(), &ca2, "router");
    install(client_dir.path(), &ca2, "orchestrator");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    first.trigger();
    let second = Shutdown::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let server = loop {
        match GrpcServer::bind("router", &options(server_dir.path(), addr)).await {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < deadline, "rebinding {addr}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stop = second.clone();
    second.spawn(async move {
        server
            .serve(tonic::service::Routes::default(), &[], stop)
            .await
            .unwrap();
    });
    eventually("the client's calls reach the restarted peer", || {
        let mut c = client.clone();
        async move { c.check(HealthCheckRequest::default()).await.is_ok() }
    })
    .await;
    second.trigger();
}
