//! Translation against OpenAI's published examples (bridle-testkit/fixtures/openai).

use bridle_proto::complete_chunk::Chunk;
use bridle_proto::{
    CompleteRequest, FinishReason, Message, ResponseFormat, ResponseFormatType, Role, ToolCall,
    ToolChoice, ToolChoiceMode, ToolSpec, Usage,
};
use bridle_testkit::mock_openai::{completion_to_chunks, fixture, tool_call_completion};
use serde_json::json;

use super::stream::Assembler;
use super::wire::{self, Parsed};
use crate::provider::http::{self, Assembler as _};
use crate::provider::sse::SseParser;

fn bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// Feeds chunks through the SSE parser and the assembler as they would arrive.
fn assemble(chunks: &[serde_json::Value], split_at: usize) -> (Parsed, Vec<Chunk>) {
    let mut sse = String::new();
    for c in chunks {
        sse.push_str(&format!("data: {c}\n\n"));
    }
    sse.push_str("data: [DONE]\n\n");
    let raw = sse.as_bytes();
    let mut parser = SseParser::default();
    let mut asm = Assembler::default();
    let mut deltas = Vec::new();
    let mut done = false;
    for piece in raw.chunks(split_at) {
        for data in parser.push(piece).unwrap() {
            deltas.extend(asm.apply(&data).unwrap());
            done |= asm.done();
        }
    }
    assert!(done);
    (asm.finish(), deltas)
}

#[test]
fn the_published_completion_translates() {
    let p = wire::parse_completion(&bytes(&fixture("chat_completion.json").unwrap())).unwrap();
    assert_eq!(p.message.role, Role::Assistant as i32);
    assert_eq!(
        p.message.text,
        "\n\nHello there, how may I assist you today?"
    );
    assert_eq!(p.finish_reason, FinishReason::Stop);
    assert_eq!(p.model, "gpt-4o-mini");
    assert_eq!(p.id, "chatcmpl-123");
    assert_eq!(
        p.usage,
        Usage {
            input_tokens: 9,
            output_tokens: 12,
            ..Default::default()
        }
    );
}

#[test]
fn the_published_tool_call_translates_and_goes_back_the_same() {
    let f = fixture("chat_completion_tool_calls.json").unwrap();
    let p = wire::parse_completion(&bytes(&f)).unwrap();
    assert_eq!(p.finish_reason, FinishReason::ToolCalls);
    assert_eq!(p.message.text, "");
    assert_eq!(
        p.message.tool_calls,
        vec![ToolCall {
            id: "call_abc123".into(),
            name: "get_current_weather".into(),
            arguments_json: "{\n\"location\": \"Boston, MA\"\n}".into()
        }]
    );
    assert_eq!(p.usage.input_tokens, 82);
    // Sent back on the next turn, the message is what OpenAI produced.
    assert_eq!(
        wire::message_to_openai(&p.message),
        f["choices"][0]["message"]
    );
}

#[test]
fn the_published_stream_chunks_assemble() {
    let chunks = fixture("chat_completion_chunks.json").unwrap();
    let (p, deltas) = assemble(chunks.as_array().unwrap(), 7);
    assert_eq!(p.message.text, "Hello");
    assert_eq!(p.finish_reason, FinishReason::Stop);
    assert_eq!(p.model, "gpt-4o-mini");
    assert_eq!(deltas, vec![Chunk::TextDelta("Hello".into())]);
}

#[test]
fn streamed_and_plain_answers_are_the_same() {
    let mut text = fixture("chat_completion.json").unwrap();
    text["usage"]["prompt_tokens_details"] = json!({"cached_tokens": 4});
    text["usage"]["completion_tokens_details"] = json!({"reasoning_tokens": 3});
    let calls = tool_call_completion(
        "gpt-4.1",
        &[
            ("call_1", "search", r#"{"q":"rust sse"}"#),
            ("call_2", "read", "{}"),
        ],
    );
    for completion in [text, calls] {
        let plain = wire::parse_completion(&bytes(&completion)).unwrap();
        for split in [1, 3, 64, 4096] {
            let (streamed, _) = assemble(&completion_to_chunks(&completion, true), split);
            assert_eq!(streamed, plain, "split {split}");
        }
    }
}

#[test]
fn tool_call_deltas_carry_id_and_name_first() {
    let c = tool_call_completion("gpt-4.1", &[("call_1", "search", r#"{"q":"x"}"#)]);
    let (_, deltas) = assemble(&completion_to_chunks(&c, false), 50);
    let Chunk::ToolCallDelta(first) = &deltas[0] else {
        panic!("{deltas:?}")
    };
    assert_eq!(
        (first.index, first.id.as_str(), first.name.as_str()),
        (0, "call_1", "search")
    );
    let args: String = deltas
        .iter()
        .map(|d| match d {
            Chunk::ToolCallDelta(t) => t.arguments_delta.clone(),
            _ => String::new(),
        })
        .collect();
    assert_eq!(args, r#"{"q":"x"}"#);
}

#[test]
fn requests_use_openai_shapes() {
    let req = CompleteRequest {
        route: "r".into(),
        messages: vec![
            Message {
                role: Role::System as i32,
                text: "be brief".into(),
                ..Default::default()
            },
            Message {
                role: Role::User as i32,
                text: "weather?".into(),
                ..Default::default()
            },
            Message {
                role: Role::Assistant as i32,
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "get_weather".into(),
                    arguments_json: "{}".into(),
                }],
                ..Default::default()
            },
            Message {
                role: Role::Tool as i32,
                text: "no network".into(),
                tool_call_id: "c1".into(),
                is_error: true,
                ..Default::default()
            },
        ],
        tools: vec![ToolSpec {
            name: "get_weather".into(),
            description: "Weather of a city".into(),
            parameters_json_schema: r#"{"type":"object","properties":{"city":{"type":"string"}}}"#
                .into(),
            strict: true,
            ..Default::default()
        }],
        tool_choice: Some(ToolChoice {
            mode: ToolChoiceMode::Named as i32,
            name: "get_weather".into(),
        }),
        temperature: Some(0.5),
        top_p: Some(0.25),
        stop: vec!["\n\n".into(), "END".into()],
        seed: Some(7),
        max_output_tokens: Some(100),
        end_user: "customer-42".into(),
        reasoning_effort: "low".into(),
        prompt_cache_key: "tenant-a".into(),
        ..Default::default()
    };
    let body = wire::request_body(&req, "gpt-4o", Some(4096), true).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ERROR: no network"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "temperature": 0.5,
            "top_p": 0.25,
            "stop": ["\n\n", "END"],
            "seed": 7,
            "user": "customer-42",
            "max_completion_tokens": 100,
            "reasoning_effort": "low",
            "prompt_cache_key": "tenant-a",
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
    // A thinking budget has nowhere to go in Chat Completions: refused by name.
    let mut budget = req.clone();
    budget.thinking_budget_tokens = Some(2048);
    let e = wire::request_body(&budget, "gpt-4o", None, false).unwrap_err();
    assert!(
        e.starts_with(
            "thinking_budget_tokens: OpenAI's Chat Completions API takes no thinking budget"
        ),
        "{e}"
    );
}

#[test]
fn response_formats_use_openai_shapes() {
    let mut req = CompleteRequest {
        route: "r".into(),
        messages: vec![Message {
            role: Role::User as i32,
            text: "hi".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let format = |t: ResponseFormatType| ResponseFormat {
        r#type: t as i32,
        ..Default::default()
    };
    let body = |req: &CompleteRequest| wire::request_body(req, "gpt-4o", None, false).unwrap();
    assert_eq!(body(&req).get("response_format"), None);
    req.response_format = Some(format(ResponseFormatType::Unspecified));
    assert_eq!(body(&req).get("response_format"), None);
    req.response_format = Some(format(ResponseFormatType::Text));
    assert_eq!(body(&req)["response_format"], json!({"type": "text"}));
    req.response_format = Some(format(ResponseFormatType::JsonObject));
    assert_eq!(
        body(&req)["response_format"],
        json!({"type": "json_object"})
    );
    req.response_format = Some(ResponseFormat {
        name: "answer".into(),
        description: "the answer".into(),
        schema_json: r#"{"type":"object","properties":{"a":{"type":"string"}}}"#.into(),
        strict: true,
        ..format(ResponseFormatType::JsonSchema)
    });
    assert_eq!(
        body(&req)["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "answer", "description": "the answer",
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}}, "strict": true}})
    );
}

#[test]
fn finish_reasons_map() {
    for (s, f) in [
        ("stop", FinishReason::Stop),
        ("tool_calls", FinishReason::ToolCalls),
        ("function_call", FinishReason::ToolCalls),
        ("length", FinishReason::Length),
        ("content_filter", FinishReason::ContentFilter),
        ("something_new", FinishReason::Unspecified),
    ] {
        assert_eq!(wire::finish_reason(Some(s)), f);
    }
}

#[test]
fn errors_and_refusals_are_read() {
    let body = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    assert_eq!(http::error_message(body), "Rate limit reached");
    assert_eq!(
        http::error_message(b"upstream connect error"),
        "upstream connect error"
    );
    let refusal = json!({"choices": [{"message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}]});
    assert_eq!(
        wire::parse_completion(&bytes(&refusal))
            .unwrap()
            .message
            .text,
        "I can't help with that."
    );
    assert!(
        wire::parse_completion(br#"{"choices": []}"#)
            .unwrap_err()
            .contains("no choices")
    );
    let mut a = Assembler::default();
    assert!(
        a.apply(r#"{"error":{"message":"overloaded"}}"#)
            .unwrap_err()
            .contains("overloaded")
    );
}
