//! The webhook against a local receiver: a message for each new pending approval, retried
//! after a failure, never sent on where a redirect points, and Evaluate never waits for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bridle_proto::{PolicyDecision, RiskClass};
use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};

use crate::helpers::*;

#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    /// Answers 500 to this many requests first.
    fail_first: Arc<Mutex<usize>>,
    /// When set, each request waits for a permit before it is answered.
    gate: Option<Arc<Semaphore>>,
    arrived: Arc<Notify>,
    /// When set, every request is answered with a 307 to this address.
    redirect_to: Option<String>,
}

async fn receive(State(r): State<Receiver>, Json(body): Json<Value>) -> Response {
    r.bodies.lock().unwrap().push(body);
    r.arrived.notify_waiters();
    if let Some(to) = &r.redirect_to {
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(axum::http::header::LOCATION, to.clone())],
        )
            .into_response();
    }
    if let Some(g) = &r.gate {
        let _permit = g.acquire().await.unwrap();
    }
    let mut fail = r.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    StatusCode::OK.into_response()
}

async fn start_receiver(r: Receiver) -> String {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The receiver lives as long as the test's runtime; nothing needs to drain it.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

async fn with_webhook(url: &str) -> Harness {
    Harness::start_with(|o| {
        o.webhook.url = Some(SecretString::from(url.to_string()));
        o.webhook.backoff = Duration::from_millis(50);
        o.webhook.max_backoff = Duration::from_millis(200);
        o.inbox.public_url = Some("https://inbox.example".into());
    })
    .await
}

async fn wait_for(r: &Receiver, n: usize) -> Vec<Value> {
    tokio::time::timeout(WAIT, async {
        loop {
            let notified = r.arrived.notified();
            if r.bodies.lock().unwrap().len() >= n {
                return r.bodies.lock().unwrap().clone();
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} webhook requests within {WAIT:?}"))
}

#[tokio::test]
async fn each_new_approval_is_posted_and_retried() {
    let r = Receiver {
        fail_first: Arc::new(Mutex::new(1)),
        ..Default::default()
    };
    let url = start_receiver(r.clone()).await;
    let h = with_webhook(&url).await;
    let run = new_run();
    // An allowed call announces nothing; the first message is the approval's.
    let allowed = h
        .evaluate(request(
            &run,
            "c0",
            "query",
            RiskClass::ReadOnly,
            "{}",
            &["query"],
        ))
        .await;
    assert_eq!(allowed.decision, PolicyDecision::Allow as i32);
    let a = h
        .pending(&run, "c1", r#"{"table":"<!channel> & friends"}"#)
        .await;
    // The first attempt got a 500; the retry delivered the same message.
    let bodies = wait_for(&r, 2).await;
    assert_eq!(bodies[0], bodies[1]);
    let text = bodies[0]["text"].as_str().unwrap();
    assert!(
        text.contains("agent analyst wants to call delete_table (destructive)")
            && text.contains(&format!(
                "<https://inbox.example/approvals/{}|{}>",
                a.id, a.id
            )),
        "{text}"
    );
    let blocks = bodies[0]["blocks"].to_string();
    assert!(
        blocks.contains("&lt;!channel&gt; &amp; friends"),
        "{blocks}"
    );
    assert!(!blocks.contains("<!channel>"), "{blocks}");

    // Evaluating the same call again (a retry after a crash) is not a new approval.
    let again = h
        .pending(&run, "c1", r#"{"table":"<!channel> & friends"}"#)
        .await;
    assert_eq!(again.id, a.id);
    let second = h.pending(&run, "c2", "{}").await;
    let bodies = wait_for(&r, 3).await;
    assert!(
        bodies[2]["text"].as_str().unwrap().contains(&second.id),
        "the next message is the next approval's: {bodies:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn evaluate_never_waits_for_the_webhook() {
    // The receiver answers nothing until the test lets it: if Evaluate waited for the webhook,
    // these evaluations would never return (and the test would fail at its timeout).
    let gate = Arc::new(Semaphore::new(0));
    let r = Receiver {
        gate: Some(gate.clone()),
        ..Default::default()
    };
    let url = start_receiver(r.clone()).await;
    let h = with_webhook(&url).await;
    let run = new_run();
    let mut ids = Vec::new();
    for i in 0..3 {
        let a = tokio::time::timeout(WAIT, h.pending(&run, &format!("c{i}"), "{}"))
            .await
            .expect("Evaluate returns while the webhook hangs");
        ids.push(a.id);
    }
    // All three reach the receiver (concurrently: none was answered yet).
    let bodies = wait_for(&r, 3).await;
    gate.add_permits(3);
    for id in &ids {
        assert!(
            bodies
                .iter()
                .any(|b| b["text"].as_str().unwrap().contains(id)),
            "{id} announced: {bodies:?}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_not_retried() {
    // Another host that the webhook's answer points at: it must never see the message.
    let elsewhere = Receiver::default();
    let elsewhere_url = start_receiver(elsewhere.clone()).await;
    let r = Receiver {
        redirect_to: Some(elsewhere_url),
        ..Default::default()
    };
    let url = start_receiver(r.clone()).await;
    let h = with_webhook(&url).await;
    let a = h
        .pending(&new_run(), "c1", r#"{"table":"secret plans"}"#)
        .await;
    let bodies = wait_for(&r, 1).await;
    assert!(bodies[0]["text"].as_str().unwrap().contains(&a.id));
    // Ten times the webhook's first backoff: a retry or a followed redirect would have landed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        r.bodies.lock().unwrap().len(),
        1,
        "a redirect is not retried"
    );
    assert!(
        elsewhere.bodies.lock().unwrap().is_empty(),
        "the message went where the redirect pointed"
    );
    h.stop().await;
}
