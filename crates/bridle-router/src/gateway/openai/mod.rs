//! The OpenAI-compatible front: Chat Completions (plain and streamed) and the model list.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Answer, Failure, Gateway, Kind, read_json, scope};
use crate::error::bounded;

mod stream;
mod wire;

pub use wire::bridle_fields;
use wire::completion;
pub(super) use wire::parse;

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
    let code = f.code.map(|c| json!(c)).unwrap_or(code);
    let param = match (&f.param, f.kind) {
        (Some(p), _) => json!(p),
        (None, Kind::NotFound) => json!("model"),
        (None, _) => Value::Null,
    };
    let body = json!({"error": {"message": bounded(&f.message), "type": kind, "param": param, "code": code}});
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
    let caller = scope(g, headers).await?;
    let body = read_json(g, headers, body).await?;
    let (mut req, stream, include_usage) = parse(&body)?;
    caller.apply(&mut req)?;
    let model = req.route.clone();
    Ok(match super::answer(g, headers, req, stream).await? {
        Answer::Stream(first, rx) => stream::respond(model, first, rx, include_usage),
        Answer::Whole(resp) => axum::Json(completion(&model, &resp)).into_response(),
    })
}

pub async fn models(State(g): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let listed = async {
        let caller = scope(&g, &headers).await?;
        let routes = g.dispatch.routes(&caller.scope.tenant).await?;
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
    error_response(&Failure::new(
        StatusCode::NOT_FOUND,
        Kind::InvalidRequest,
        format!(
            "this gateway serves POST /v1/chat/completions, GET /v1/models and POST /v1/messages, not {method} {}",
            crate::error::quote(uri.path())
        ),
    ))
}
