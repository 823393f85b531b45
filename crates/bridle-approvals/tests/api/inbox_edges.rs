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
