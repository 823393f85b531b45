//! The probe binary against a real tonic server with the standard health service: SERVING
//! exits 0, NOT_SERVING and an unknown service exit 1, nothing listening exits 1 within the
//! timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;

use tokio::process::Command;
use tonic_health::ServingStatus;

async fn probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bridle-health-probe"))
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn exit_status_follows_the_serving_status() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("bridle.v1.Up", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("bridle.v1.Down", ServingStatus::NotServing)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));

    let checks = async {
        let whole = probe(&[&addr]).await;
        assert!(whole.status.success(), "{whole:?}");
        let up = probe(&[&format!("http://{addr}"), "--service", "bridle.v1.Up"]).await;
        assert!(up.status.success(), "{up:?}");
        let down = probe(&[&addr, "--service", "bridle.v1.Down"]).await;
        assert_eq!(down.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&down.stderr).contains("NOT_SERVING"),
            "{down:?}"
        );
        let unknown = probe(&[&addr, "--service", "bridle.v1.Nope"]).await;
        assert_eq!(unknown.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&unknown.stderr).contains("NotFound"),
            "{unknown:?}"
        );
        let bad = probe(&[&addr, "--timeout", "-1"]).await;
        assert_eq!(bad.status.code(), Some(1));
    };
    tokio::select! {
        r = server => panic!("server stopped: {r:?}"),
        () = checks => {}
    }
}

#[tokio::test]
async fn nothing_listening_is_unhealthy() {
    // A port that was free a moment ago: nothing answers there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = probe(&[&format!("127.0.0.1:{port}"), "--timeout", "2"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("unhealthy: "),
        "{out:?}"
    );
}
