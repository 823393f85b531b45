//! The OpenAI-compatible front: Chat Completions (plain and streamed) and the model list.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bridle_proto::{
    CompleteRequest, CompleteResponse, FinishReason, Message, Role, ToolCall, ToolChoice,
    ToolChoiceMode, ToolSpec,
};
use serde_json::{Value, json};

use super::{Failure, Gateway, Kind, read_json, scope, unix_now};

pub fn error_response(f: &Failure) -> Response {
    let (kind, code) = match f.kind {
        Kind::InvalidRequest => ("invalid_request_error", Value::Null),
        Kind::Authentication => ("invalid_request_error", json!("invalid_api_key")),
        Kind::Permission => ("permission_error", Value::Null),
        Kind::NotFound => ("invalid_request_error", json!("model_not_found")),
        Kind::TooLarge => ("invalid_request_error", json!("request_too_large")),
        Kind::RateLimit => ("requests", json!("rate_limit_exceeded")),
        Kind::Upstream => ("upstream_error", Value::Null),
        Kind::Timeout => ("timeout", Value::Null),
        Kind::Internal => ("server_error", Value::Null),
    };
    let param = if f.kind == Kind::NotFound {
        json!("model")
    } else {
        Value::Null
    };
    let body = json!({"error": {"message": f.message, "type": kind, "param": param, "code": code}});
    let mut resp = (f.status, axum::Json(body)).into_response();
    set_retry_after(&mut resp, f);
    resp
}

pub fn set_retry_after(resp: &mut Response, f: &Failure) {
    if let Some(d) = f.retry_after {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&d.as_millis().div_ceil(1000).to_string()) {
            h.insert("retry-after", v);
        }
        if let Ok(v) = HeaderValue::from_str(&d.as_millis().to_string()) {
            h.insert("retry-after-ms", v);
        }
    }
}

pub async fn chat(State(g): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    match chat_inner(&g, &headers, body).await {
        Ok(r) => r,
        Err(f) => error_response(&f),
    }
}

async fn chat_inner(g: &Gateway, headers: &HeaderMap, body: Body) -> Result<Response, Failure> {
    let scope = scope(g, headers).await?;
    let body = read_json(body, g.max_body).await?;
    let (mut req, stream, include_usage) = parse(&body)?;
    req.scope = Some(scope);
    let model = req.route.clone();
    if stream {
        let admitted = g.dispatch.admit(req).await?;
        let mut rx = g.dispatch.stream(admitted);
        let first = super::first_item(&mut rx).await?;
        return Ok(super::openai_stream::respond(
            model,
            first,
            rx,
            include_usage,
        ));
    }
    let resp = g.dispatch.complete(req).await?;
    Ok(axum::Json(completion(&model, &resp)).into_response())
}

pub async fn models(State(g): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let listed = async {
        let scope = scope(&g, &headers).await?;
        let routes = g.dispatch.routes(&scope.tenant).await?;
        let data: Vec<Value> = routes
            .iter()
            .map(|r| json!({"id": r.metadata.name, "object": "model", "created": 0, "owned_by": "bridle"}))
            .collect();
        Ok::<_, Failure>(json!({"object": "list", "data": data}))
    };
    match listed.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(f) => error_response(&f),
    }
}

pub async fn unknown(method: Method, uri: Uri) -> Response {
    error_response(&Failure {
        status: StatusCode::NOT_FOUND,
        kind: Kind::InvalidRequest,
        message: format!(
            "this gateway serves POST /v1/chat/completions, GET /v1/models and POST /v1/messages, not {method} {}",
            uri.path()
        ),
        retry_after: None,
    })
}

fn str_field<'a>(v: &'a Value, key: &str, at: &str) -> Result<Option<&'a str>, Failure> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Failure::invalid(format!("{at}{key}: must be a string"))),
    }
}

/// The text of a message's `content`: a string, or text parts.
fn content_text(v: &Value, at: &str) -> Result<String, Failure> {
    match v.get("content") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        out.push_str(p.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    Some(other) => {
                        return Err(Failure::invalid(format!(
                            "{at}content[{j}].type: '{other}' parts are not supported by this gateway (only text)"
                        )));
                    }
                    None => {
                        return Err(Failure::invalid(format!(
                            "{at}content[{j}].type: is required"
                        )));
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(Failure::invalid(format!(
            "{at}content: must be a string or an array of parts"
        ))),
    }
}

/// A chat completion request as a Bridle request, whether to stream, and whether the stream
/// ends with a usage chunk. Acted on: model, messages (text content), tools, tool_choice,
/// temperature, max_tokens / max_completion_tokens, stream, stream_options.include_usage.
/// Other fields (top_p, stop, seed, user, parallel_tool_calls, ...) are accepted and ignored;
/// `n` above 1 and non-text content parts are refused.
pub fn parse(body: &Value) -> Result<(CompleteRequest, bool, bool), Failure> {
    if !body.is_object() {
        return Err(Failure::invalid("the request body must be a JSON object"));
    }
    let route = str_field(body, "model", "")?
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Failure::invalid("model: is required (the name of a ModelRoute)"))?;
    if let Some(n) = body.get("n").and_then(Value::as_u64).filter(|n| *n != 1) {
        return Err(Failure::invalid(format!(
            "n: {n} choices are not supported by this gateway (only 1)"
        )));
    }
    let raw = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::invalid("messages: is required (an array)"))?;
    let mut messages = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let at = format!("messages[{i}].");
        let role = match str_field(m, "role", &at)? {
            Some("system") | Some("developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool") => Role::Tool,
            Some(other) => {
                return Err(Failure::invalid(format!(
                    "{at}role: '{other}' is not system, developer, user, assistant or tool"
                )));
            }
            None => return Err(Failure::invalid(format!("{at}role: is required"))),
        };
        let mut msg = Message {
            role: role as i32,
            text: content_text(m, &at)?,
            ..Default::default()
        };
        if role == Role::Tool {
            msg.tool_call_id = str_field(m, "tool_call_id", &at)?
                .unwrap_or_default()
                .to_string();
        }
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            for (j, c) in calls.iter().enumerate() {
                let at = format!("{at}tool_calls[{j}].");
                let f = c.get("function").cloned().unwrap_or_default();
                msg.tool_calls.push(ToolCall {
                    id: str_field(c, "id", &at)?.unwrap_or_default().to_string(),
                    name: str_field(&f, "name", &format!("{at}function."))?
                        .unwrap_or_default()
                        .to_string(),
                    arguments_json: str_field(&f, "arguments", &format!("{at}function."))?
                        .unwrap_or_default()
                        .to_string(),
                });
            }
        }
        messages.push(msg);
    }
    let mut tools = Vec::new();
    for (i, t) in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("tools[{i}].");
        if t.get("type")
            .and_then(Value::as_str)
            .is_some_and(|k| k != "function")
        {
            return Err(Failure::invalid(format!(
                "{at}type: only function tools are supported"
            )));
        }
        let f = t.get("function").cloned().unwrap_or_default();
        let params = f
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        tools.push(ToolSpec {
            name: str_field(&f, "name", &format!("{at}function."))?
                .unwrap_or_default()
                .to_string(),
            description: str_field(&f, "description", &format!("{at}function."))?
                .unwrap_or_default()
                .to_string(),
            parameters_json_schema: params.to_string(),
            ..Default::default()
        });
    }
    let tool_choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(ToolChoice {
            mode: match s.as_str() {
                "auto" => ToolChoiceMode::Auto,
                "none" => ToolChoiceMode::None,
                "required" => ToolChoiceMode::Required,
                other => {
                    return Err(Failure::invalid(format!(
                        "tool_choice: '{other}' is not auto, none or required"
                    )));
                }
            } as i32,
            name: String::new(),
        }),
        Some(v) => Some(ToolChoice {
            mode: ToolChoiceMode::Named as i32,
            name: v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| Failure::invalid("tool_choice.function.name: is required"))?
                .to_string(),
        }),
    };
    let number = |k: &str| body.get(k).filter(|v| !v.is_null());
    let temperature = match number("temperature") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .ok_or_else(|| Failure::invalid("temperature: must be a number"))?
                as f32,
        ),
    };
    let max = number("max_completion_tokens").or_else(|| number("max_tokens"));
    let max_output_tokens = match max {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| Failure::invalid("max_tokens: must be a positive integer"))?,
        ),
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((
        CompleteRequest {
            route: route.to_string(),
            messages,
            tools,
            tool_choice,
            temperature,
            max_output_tokens,
            ..Default::default()
        },
        stream,
        include_usage,
    ))
}

pub fn finish_reason(f: i32) -> &'static str {
    match FinishReason::try_from(f).unwrap_or(FinishReason::Unspecified) {
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Stop | FinishReason::Unspecified | FinishReason::Error => "stop",
    }
}

pub fn usage(r: &CompleteResponse) -> Value {
    let u = r.usage.unwrap_or_default();
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

/// What Bridle adds to a response: who answered and what it cost (cost is null when unknown).
pub fn bridle_fields(r: &CompleteResponse) -> Value {
    let cost = r.cost.unwrap_or_default();
    json!({
        "target": r.target,
        "provider": r.provider,
        "model": r.model,
        "scripted": r.scripted,
        "response_id": r.response_id,
        "cost_nano_usd": if cost.known { json!(cost.nano_usd) } else { Value::Null },
    })
}

pub fn completion(model: &str, r: &CompleteResponse) -> Value {
    let m = r.message.clone().unwrap_or_default();
    let calls: Vec<Value> = m
        .tool_calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}))
        .collect();
    let mut message = json!({
        "role": "assistant",
        "content": if m.text.is_empty() && !calls.is_empty() { Value::Null } else { json!(m.text) },
        "refusal": null,
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": super::new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(r.finish_reason)}],
        "usage": usage(r),
        "bridle": bridle_fields(r),
    })
}
