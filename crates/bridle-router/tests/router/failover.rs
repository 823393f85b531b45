use std::time::Duration;

use bridle_proto::Role;
use bridle_testkit::mock_openai::{MockOpenAi, Reply};

use crate::helpers::{Harness, msg, openai_route, request};

#[tokio::test]
async fn fails_over_to_the_second_target_after_500s_and_records_every_try() {
    let h = Harness::start().await;
    let (a, b) = (
        MockOpenAi::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
    );
    h.put_secret("openai-key", "sk-test-failover").await;
    h.apply(&openai_route(
        "main",
        &[
            ("a", "gpt-4o", &a.base_url()),
            ("b", "gpt-4o-mini", &b.base_url()),
        ],
        "",
    ))
    .await;
    for _ in 0..3 {
        a.enqueue(Reply::error(
            500,
            "The server had an error while processing your request.",
        ));
    }
    b.enqueue(Reply::text("from b"));

    let r = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    assert_eq!(r.message.unwrap().text, "from b");
    assert_eq!(r.target, "b");
    let tries: Vec<(&str, u32, bool)> = r
        .attempts
        .iter()
        .map(|t| (t.target.as_str(), t.http_status, t.error.is_empty()))
        .collect();
    assert_eq!(
        tries,
        vec![
            ("a", 500, false),
            ("a", 500, false),
            ("a", 500, false),
            ("b", 200, true)
        ]
    );
    assert!(
        r.attempts[0].error.contains("HTTP 500"),
        "{}",
        r.attempts[0].error
    );
    assert_eq!(
        (r.attempts[0].model.as_str(), r.attempts[3].model.as_str()),
        ("gpt-4o", "gpt-4o-mini")
    );
    assert_eq!((a.requests().len(), b.requests().len()), (3, 1));
}

#[tokio::test]
async fn a_429_is_retried_on_the_same_target_after_retry_after() {
    let h = Harness::start().await;
    let (a, b) = (
        MockOpenAi::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
    );
    h.put_secret("openai-key", "sk-test-429").await;
    h.apply(&openai_route(
        "main",
        &[
            ("a", "gpt-4o", &a.base_url()),
            ("b", "gpt-4o-mini", &b.base_url()),
        ],
        "",
    ))
    .await;
    a.enqueue(Reply::rate_limited(1));
    a.enqueue(Reply::text("after waiting"));

    let r = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    assert_eq!(r.message.unwrap().text, "after waiting");
    assert_eq!(r.target, "a");
    let statuses: Vec<u32> = r.attempts.iter().map(|t| t.http_status).collect();
    assert_eq!(statuses, vec![429, 200]);
    let sent = a.requests();
    assert_eq!(sent.len(), 2);
    // The retry waited at least what retry-after asked (a lower bound, so noise cannot fail it).
    let waited = sent[1].received_at - sent[0].received_at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    assert!(b.requests().is_empty());
}

#[tokio::test]
async fn a_401_drops_the_cached_key_and_refetches_it_once() {
    let h = Harness::start().await;
    let mock = MockOpenAi::start().await.unwrap();
    h.put_secret("openai-key", "sk-test-old-key").await;
    h.apply(&openai_route(
        "main",
        &[("a", "gpt-4o", &mock.base_url())],
        "",
    ))
    .await;
    mock.require_key(Some("sk-test-old-key"));
    mock.enqueue(Reply::text("one"));
    h.complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();

    // The key is rotated in OpenBao; the router still holds the old one until the provider
    // refuses it.
    h.put_secret("openai-key", "sk-test-new-key").await;
    mock.require_key(Some("sk-test-new-key"));
    mock.enqueue(Reply::text("two"));
    let r = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    assert_eq!(r.message.unwrap().text, "two");
    let statuses: Vec<u32> = r.attempts.iter().map(|t| t.http_status).collect();
    assert_eq!(statuses, vec![401, 200]);
    let auths: Vec<String> = mock
        .requests()
        .iter()
        .map(|q| q.authorization().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        auths,
        vec![
            "Bearer sk-test-old-key",
            "Bearer sk-test-old-key",
            "Bearer sk-test-new-key"
        ]
    );

    // A key the provider keeps refusing: one refetch, then the call fails without the key in
    // the message.
    mock.require_key(Some("sk-test-other"));
    let e = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("HTTP 401"), "{}", e.message());
    assert!(
        !e.message().contains("sk-test-new"),
        "the key leaked: {}",
        e.message()
    );
    assert_eq!(mock.requests().len(), 5);
}

#[tokio::test]
async fn when_every_target_fails_the_error_lists_each_and_holds_no_key() {
    let h = Harness::start().await;
    let b = MockOpenAi::start().await.unwrap();
    h.put_secret("openai-key", "sk-test-secret-value").await;
    // Nothing listens on a: connection refused, retried, then b answers 503 three times.
    let refusing = bridle_testkit::ports::refusing_port().unwrap();
    let closed = format!("http://127.0.0.1:{}/v1", refusing.port);
    h.apply(&openai_route(
        "main",
        &[
            ("a", "gpt-4o", &closed),
            ("b", "gpt-4o-mini", &b.base_url()),
        ],
        "",
    ))
    .await;
    for _ in 0..3 {
        b.enqueue(Reply::error(
            503,
            "The engine is currently overloaded (key sk-test-secret-value)",
        ));
    }
    let e = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    let m = e.message();
    assert!(
        m.starts_with("model route 'main' is unavailable: every target of route 'main' failed: "),
        "{m}"
    );
    assert!(
        m.contains("target 'a': cannot connect to 127.0.0.1:"),
        "{m}"
    );
    assert!(m.contains("target 'b': openai returned HTTP 503"), "{m}");
    assert!(m.contains("(after 3 tries)"), "{m}");
    assert!(
        !m.contains("sk-test-secret-value"),
        "a provider's echo of the key must be redacted: {m}"
    );
}

#[tokio::test]
async fn a_hanging_target_times_out_and_the_call_fails_over() {
    let h = Harness::start().await;
    let (a, b) = (
        MockOpenAi::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
    );
    h.put_secret("openai-key", "sk-test-hang").await;
    let yaml = openai_route(
        "main",
        &[
            ("a", "gpt-4o", &a.base_url()),
            ("b", "gpt-4o-mini", &b.base_url()),
        ],
        "      timeout: 1s\n",
    );
    h.apply(&yaml).await;
    a.enqueue(Reply::Hang);
    b.enqueue(Reply::text("b was quick"));
    let r = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    assert_eq!(r.target, "b");
    assert_eq!(r.attempts.len(), 2, "a timeout is not retried");
    assert!(
        r.attempts[0]
            .error
            .contains("no complete answer within 1.0s"),
        "{}",
        r.attempts[0].error
    );

    // The request's whole-call deadline bounds every target: past it, nothing more is tried.
    a.enqueue(Reply::Hang);
    let mut req = request("main", vec![msg(Role::User, "hi")]);
    req.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 500_000_000,
    });
    let e = h.complete(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
    assert!(
        e.message()
            .contains("target 'b': the call's deadline of 500ms passed"),
        "{}",
        e.message()
    );
    assert_eq!(b.requests().len(), 1, "b is not tried after the deadline");
}

#[tokio::test]
async fn a_target_that_keeps_answering_429_fails_over() {
    let h = Harness::start().await;
    let (a, b) = (
        MockOpenAi::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
    );
    h.put_secret("openai-key", "sk-test-429-failover").await;
    h.apply(&openai_route(
        "main",
        &[
            ("a", "gpt-4o", &a.base_url()),
            ("b", "gpt-4o-mini", &b.base_url()),
        ],
        "",
    ))
    .await;
    // A retry-after longer than retry_max_delay (5s here): failing over beats waiting.
    a.enqueue(Reply::rate_limited(30));
    b.enqueue(Reply::text("from b"));
    let r = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    assert_eq!(r.target, "b");
    let statuses: Vec<u32> = r.attempts.iter().map(|t| t.http_status).collect();
    assert_eq!(statuses, vec![429, 200]);
    // Retries used up on 429s: fail over too.
    for _ in 0..3 {
        a.enqueue(Reply::Error {
            status: 429,
            body: bridle_testkit::mock_openai::error_body(429, "Rate limit reached"),
            retry_after: None,
        });
    }
    b.enqueue(Reply::text("from b again"));
    let r = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    let statuses: Vec<u32> = r.attempts.iter().map(|t| t.http_status).collect();
    assert_eq!(statuses, vec![429, 429, 429, 200]);
}
