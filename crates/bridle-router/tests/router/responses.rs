//! Targets with `api: responses`: OpenAI's Responses API as the provider's wire, against the
//! mock serving the API reference's example response and event stream.

use bridle_proto::complete_chunk::Chunk;
use bridle_proto::{FinishReason, Message, Role, ToolCall, ToolSpec};
use bridle_testkit::mock_openai::{MockOpenAi, Reply, text_completion, tool_call_completion};
use serde_json::json;

use crate::helpers::{Harness, msg, openai_route, request};

async fn harness() -> (Harness, MockOpenAi) {
    let h = Harness::start().await;
    let mock = MockOpenAi::start().await.unwrap();
    h.put_secret("openai-key", "sk-test-responses").await;
    h.apply(&openai_route(
        "main",
        &[("a", "gpt-4.1", &mock.base_url())],
        "      api: responses\n",
    ))
    .await;
    (h, mock)
}

#[tokio::test]
async fn a_responses_target_answers_plain_and_streamed_with_tool_calls_and_usage() {
    let (h, mock) = harness().await;
    let mut text = text_completion("gpt-4.1-2025-04-14", "Streaming, in small pieces, works.");
    text["usage"] = json!({"prompt_tokens": 2000, "completion_tokens": 10, "total_tokens": 2010,
        "prompt_tokens_details": {"cached_tokens": 1024}, "completion_tokens_details": {"reasoning_tokens": 4}});
    let calls = tool_call_completion(
        "gpt-4.1-2025-04-14",
        &[
            ("call_1", "search", r#"{"q":"sse"}"#),
            ("call_2", "read", r#"{"path":"/a"}"#),
        ],
    );
    for completion in [text, calls] {
        mock.enqueue(Reply::Completion(completion.clone()));
        mock.enqueue(Reply::Completion(completion));
        let plain = h
            .complete(request("main", vec![msg(Role::User, "go")]))
            .await
            .unwrap();
        let (deltas, done) = h.stream(request("main", vec![msg(Role::User, "go")])).await;
        let streamed = done.unwrap();
        assert_eq!(streamed.message, plain.message);
        assert_eq!(streamed.finish_reason, plain.finish_reason);
        assert_eq!(streamed.usage, plain.usage);
        assert_eq!(streamed.cost, plain.cost);
        assert_eq!(plain.model, "gpt-4.1-2025-04-14");
        assert_eq!(
            plain.response_id,
            "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"
        );
        assert!(deltas.len() > 1, "the answer arrived in pieces: {deltas:?}");
        let m = plain.message.unwrap();
        if m.tool_calls.is_empty() {
            assert_eq!(m.text, "Streaming, in small pieces, works.");
            assert_eq!(plain.finish_reason, FinishReason::Stop as i32);
            let u = plain.usage.unwrap();
            assert_eq!(
                (
                    u.input_tokens,
                    u.output_tokens,
                    u.cache_read_tokens,
                    u.reasoning_tokens
                ),
                (2000, 10, 1024, 4)
            );
            let streamed_text: String = deltas
                .iter()
                .filter_map(|d| match d {
                    Chunk::TextDelta(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(streamed_text, m.text);
        } else {
            assert_eq!(plain.finish_reason, FinishReason::ToolCalls as i32);
            assert_eq!(
                m.tool_calls,
                vec![
                    ToolCall {
                        id: "call_1".into(),
                        name: "search".into(),
                        arguments_json: r#"{"q":"sse"}"#.into()
                    },
                    ToolCall {
                        id: "call_2".into(),
                        name: "read".into(),
                        arguments_json: r#"{"path":"/a"}"#.into()
                    },
                ]
            );
        }
    }
    let sent = mock.requests();
    assert_eq!(sent.len(), 4);
    for (i, r) in sent.iter().enumerate() {
        assert_eq!(r.path, "/v1/responses");
        assert_eq!(r.body["store"], false, "nothing is kept at OpenAI");
        assert_eq!(r.body["input"], json!([{"role": "user", "content": "go"}]));
        assert_eq!(r.body.get("stream").is_some(), i % 2 == 1);
    }
}

/// A conversation with tool calls and results goes as Responses input items; tools go with
/// their strict flag said outright (the API's default is strict); stop sequences and a seed,
/// which this API has no field for, are refused by name before anything is sent.
#[tokio::test]
async fn a_responses_target_sends_items_and_refuses_what_it_cannot_carry() {
    let (h, mock) = harness().await;
    mock.enqueue(Reply::text("Done."));
    let mut req = request(
        "main",
        vec![
            msg(Role::System, "Be brief."),
            msg(Role::User, "Read /a."),
            Message {
                role: Role::Assistant as i32,
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "read".into(),
                    arguments_json: r#"{"path":"/a"}"#.into(),
                }],
                ..Default::default()
            },
            Message {
                role: Role::Tool as i32,
                tool_call_id: "call_1".into(),
                text: "no such file".into(),
                is_error: true,
                ..Default::default()
            },
        ],
    );
    req.tools = vec![ToolSpec {
        name: "read".into(),
        description: "Read a file".into(),
        parameters_json_schema: r#"{"type":"object","properties":{"path":{"type":"string"}}}"#
            .into(),
        ..Default::default()
    }];
    req.max_output_tokens = Some(64);
    let r = h.complete(req.clone()).await.unwrap();
    assert_eq!(r.message.unwrap().text, "Done.");
    let body = &mock.requests()[0].body;
    assert_eq!(
        body["input"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Read /a."},
            {"type": "function_call", "call_id": "call_1", "name": "read", "arguments": "{\"path\":\"/a\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "ERROR: no such file"}
        ])
    );
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "name": "read", "description": "Read a file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}, "strict": false}])
    );
    assert_eq!(body["max_output_tokens"], 64);

    let mut stopped = req.clone();
    stopped.stop = vec!["END".into()];
    let mut seeded = req.clone();
    seeded.seed = Some(7);
    for (field, bad) in [("stop", stopped), ("seed", seeded)] {
        let e = h.complete(bad).await.unwrap_err();
        assert!(
            e.message()
                .contains(&format!("{field}: OpenAI's Responses API takes no")),
            "{field}: {}",
            e.message()
        );
    }
    assert_eq!(
        mock.requests().len(),
        1,
        "the refused calls were never sent"
    );
}
