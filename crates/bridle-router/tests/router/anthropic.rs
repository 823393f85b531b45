use bridle_proto::complete_chunk::Chunk;
use bridle_proto::{FinishReason, Role, ToolSpec, Usage};
use bridle_testkit::mock_anthropic::{
    MockAnthropic, Reply, fixture, fixture_text, tool_use_message,
};
use bridle_testkit::mock_openai::{self, MockOpenAi};
use serde_json::json;

use crate::helpers::{Harness, anthropic_route, msg, request};

/// A harness whose route `claude` has one Anthropic target, `mock`, with `key` in the broker.
async fn claude_on(mock: &MockAnthropic, key: &str) -> Harness {
    let h = Harness::start().await;
    h.put_secret("anthropic-key", key).await;
    h.apply(&anthropic_route(
        "claude",
        &[("a", "claude-sonnet-4-20250514", &mock.base_url())],
        "",
    ))
    .await;
    h
}

#[tokio::test]
async fn anthropic_calls_translate_both_ways_and_cost_the_cache_tokens() {
    let mock = MockAnthropic::start().await.unwrap();
    let key = format!("sk-ant-test-{}", bridle_testkit::unique("k"));
    let h = claude_on(&mock, &key).await;
    mock.require_key(Some(&key));

    // The published tool-use answer, with usage that read and wrote the prompt cache.
    let mut answer = fixture("message_tool_use.json").unwrap();
    answer["model"] = json!("claude-sonnet-4-20250514");
    answer["usage"] = json!({"input_tokens": 21, "cache_creation_input_tokens": 188,
        "cache_read_input_tokens": 1800, "output_tokens": 393});
    mock.enqueue(Reply::Message(answer));
    let mut req = request(
        "claude",
        vec![
            msg(Role::System, "You are a weather bot."),
            msg(Role::User, "What is the weather like in San Francisco?"),
        ],
    );
    req.tools = vec![ToolSpec {
        name: "get_weather".into(),
        description: "Get the current weather in a given location".into(),
        parameters_json_schema: r#"{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}"#.into(),
        ..Default::default()
    }];
    req.max_output_tokens = Some(1024);
    let r = h.complete(req).await.unwrap();
    let m = r.message.clone().unwrap();
    assert_eq!(r.finish_reason, FinishReason::ToolCalls as i32);
    assert_eq!(m.tool_calls[0].id, "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&m.tool_calls[0].arguments_json).unwrap(),
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(
        (
            r.provider.as_str(),
            r.model.as_str(),
            r.response_id.as_str()
        ),
        (
            "anthropic",
            "claude-sonnet-4-20250514",
            "msg_01Aq9w938a90dw8q"
        )
    );
    assert_eq!(
        r.usage,
        Some(Usage {
            input_tokens: 2009,
            output_tokens: 393,
            cache_read_tokens: 1800,
            cache_write_tokens: 188,
            reasoning_tokens: 0,
        })
    );
    // Claude Sonnet 4: $3 input, $3.75 5-minute cache writes, $0.30 cache hits, $15 output
    // per million tokens.
    let cost = r.cost.unwrap();
    assert!(cost.known);
    assert_eq!(
        cost.nano_usd,
        21 * 3000 + 188 * 3750 + 1800 * 300 + 393 * 15000
    );

    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], key);
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert!(!sent.headers.contains_key("authorization"));
    assert_eq!(
        sent.body,
        json!({
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 1024,
            "system": "You are a weather bot.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "What is the weather like in San Francisco?"}]}],
            "tools": [{"name": "get_weather", "description": "Get the current weather in a given location",
                "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]
        })
    );

    // The next turn carries the tool call and its result in Anthropic's blocks.
    mock.enqueue(Reply::text("claude-sonnet-4-20250514", "It is 15 degrees."));
    let mut result = msg(Role::Tool, "15 degrees");
    result.tool_call_id = "toolu_01A09q90qw90lq917835lq9".into();
    let r2 = h
        .complete(request(
            "claude",
            vec![
                msg(Role::User, "What is the weather like in San Francisco?"),
                m,
                result,
            ],
        ))
        .await
        .unwrap();
    assert_eq!(r2.message.unwrap().text, "It is 15 degrees.");
    let body = &mock.requests()[1].body;
    assert_eq!(body["messages"][1]["content"][1]["type"], "tool_use");
    assert_eq!(
        body["messages"][2],
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"}]})
    );
}

#[tokio::test]
async fn anthropic_streams_tool_calls_from_the_published_stream() {
    let mock = MockAnthropic::start().await.unwrap();
    let h = claude_on(&mock, "sk-ant-test-stream").await;
    mock.enqueue(Reply::Events(fixture_text("stream_tool_use.txt").unwrap()));
    let (deltas, done) = h
        .stream(request(
            "claude",
            vec![msg(Role::User, "Weather in Paris?")],
        ))
        .await;
    let r = done.unwrap();
    assert_eq!(mock.requests()[0].body["stream"], true);
    assert_eq!(r.finish_reason, FinishReason::ToolCalls as i32);
    let m = r.message.unwrap();
    assert_eq!(m.text, "I'll check the current weather in Paris for you.");
    assert_eq!(m.tool_calls[0].arguments_json, r#"{"location":"Paris"}"#);
    assert_eq!(
        (r.usage.unwrap().input_tokens, r.cost.unwrap().nano_usd),
        (377, 377 * 3000 + 65 * 15000)
    );
    let args: String = deltas
        .iter()
        .filter_map(|d| match d {
            Chunk::ToolCallDelta(t) => Some(t.arguments_delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(args, r#"{"location": "Paris"}"#);

    // Plain and streamed forms of one generated answer are the same.
    let answer = tool_use_message(
        "claude-sonnet-4-20250514",
        "Looking both up.",
        &[
            ("toolu_1", "search", json!({"q": "rust"})),
            ("toolu_2", "read", json!({"path": "/a"})),
        ],
    );
    mock.enqueue(Reply::Message(answer.clone()));
    mock.enqueue(Reply::Message(answer));
    let plain = h
        .complete(request("claude", vec![msg(Role::User, "go")]))
        .await
        .unwrap();
    let (deltas, done) = h
        .stream(request("claude", vec![msg(Role::User, "go")]))
        .await;
    let streamed = done.unwrap();
    assert_eq!(streamed.message, plain.message);
    assert_eq!(streamed.usage, plain.usage);
    assert_eq!(streamed.cost, plain.cost);
    assert!(deltas.len() > 4, "{deltas:?}");
}

#[tokio::test]
async fn an_overloaded_anthropic_target_fails_over_to_openai() {
    let h = Harness::start().await;
    let (claude, gpt) = (
        MockAnthropic::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
    );
    h.put_secret("anthropic-key", "sk-ant-test-fo").await;
    h.put_secret("openai-key", "sk-test-fo").await;
    let yaml = format!(
        "apiVersion: bridle.dev/v1\nkind: ModelRoute\nmetadata:\n  name: mixed\nspec:\n  targets:\n    - name: claude\n      provider: anthropic\n      model: claude-3-5-haiku-20241022\n      baseUrl: {}\n      apiKey: secret://anthropic-key\n    - name: gpt\n      provider: openai\n      model: gpt-4o-mini\n      baseUrl: {}\n      apiKey: secret://openai-key\n",
        claude.base_url(),
        gpt.base_url()
    );
    h.apply(&yaml).await;
    for _ in 0..3 {
        claude.enqueue(Reply::error(529, "Overloaded"));
    }
    gpt.enqueue(mock_openai::Reply::text("from gpt"));
    let r = h
        .complete(request("mixed", vec![msg(Role::User, "hi")]))
        .await
        .unwrap();
    assert_eq!((r.target.as_str(), r.provider.as_str()), ("gpt", "openai"));
    let statuses: Vec<u32> = r.attempts.iter().map(|a| a.http_status).collect();
    assert_eq!(statuses, vec![529, 529, 529, 200]);
    assert!(
        r.attempts[0]
            .error
            .contains("anthropic returned HTTP 529: Overloaded"),
        "{}",
        r.attempts[0].error
    );
}

#[tokio::test]
async fn a_providers_redirect_is_refused_and_the_key_does_not_follow_it() {
    let redirecting = MockAnthropic::start().await.unwrap();
    let elsewhere = MockAnthropic::start().await.unwrap();
    let key = format!("sk-ant-test-{}", bridle_testkit::unique("k"));
    let h = claude_on(&redirecting, &key).await;
    // Followed, the redirect would take the call, `x-api-key` and all, to another server.
    let location = format!("{}/messages", elsewhere.base_url());
    redirecting.enqueue(Reply::Redirect {
        status: 307,
        location: location.clone(),
    });
    elsewhere.enqueue(Reply::text("claude-sonnet-4-20250514", "caught the key"));

    let err = h
        .complete(request("claude", vec![msg(Role::User, "hello")]))
        .await
        .expect_err("a redirect is not an answer");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("HTTP 307"), "{}", err.message());
    assert!(
        err.message().contains(&format!("a redirect to {location}")),
        "{}",
        err.message()
    );
    assert!(!err.message().contains(&key), "{}", err.message());
    assert_eq!(redirecting.requests().len(), 1);
    assert!(
        elsewhere.requests().is_empty(),
        "the key went to the redirect's target"
    );
}
