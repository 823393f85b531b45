//! The web inbox at its edges: what each failure answers, slow and malformed requests, and
//! input quoted back.

use bridle_core::auth::AuthMode;
use reqwest::StatusCode;

use crate::browser::Browser;
use crate::inbox::with_inbox;

#[tokio::test]
async fn each_failure_answers_its_own_status() {
    let (mut h, addr) = with_inbox(AuthMode::Off).await;
    let mut b = Browser::new(addr);

    // Missing: 404.
    let r = b.get("/approvals/apr_01MISSING").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert!(r.body.contains("apr_01MISSING not found"), "{}", r.body);

    // A record this service cannot read is a bug: 500, details in the log only, and no
    // "try again" (it will fail the same way).
    let () = redis::cmd("HSET")
        .arg(h.keys.approval("apr_01BROKEN"))
        .arg("id")
        .arg("apr_01BROKEN")
        .arg("state")
        .arg("sideways")
        .query_async(&mut h.redis().await)
        .await
        .map(|_: i64| ())
        .unwrap();
    let r = b.get("/approvals/apr_01BROKEN").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert!(r.body.contains("a bug"), "{}", r.body);
    assert!(!r.body.contains("malformed"), "no details: {}", r.body);
    assert!(!r.body.contains("try again"), "{}", r.body);

    // Redis down: 503, try again.
    h.redis.kill().await;
    let r = b.get("/approvals?tenant=acme").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(
        r.body.contains("cannot reach its database") && r.body.contains("try again"),
        "{}",
        r.body
    );
    h.stop().await;
}

/// Sends `request` as raw bytes (keeping the connection open for writing) and returns what the
/// server answers until it closes the connection. Panics when it neither answers nor closes.
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(crate::helpers::WAIT, conn.read_to_end(&mut answer))
        .await
        .expect("the server answers or closes the connection")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

async fn with_short_timeouts() -> (crate::helpers::Harness, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("inbox.addr");
    let file = addr_file.clone();
    let h = crate::helpers::Harness::start_with(move |o| {
        o.inbox.listen = Some("127.0.0.1:0".parse().unwrap());
        o.inbox.addr_file = Some(file);
        o.inbox.header_read_timeout = std::time::Duration::from_secs(1);
        o.inbox.body_read_timeout = std::time::Duration::from_secs(1);
        o.inbox.max_body_bytes = 4096;
    })
    .await;
    let addr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .parse()
        .unwrap();
    (h, addr)
}

const FORM: &str = "Content-Type: application/x-www-form-urlencoded";

#[tokio::test]
async fn slow_or_missing_headers_and_bodies_do_not_hold_a_connection() {
    let (h, addr) = with_short_timeouts().await;
    // A body shorter than its Content-Length: 408 once the body timeout passes.
    let r = raw(
        addr,
        &format!("POST /login HTTP/1.1\r\nHost: x\r\n{FORM}\r\nContent-Length: 100\r\n\r\ncsrf=a"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 408 "), "{r}");
    assert!(r.contains("did not arrive within 1s"), "{r}");

    // Headers that never end: the connection is closed.
    let r = raw(addr, "GET /approvals HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    assert!(!r.starts_with("HTTP/1.1 2"), "{r}");

    // The server still answers.
    let r = raw(
        addr,
        "GET /inbox.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    h.stop().await;
}

#[tokio::test]
async fn malformed_or_oversized_requests_are_4xx_with_the_reason() {
    let (h, addr) = with_short_timeouts().await;
    // Chunked framing that is not: 400, saying so.
    let r = raw(
        addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: x\r\n{FORM}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    assert!(r.contains("malformed request body"), "{r}");

    // A Content-Length over the limit: 413 before anything is read.
    let r = raw(
        addr,
        &format!("POST /login HTTP/1.1\r\nHost: x\r\n{FORM}\r\nContent-Length: 1000000\r\n\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
    assert!(r.contains("more than 4096 bytes"), "{r}");
    // The same without a length: 413 once the limit is passed.
    let body = "a".repeat(5000);
    let r = raw(
        addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: x\r\n{FORM}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 413 "), "{r}");

    // A Content-Length that is not a number: 400 (hyper answers it before any handler).
    let r = raw(
        addr,
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    h.stop().await;
}
