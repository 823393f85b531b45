//! The issue's "bad input": unknown routes, malformed and truncated provider streams, and
//! oversized requests.

use std::time::Duration;

use bridle_proto::complete_chunk::Chunk;
use bridle_proto::{ListModelsRequest, Role};
use bridle_testkit::mock_anthropic::{self, MockAnthropic, fixture_text};
use bridle_testkit::mock_openai::{MockOpenAi, Reply, text_completion};

use crate::helpers::{Harness, anthropic_route, msg, openai_route, request};

async fn breakers(h: &Harness) -> Vec<String> {
    let l = h
        .router
        .clone()
        .list_models(ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner();
    l.routes
        .iter()
        .flat_map(|r| {
            r.targets.iter().map(|t| {
                let state = t
                    .breaker()
                    .as_str_name()
                    .trim_start_matches("BREAKER_STATE_");
                format!("{}/{}={}", r.name, t.name, state.to_lowercase())
            })
        })
        .collect()
}

#[tokio::test]
async fn malformed_and_truncated_streams_are_clean_errors_that_count_against_the_target() {
    let h = Harness::start_with(|o| {
        o.breaker_failures = 1;
        o.breaker_cooldown = Duration::from_secs(600);
        o.max_retries = 0;
    })
    .await;
    let (a, b) = (
        MockOpenAi::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
    );
    h.put_secret("openai-key", "sk-test-malformed").await;
    h.apply(&openai_route(
        "main",
        &[
            ("a", "gpt-4o", &a.base_url()),
            ("b", "gpt-4o-mini", &b.base_url()),
        ],
        "",
    ))
    .await;

    // Malformed before any delta: a clean failover to b, and a's breaker opens.
    a.enqueue(Reply::raw_sse(&["data: {this is not json"]));
    b.enqueue(Reply::text("b answered"));
    let (_, done) = h.stream(request("main", vec![msg(Role::User, "go")])).await;
    let r = done.unwrap();
    assert_eq!(r.target, "b");
    assert!(
        r.attempts[0]
            .error
            .contains("openai stream: a stream chunk is malformed"),
        "{}",
        r.attempts[0].error
    );
    assert_eq!(breakers(&h).await, vec!["main/a=open", "main/b=closed"]);

    // Malformed after a delta: the caller already has text, so a clean error, no failover;
    // b's breaker opens too.
    let first = r#"data: {"id":"c1","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#;
    b.enqueue(Reply::raw_sse(&[
        first,
        r#"data: {"choices": [{"delta": {"content": 5}}]}"#,
    ]));
    let (deltas, done) = h.stream(request("main", vec![msg(Role::User, "go")])).await;
    assert_eq!(deltas, vec![Chunk::TextDelta("Hel".into())]);
    let e = done.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(
        e.message().contains(
            "route 'main' target 'b' failed mid-stream: openai stream: a stream chunk is malformed"
        ),
        "{}",
        e.message()
    );
    assert_eq!(breakers(&h).await, vec!["main/a=open", "main/b=open"]);
}

#[tokio::test]
async fn truncated_streams_of_either_provider_are_errors_not_short_answers() {
    let h = Harness::start_with(|o| {
        o.breaker_failures = 1;
        o.breaker_cooldown = Duration::from_secs(600);
        o.max_retries = 0;
    })
    .await;
    let gpt = MockOpenAi::start().await.unwrap();
    let claude = MockAnthropic::start().await.unwrap();
    h.put_secret("openai-key", "sk-test-trunc").await;
    h.put_secret("anthropic-key", "sk-ant-test-trunc").await;
    h.apply(&openai_route(
        "gpt",
        &[("a", "gpt-4o", &gpt.base_url())],
        "",
    ))
    .await;
    h.apply(&anthropic_route(
        "claude",
        &[("a", "claude-sonnet-4-20250514", &claude.base_url())],
        "",
    ))
    .await;

    // OpenAI: the connection closes cleanly after two chunks, with no finish_reason.
    let chunks = bridle_testkit::mock_openai::completion_to_chunks(
        &text_completion("gpt-4o", "This answer is cut short."),
        true,
    );
    let lines: Vec<String> = chunks[..2].iter().map(|c| format!("data: {c}")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    gpt.enqueue(Reply::raw_sse(&lines));
    let (_, done) = h.stream(request("gpt", vec![msg(Role::User, "go")])).await;
    let e = done.unwrap_err();
    assert!(
        e.message()
            .contains("openai stream: the stream ended before the answer was complete"),
        "{}",
        e.message()
    );

    // Anthropic: the published stream cut before message_delta / message_stop.
    let text = fixture_text("stream_basic.txt").unwrap();
    let cut = text[..text.find("event: message_delta").unwrap()].to_string();
    claude.enqueue(mock_anthropic::Reply::Events(cut));
    let (deltas, done) = h
        .stream(request("claude", vec![msg(Role::User, "go")]))
        .await;
    assert_eq!(deltas.len(), 3);
    let e = done.unwrap_err();
    assert!(
        e.message()
            .contains("anthropic stream: the stream ended before the answer was complete"),
        "{}",
        e.message()
    );
    // A plain answer that is not JSON is no better.
    h.apply(&openai_route(
        "gpt2",
        &[("a", "gpt-4o", &gpt.base_url())],
        "",
    ))
    .await;
    gpt.enqueue(Reply::Raw {
        status: 200,
        content_type: "application/json".into(),
        body: "{\"choices\": [".into(),
    });
    let e = h
        .complete(request("gpt2", vec![msg(Role::User, "go")]))
        .await
        .unwrap_err();
    assert!(
        e.message()
            .contains("openai answered HTTP 200 but the response is not a chat completion"),
        "{}",
        e.message()
    );
    assert_eq!(
        breakers(&h).await,
        vec!["claude/a=open", "gpt/a=open", "gpt2/a=open"]
    );
}

#[tokio::test]
async fn oversized_requests_never_reach_a_provider() {
    let h = Harness::start_with(|o| o.max_request_bytes = 4096).await;
    let a = MockOpenAi::start().await.unwrap();
    h.put_secret("openai-key", "sk-test-big").await;
    h.apply(&openai_route("main", &[("a", "gpt-4o", &a.base_url())], ""))
        .await;
    let e = h
        .complete(request("main", vec![msg(Role::User, &"x".repeat(5000))]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message()
            .contains("more than the 4096 this router accepts (option max_request_bytes)"),
        "{}",
        e.message()
    );
    let (_, done) = h
        .stream(request("main", vec![msg(Role::User, &"x".repeat(5000))]))
        .await;
    assert_eq!(done.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert!(a.requests().is_empty());
}
