//! The HTTP gateway against hostile or broken input sent over a raw socket: slow or short
//! requests, malformed framing, deep nesting; and client-caused failures answered with a 4xx,
//! as gRPC answers them.

use std::net::SocketAddr;
use std::time::Duration;

use bridle_proto::Role;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{Harness, WAIT, msg, request};

/// A gateway that waits half a second for headers and for bodies, with a scripted route `demo`
/// of two turns.
async fn gateway() -> (Harness, String) {
    let h = Harness::start_with(|o| {
        o.http_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        o.http_header_read_timeout = Duration::from_millis(500);
        o.http_body_read_timeout = Duration::from_millis(500);
    })
    .await;
    h.apply(crate::scripted::ROUTE).await;
    let addr = h
        .http
        .clone()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    (h, addr)
}

/// Whether `buf` holds a whole response (its headers and Content-Length bytes of body).
fn complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = text[..end]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    buf.len() >= end + 4 + length
}

/// Sends `request` as is and returns what came back before the server closed the connection
/// or finished a response. Panics when neither happens within [`WAIT`]: the server hung.
async fn raw(addr: &str, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        // A reset counts as closed.
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if complete(&buf) {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the gateway neither answered nor closed the connection");
    String::from_utf8_lossy(&buf).into_owned()
}

fn status_and_body(answer: &str) -> (u16, Value) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_gets_408_not_silence() {
    let (_h, addr) = gateway().await;
    let body = r#"{"model": "demo""#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{body}"
    );
    let (status, body) = status_and_body(&raw(&addr, req.as_bytes()).await);
    assert_eq!(status, 408, "{body}");
    let m = body["error"]["message"].as_str().unwrap();
    assert!(m.contains("(option http_body_read_timeout)"), "{m}");
}

#[tokio::test]
async fn a_client_that_sends_its_headers_too_slowly_is_disconnected() {
    let (_h, addr) = gateway().await;
    let answer = raw(&addr, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n").await;
    assert_eq!(answer, "", "the connection is closed without an answer");
}

#[tokio::test]
async fn malformed_framing_is_a_400_that_says_why() {
    let (_h, addr) = gateway().await;
    let json = r#"{"model": "demo", "messages": [{"role": "user", "content": "hi"}]}"#;
    let bad_chunks = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{json}\r\n0\r\n\r\n"
    );
    // Both lengths: hyper drops Content-Length and reads chunks (RFC 9112 6.3), which a plain
    // body is not.
    let both = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{json}",
        json.len()
    );
    for (req, error) in [(bad_chunks, "/error/message"), (both, "/error/message")] {
        let (status, body) = status_and_body(&raw(&addr, req.as_bytes()).await);
        assert_eq!(status, 400, "{body}");
        let m = body.pointer(error).and_then(Value::as_str).unwrap();
        assert!(m.starts_with("the request body is malformed: "), "{m}");
        assert!(m.contains("Invalid chunk size line"), "{m}");
        assert!(m.contains("a Content-Length beside it is ignored"), "{m}");
    }
}

#[tokio::test]
async fn a_conversation_past_a_scripted_routes_end_is_a_4xx_over_http_as_over_grpc() {
    let (h, _) = gateway().await;
    let past = vec![
        msg(Role::User, "hi"),
        msg(Role::Assistant, "one"),
        msg(Role::Assistant, "two"),
    ];
    let e = h.complete(request("demo", past)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let http = h.http.clone().unwrap();
    let r = bridle_core::http_client::new()
        .post(format!("{http}/v1/chat/completions"))
        .json(&json!({"model": "demo", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "one"},
            {"role": "assistant", "content": "two"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["message"], e.message());
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

/// serde_json's recursion limit holds on both fronts: a body nested a hundred thousand deep is
/// a 400 naming the limit, the service stays up, and JSON nested within the limit (a deep tool
/// schema) goes through.
#[tokio::test]
async fn deeply_nested_json_is_a_400_naming_the_limit() {
    let (h, _) = gateway().await;
    let http = h.http.clone().unwrap();
    let c = bridle_core::http_client::new();
    let deep = format!(
        r#"{{"model": "demo", "messages": [{{"role": "user", "content": {}}}]}}"#,
        "[".repeat(100_000)
    );
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let r = c
            .post(format!("{http}{path}"))
            .header("content-type", "application/json")
            .body(deep.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}");
        let body: Value = r.json().await.unwrap();
        let m = body["error"]["message"].as_str().unwrap();
        assert!(
            m.starts_with("the request body is not JSON: it nests deeper than 128 levels"),
            "{m}"
        );
    }
    // 1 + 2 x 55 levels, 6 more around it: 117 of the 128.
    let mut schema = json!({"type": "object"});
    for _ in 0..55 {
        schema = json!({"type": "object", "properties": {"a": schema}});
    }
    let r = c
        .post(format!("{http}/v1/chat/completions"))
        .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "run_python", "parameters": schema}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
}
