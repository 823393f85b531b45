use bridle_proto::Role;
use bridle_testkit::mock_openai::{MockOpenAi, Reply};
use serde_json::{Value, json};

use crate::helpers::{Harness, msg, request, route_with};
use crate::replicas::Replica;

pub(crate) async fn chat(
    http: &str,
    model: &str,
    agent: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut req = bridle_core::http_client::new()
        .post(format!("{http}/v1/chat/completions"))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
    if let Some(a) = agent {
        req = req.header("x-bridle-agent", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, resp.json().await.unwrap())
}

#[tokio::test]
async fn rate_limits_are_shared_by_router_processes_and_answer_429_with_retry_after() {
    let h = Harness::start().await;
    let mock = MockOpenAi::start().await.unwrap();
    mock.set_default(Some(Reply::text("ok")));
    h.put_secret("openai-key", "sk-test-limits").await;
    h.apply(&route_with(
        "limited",
        "  limits:\n    perTenant: {rpm: 3}\n",
        &[("a", "gpt-4o-mini", &mock.base_url())],
        "",
    ))
    .await;
    let (p1, p2) = (Replica::start(&h, &[]).await, Replica::start(&h, &[]).await);

    // Three requests a minute for the tenant, across both processes.
    for http in [&p1.http, &p2.http, &p1.http] {
        let (status, _, body) = chat(http, "limited", None).await;
        assert_eq!(status, 200, "{body}");
    }
    for http in [&p2.http, &p1.http] {
        let (status, retry, body) = chat(http, "limited", None).await;
        assert_eq!(status, 429, "{body}");
        let secs: u64 = retry.expect("a retry-after header").parse().unwrap();
        // One request refills in 60s / 3 = 20s.
        assert!((1..=20).contains(&secs), "retry-after {secs}");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        let m = body["error"]["message"].as_str().unwrap();
        assert!(
            m.starts_with("rate limit: tenant 'default' through route 'limited' may use 3 requests per minute; retry after "),
            "{m}"
        );
    }
    assert_eq!(
        mock.requests().len(),
        3,
        "refused calls never reach the provider"
    );

    // The gRPC front says RESOURCE_EXHAUSTED with the same wait in its metadata.
    let e = p2
        .router
        .clone()
        .complete(request("limited", vec![msg(Role::User, "hi")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    let secs: u64 = e
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&secs), "{secs}");
    assert!(e.metadata().get("retry-after-ms").is_some());
    // And for a program, as google.rpc details: the reason, when to retry, and which limit.
    {
        use tonic_types::StatusExt;
        let info = e.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "RATE_LIMITED");
        assert_eq!(info.domain, "bridle.dev");
        let delay = e
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .expect("RetryInfo with a delay");
        assert!(
            delay > std::time::Duration::ZERO && delay <= std::time::Duration::from_secs(20),
            "{delay:?}"
        );
        let q = e.get_details_quota_failure().expect("QuotaFailure");
        assert_eq!(q.violations.len(), 1);
        let v = &q.violations[0];
        assert_eq!(v.subject, "tenant:default/route:limited");
        assert_eq!(v.quota_metric, "requests_per_minute");
        assert_eq!(v.quota_id, "route_per_tenant");
        assert_eq!(v.quota_value, 3);
        assert!(
            v.description
                .starts_with("rate limit: tenant 'default' through route 'limited'"),
            "{v:?}"
        );
    }

    // The Anthropic front refuses in Anthropic's shape.
    let resp = bridle_core::http_client::new()
        .post(format!("{}/v1/messages", p1.http))
        .json(&json!({"model": "limited", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn token_limits_count_each_agent_apart() {
    let h = Harness::start().await;
    let mock = MockOpenAi::start().await.unwrap();
    // The published example's usage: 9 + 12 = 21 tokens a call.
    mock.set_default(Some(Reply::text("ok")));
    h.put_secret("openai-key", "sk-test-tpm").await;
    h.apply(&route_with(
        "tpm",
        "  limits:\n    perAgent: {tpm: 30}\n",
        &[("a", "gpt-4o-mini", &mock.base_url())],
        "",
    ))
    .await;
    let (p1, p2) = (Replica::start(&h, &[]).await, Replica::start(&h, &[]).await);
    // 30 tokens: the first call leaves 9, the second is admitted and overdraws to -12, the
    // third waits.
    assert_eq!(chat(&p1.http, "tpm", Some("bot-a")).await.0, 200);
    assert_eq!(chat(&p2.http, "tpm", Some("bot-a")).await.0, 200);
    let (status, retry, body) = chat(&p1.http, "tpm", Some("bot-a")).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry.is_some());
    let m = body["error"]["message"].as_str().unwrap();
    assert!(
        m.starts_with("rate limit: agent 'bot-a' of tenant 'default' through route 'tpm' may use 30 tokens per minute"),
        "{m}"
    );
    // Another agent has its own budget.
    assert_eq!(chat(&p2.http, "tpm", Some("bot-b")).await.0, 200);
}
