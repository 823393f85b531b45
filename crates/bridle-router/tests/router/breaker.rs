use std::time::Duration;

use bridle_proto::{ListModelsRequest, Role};
use bridle_testkit::mock_openai::{MockOpenAi, Reply};

use crate::helpers::{Harness, WAIT, msg, openai_route, request};

async fn breaker(h: &Harness, target: usize) -> &'static str {
    let l = h
        .router
        .clone()
        .list_models(ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner();
    match l.routes[0].targets[target].breaker() {
        bridle_proto::BreakerState::Open => "open",
        bridle_proto::BreakerState::HalfOpen => "half_open",
        bridle_proto::BreakerState::Closed => "closed",
        bridle_proto::BreakerState::Unspecified => "unspecified",
    }
}

#[tokio::test]
async fn a_failing_target_opens_its_breaker_is_skipped_then_probed_and_closed() {
    let h = Harness::start_with(|o| {
        o.breaker_failures = 3;
        o.breaker_cooldown = Duration::from_secs(1);
        o.max_retries = 0;
    })
    .await;
    let (a, b) = (
        MockOpenAi::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
    );
    h.put_secret("openai-key", "sk-test-breaker").await;
    h.apply(&openai_route(
        "main",
        &[
            ("a", "gpt-4o", &a.base_url()),
            ("b", "gpt-4o-mini", &b.base_url()),
        ],
        "",
    ))
    .await;
    a.set_default(Some(Reply::error(500, "down")));
    b.set_default(Some(Reply::text("from b")));
    for _ in 0..3 {
        let r = h
            .complete(request("main", vec![msg(Role::User, "hi")]))
            .await
            .unwrap();
        assert_eq!(
            r.attempts.len(),
            2,
            "a is still tried while its breaker is closed"
        );
    }
    assert_eq!(breaker(&h, 0).await, "open");
    assert_eq!(breaker(&h, 1).await, "closed");

    // Open: a is skipped without a request.
    let before = a.requests().len();
    let r = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    assert_eq!(r.target, "b");
    assert_eq!(r.attempts.len(), 1);
    assert_eq!(a.requests().len(), before);

    // After the cooldown one call probes a; a failed probe opens it again at once.
    let probed = async {
        loop {
            if breaker(&h, 0).await == "half_open" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(WAIT, probed).await.unwrap();
    let r = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    assert_eq!(r.attempts.len(), 2, "the probe went to a");
    assert_eq!(breaker(&h, 0).await, "open");

    // a recovers: the next probe succeeds and closes the breaker.
    a.set_default(Some(Reply::text("a is back")));
    let recovered = async {
        loop {
            let r = h
                .complete(request("main", vec![msg(Role::User, "hi")]))
                .await
                .unwrap();
            if r.target == "a" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(WAIT, recovered).await.unwrap();
    assert_eq!(breaker(&h, 0).await, "closed");
}

#[tokio::test]
async fn when_every_breaker_is_open_the_call_fails_fast_and_says_so() {
    let h = Harness::start_with(|o| {
        o.breaker_failures = 1;
        o.breaker_cooldown = Duration::from_secs(600);
        o.max_retries = 0;
    })
    .await;
    let a = MockOpenAi::start().await.unwrap();
    h.put_secret("openai-key", "sk-test-all-open").await;
    h.apply(&openai_route("main", &[("a", "gpt-4o", &a.base_url())], ""))
        .await;
    a.set_default(Some(Reply::error(502, "bad gateway")));
    let e = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap_err();
    assert!(e.message().contains("HTTP 502"), "{}", e.message());
    let e = h
        .complete(request("main", vec![msg(Role::User, "hi")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(
        e.message()
            .contains("every target of route 'main' has its circuit breaker open: 'a' (retried in"),
        "{}",
        e.message()
    );
    // For a program: the reason, and when the breaker lets a probe through.
    {
        use tonic_types::StatusExt;
        let info = e.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "CIRCUIT_OPEN");
        let delay = e
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .expect("RetryInfo with a delay");
        assert!(
            delay > Duration::from_secs(500) && delay <= Duration::from_secs(600),
            "{delay:?}"
        );
        assert!(e.get_details_quota_failure().is_none());
    }
    assert_eq!(a.requests().len(), 1);
    // A 400 says nothing of a target's health: it never opens a breaker.
    let b = MockOpenAi::start().await.unwrap();
    b.set_default(Some(Reply::error(400, "bad request")));
    h.apply(&openai_route(
        "other",
        &[("b", "gpt-4o", &b.base_url())],
        "",
    ))
    .await;
    for _ in 0..3 {
        let e = h
            .complete(request("other", vec![msg(Role::User, "hi")]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
    assert_eq!(b.requests().len(), 3);
}
