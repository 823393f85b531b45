//! Translation against Anthropic's published examples (bridle-testkit/fixtures/anthropic).

use bridle_proto::complete_chunk::Chunk;
use bridle_proto::{
    CompleteRequest, FinishReason, Message, Role, ToolCall, ToolChoice, ToolChoiceMode, ToolSpec,
    Usage,
};
use bridle_testkit::mock_anthropic::{fixture, fixture_text, message_to_events, tool_use_message};
use serde_json::json;

use super::stream::Assembler;
use super::wire::{self, Parsed};
use crate::provider::http::Assembler as _;
use crate::provider::sse::SseParser;

fn bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// Feeds raw SSE text through the parser and the assembler, `split` bytes at a time.
fn assemble(sse: &str, split: usize) -> Result<(Parsed, Vec<Chunk>, bool), String> {
    let mut parser = SseParser::default();
    let mut asm = Assembler::default();
    let mut deltas = Vec::new();
    for piece in sse.as_bytes().chunks(split) {
        for data in parser.push(piece)? {
            deltas.extend(asm.apply(&data)?);
        }
    }
    let complete = asm.complete();
    Ok((asm.finish(), deltas, complete))
}

/// A fixture stream as the wire carries it: the published files leave out the blank line that
/// ends the last event.
fn sse(name: &str) -> String {
    format!("{}\n\n", fixture_text(name).unwrap().trim_end())
}

fn framed(events: &[serde_json::Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect()
}

#[test]
fn the_published_message_translates() {
    let p = wire::parse_message(&bytes(&fixture("message.json").unwrap())).unwrap();
    assert_eq!(p.message.role, Role::Assistant as i32);
    assert_eq!(p.message.text, "Hi! My name is Claude.");
    assert_eq!(p.finish_reason, FinishReason::Stop);
    assert_eq!(p.model, "claude-3-5-sonnet-20240620");
    assert_eq!(p.id, "msg_013Zva2CMHLNnXjNJJKqJ2EF");
    assert_eq!(
        p.usage,
        Usage {
            input_tokens: 2095,
            output_tokens: 503,
            ..Default::default()
        }
    );
}

#[test]
fn the_published_tool_use_translates_and_goes_back_the_same() {
    let f = fixture("message_tool_use.json").unwrap();
    let p = wire::parse_message(&bytes(&f)).unwrap();
    assert_eq!(p.finish_reason, FinishReason::ToolCalls);
    assert!(
        p.message
            .text
            .starts_with("<thinking>I need to use the get_weather")
    );
    assert_eq!(p.message.tool_calls.len(), 1);
    let call = &p.message.tool_calls[0];
    assert_eq!(
        (call.id.as_str(), call.name.as_str()),
        ("toolu_01A09q90qw90lq917835lq9", "get_weather")
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&call.arguments_json).unwrap(),
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    // Sent back on the next turn, the assistant turn is what Anthropic produced, and the tool's
    // result is a tool_result block in a user turn.
    let req = CompleteRequest {
        messages: vec![
            msg(Role::User, "What is the weather like in San Francisco?"),
            p.message.clone(),
            Message {
                role: Role::Tool as i32,
                text: "15 degrees".into(),
                tool_call_id: "toolu_01A09q90qw90lq917835lq9".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let body = wire::request_body(&req, "claude-3-5-sonnet-20240620", None, false).unwrap();
    assert_eq!(body["messages"][1]["role"], "assistant");
    assert_eq!(body["messages"][1]["content"], f["content"]);
    assert_eq!(
        body["messages"][2],
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"}]})
    );
}

#[test]
fn the_published_streams_assemble() {
    for split in [1, 7, 4096] {
        let (p, deltas, complete) = assemble(&sse("stream_basic.txt"), split).unwrap();
        assert!(complete);
        assert_eq!(p.message.text, "Hello there!");
        assert_eq!(p.finish_reason, FinishReason::Stop);
        assert_eq!(
            (p.model.as_str(), p.id.as_str()),
            (
                "claude-3-opus-latest",
                "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK"
            )
        );
        assert_eq!((p.usage.input_tokens, p.usage.output_tokens), (11, 6));
        assert_eq!(
            deltas,
            vec![
                Chunk::TextDelta("Hello".into()),
                Chunk::TextDelta(" there".into()),
                Chunk::TextDelta("!".into())
            ]
        );

        let (p, deltas, _) = assemble(&sse("stream_tool_use.txt"), split).unwrap();
        assert_eq!(
            p.message.text,
            "I'll check the current weather in Paris for you."
        );
        assert_eq!(p.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            p.message.tool_calls,
            vec![ToolCall {
                id: "toolu_01NRLabsLyVHZPKxbKvkfSMn".into(),
                name: "get_weather".into(),
                arguments_json: r#"{"location":"Paris"}"#.into(),
            }]
        );
        assert_eq!((p.usage.input_tokens, p.usage.output_tokens), (377, 65));
        // The call's id and name come first, then its input exactly as the model streamed it.
        let calls: Vec<_> = deltas
            .iter()
            .filter_map(|d| match d {
                Chunk::ToolCallDelta(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            (calls[0].index, calls[0].id.as_str(), calls[0].name.as_str()),
            (0, "toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather")
        );
        let args: String = calls.iter().map(|c| c.arguments_delta.as_str()).collect();
        assert_eq!(args, r#"{"location": "Paris"}"#);
    }
}

#[test]
fn streamed_and_plain_answers_are_the_same() {
    let mut cached = fixture("message.json").unwrap();
    cached["usage"] = json!({"input_tokens": 21, "cache_creation_input_tokens": 188,
        "cache_read_input_tokens": 1800, "output_tokens": 393});
    let mut calls = tool_use_message(
        "claude-sonnet-4-20250514",
        "Two lookups.",
        &[
            ("toolu_1", "search", json!({"q": "rust sse", "n": 3})),
            ("toolu_2", "now", json!({})),
        ],
    );
    calls["usage"] = json!({"input_tokens": 50, "output_tokens": 20});
    for message in [
        fixture("message.json").unwrap(),
        fixture("message_tool_use.json").unwrap(),
        cached,
        calls,
    ] {
        let plain = wire::parse_message(&bytes(&message)).unwrap();
        for split in [1, 3, 64, 4096] {
            let (streamed, _, complete) =
                assemble(&framed(&message_to_events(&message)), split).unwrap();
            assert!(complete);
            assert_eq!(streamed, plain, "split {split}");
        }
    }
}

#[test]
fn cache_tokens_are_subsets_of_input() {
    let mut m = fixture("message.json").unwrap();
    m["usage"] = json!({"input_tokens": 21, "cache_creation_input_tokens": 188,
        "cache_read_input_tokens": 1800, "output_tokens": 393});
    let p = wire::parse_message(&bytes(&m)).unwrap();
    assert_eq!(
        p.usage,
        Usage {
            input_tokens: 21 + 188 + 1800,
            output_tokens: 393,
            cache_read_tokens: 1800,
            cache_write_tokens: 188,
            reasoning_tokens: 0,
        }
    );
}

fn msg(role: Role, text: &str) -> Message {
    Message {
        role: role as i32,
        text: text.into(),
        ..Default::default()
    }
}

#[test]
fn requests_use_anthropic_shapes() {
    let mut failed = msg(Role::Tool, "");
    failed.tool_call_id = "c2".into();
    failed.is_error = true;
    let mut ok = msg(Role::Tool, "sunny");
    ok.tool_call_id = "c1".into();
    let req = CompleteRequest {
        messages: vec![
            msg(Role::System, "be brief"),
            msg(Role::System, "answer in French"),
            msg(Role::User, "weather?"),
            Message {
                role: Role::Assistant as i32,
                tool_calls: vec![
                    ToolCall {
                        id: "c1".into(),
                        name: "get_weather".into(),
                        arguments_json: r#"{"city":"Paris"}"#.into(),
                    },
                    ToolCall {
                        id: "c2".into(),
                        name: "now".into(),
                        arguments_json: String::new(),
                    },
                ],
                ..Default::default()
            },
            ok,
            failed,
            msg(Role::User, "and tomorrow?"),
        ],
        tools: vec![ToolSpec {
            name: "get_weather".into(),
            description: "Weather of a city".into(),
            parameters_json_schema: r#"{"type":"object","properties":{"city":{"type":"string"}}}"#
                .into(),
            ..Default::default()
        }],
        tool_choice: Some(ToolChoice {
            mode: ToolChoiceMode::Required as i32,
            name: String::new(),
        }),
        temperature: Some(0.5),
        top_p: Some(0.25),
        stop: vec!["\n\nHuman:".into()],
        end_user: "customer-42".into(),
        ..Default::default()
    };
    let body = wire::request_body(&req, "claude-sonnet-4-20250514", None, true).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 4096,
            "system": "be brief\n\nanswer in French",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "c2", "name": "now", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "c2", "content": "(the tool failed without output)", "is_error": true},
                    {"type": "text", "text": "and tomorrow?"}]}
            ],
            "tools": [{"name": "get_weather", "description": "Weather of a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any"},
            "temperature": 0.5,
            "top_p": 0.25,
            "stop_sequences": ["\n\nHuman:"],
            "metadata": {"user_id": "customer-42"},
            "stream": true
        })
    );
    // A seed has nowhere to go in this API: refused by name, not dropped.
    let mut seeded = req.clone();
    seeded.seed = Some(7);
    let e = wire::request_body(&seeded, "m", None, false).unwrap_err();
    assert!(
        e.starts_with("seed: Anthropic's Messages API takes no seed"),
        "{e}"
    );
    // Nor a JSON response format; free text said outright is what it writes anyway.
    let mut json_mode = req.clone();
    json_mode.response_format = Some(bridle_proto::ResponseFormat {
        r#type: bridle_proto::ResponseFormatType::JsonObject as i32,
        ..Default::default()
    });
    let e = wire::request_body(&json_mode, "m", None, false).unwrap_err();
    assert!(
        e.starts_with("response_format: Anthropic's Messages API takes no response format"),
        "{e}"
    );
    json_mode.response_format = Some(bridle_proto::ResponseFormat {
        r#type: bridle_proto::ResponseFormatType::Text as i32,
        ..Default::default()
    });
    assert!(wire::request_body(&json_mode, "m", None, false).is_ok());
    // A reasoning level goes as output_config.effort, a thinking budget as thinking; a level
    // the API lacks, or a budget at the output cap, is refused by name.
    let mut reasoning = req.clone();
    reasoning.reasoning_effort = "high".into();
    reasoning.thinking_budget_tokens = Some(2048);
    let b = wire::request_body(&reasoning, "m", Some(8192), false).unwrap();
    assert_eq!(b["output_config"], json!({"effort": "high"}));
    assert_eq!(
        b["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    reasoning.reasoning_effort = "minimal".into();
    let e = wire::request_body(&reasoning, "m", Some(8192), false).unwrap_err();
    assert!(
        e.starts_with("reasoning_effort: Anthropic's Messages API takes low"),
        "{e}"
    );
    reasoning.reasoning_effort = String::new();
    let e = wire::request_body(&reasoning, "m", Some(2048), false).unwrap_err();
    assert!(
        e.starts_with(
            "thinking_budget_tokens: 2048 must be below the call's output cap max_tokens (2048"
        ),
        "{e}"
    );
    // Caching breakpoints: the system prompt becomes a block that holds one, a tool and a
    // message's last block hold theirs; more than four, or a cache key, are refused by name.
    let mut cached = req.clone();
    cached.messages = vec![
        Message {
            role: Role::System as i32,
            text: "be brief".into(),
            cache_breakpoint: true,
            ..Default::default()
        },
        Message {
            role: Role::User as i32,
            text: "hi".into(),
            cache_breakpoint: true,
            ..Default::default()
        },
    ];
    cached.tools = vec![bridle_proto::ToolSpec {
        name: "f".into(),
        cache_breakpoint: true,
        ..Default::default()
    }];
    let b = wire::request_body(&cached, "m", None, false).unwrap();
    let mark = json!({"type": "ephemeral"});
    assert_eq!(
        b["system"],
        json!([{"type": "text", "text": "be brief", "cache_control": mark}])
    );
    assert_eq!(b["tools"][0]["cache_control"], mark);
    assert_eq!(
        b["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": mark}]}])
    );
    cached.tools = vec![cached.tools[0].clone(); 3];
    let e = wire::request_body(&cached, "m", None, false).unwrap_err();
    assert!(
        e.starts_with("cache_breakpoint: 5 prompt-caching breakpoints, more than the 4"),
        "{e}"
    );
    cached.tools.clear();
    cached.prompt_cache_key = "k".into();
    let e = wire::request_body(&cached, "m", None, false).unwrap_err();
    assert!(
        e.starts_with("prompt_cache_key: Anthropic's Messages API takes no cache key"),
        "{e}"
    );
    // Nor a tool whose arguments must match its schema exactly.
    let mut strict = req.clone();
    strict.tools = vec![bridle_proto::ToolSpec {
        name: "get_weather".into(),
        strict: true,
        ..Default::default()
    }];
    let e = wire::request_body(&strict, "m", None, false).unwrap_err();
    assert!(
        e.starts_with("tools: 'get_weather' asks for strict arguments"),
        "{e}"
    );
    strict.tools[0].strict = false;
    assert!(wire::request_body(&strict, "m", None, false).is_ok());
    // A target's cap applies when the request has none; the request's wins.
    let b = wire::request_body(&req, "m", Some(100), false).unwrap();
    assert_eq!(
        (b["max_tokens"].clone(), b.get("stream")),
        (json!(100), None)
    );
    let mut capped = req.clone();
    capped.max_output_tokens = Some(7);
    assert_eq!(
        wire::request_body(&capped, "m", Some(100), false).unwrap()["max_tokens"],
        7
    );
    // Named and none choices.
    let mut named = req.clone();
    named.tool_choice = Some(ToolChoice {
        mode: ToolChoiceMode::Named as i32,
        name: "get_weather".into(),
    });
    assert_eq!(
        wire::request_body(&named, "m", None, false).unwrap()["tool_choice"],
        json!({"type": "tool", "name": "get_weather"})
    );
    // Arguments that are not an object cannot be sent to Anthropic: the error says where.
    let mut bad = req;
    bad.messages[3].tool_calls[0].arguments_json = "[1,2]".into();
    let e = wire::request_body(&bad, "m", None, false).unwrap_err();
    assert_eq!(
        e,
        "messages[3].tool_calls[0].arguments_json is not a JSON object; Anthropic needs one"
    );
}

#[test]
fn stop_reasons_map() {
    for (s, f) in [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("tool_use", FinishReason::ToolCalls),
        ("max_tokens", FinishReason::Length),
        ("refusal", FinishReason::ContentFilter),
        ("something_new", FinishReason::Unspecified),
    ] {
        assert_eq!(wire::finish_reason(Some(s)), f);
    }
}

#[test]
fn thinking_blocks_travel_back_verbatim() {
    let m = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig=="},
            {"type": "text", "text": "42"}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 2}});
    let plain = wire::parse_message(&bytes(&m)).unwrap();
    assert_eq!(plain.message.text, "42");
    let events = vec![
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-sonnet-4-20250514", "usage": {"input_tokens": 1, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me "}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "think."}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig=="}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "42"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
        json!({"type": "message_stop"}),
    ];
    let (streamed, deltas, _) = assemble(&framed(&events), 5).unwrap();
    assert_eq!(streamed, plain);
    assert_eq!(
        deltas,
        vec![Chunk::TextDelta("42".into())],
        "thinking is not shown"
    );
    let req = CompleteRequest {
        messages: vec![msg(Role::User, "q"), plain.message, msg(Role::User, "more")],
        ..Default::default()
    };
    let body = wire::request_body(&req, "m", None, false).unwrap();
    assert_eq!(body["messages"][1]["content"], m["content"]);
}

#[test]
fn broken_streams_are_errors() {
    // An error event, as the streaming guide shows it.
    let e = assemble(&sse("stream_error.txt"), 4096).unwrap_err();
    assert_eq!(
        e,
        "the provider reported an error mid-stream: overloaded_error: Overloaded"
    );
    // Cut before the end: not complete.
    let text = sse("stream_basic.txt");
    let cut = &text[..text.find("event: message_delta").unwrap()];
    let (_, deltas, complete) = assemble(cut, 4096).unwrap();
    assert!(!complete);
    assert_eq!(deltas.len(), 3);
    // Not JSON, and a delta for a block that never started.
    assert!(
        assemble("data: {not json\n\n", 10)
            .unwrap_err()
            .contains("not JSON")
    );
    let orphan = r#"data: {"type":"content_block_delta","index":4,"delta":{"type":"text_delta","text":"x"}}"#;
    assert_eq!(
        assemble(&format!("{orphan}\n\n"), 100).unwrap_err(),
        "a delta for block 4, which never started"
    );
    // A plain answer without content is not a message.
    assert!(
        wire::parse_message(br#"{"type":"message"}"#)
            .unwrap_err()
            .contains("no content")
    );
}
