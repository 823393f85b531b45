//! The Anthropic-compatible front: Messages, plain and streamed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Answer, Failure, Gateway, Kind, read_json, scope};
use crate::error::bounded;

mod stream;
mod wire;

use wire::message;
pub(super) use wire::parse;

pub fn error_response(f: &Failure) -> Response {
    let body = json!({"type": "error", "error": {"type": error_type(f.kind), "message": bounded(&f.message)}});
    let mut resp = (f.status, axum::Json(body)).into_response();
    super::openai::set_retry_after(&mut resp, f);
    resp
}

pub fn error_type(k: Kind) -> &'static str {
    match k {
        Kind::InvalidRequest => "invalid_request_error",
        Kind::Authentication => "authentication_error",
        Kind::Permission => "permission_error",
        Kind::NotFound => "not_found_error",
        Kind::TooLarge => "request_too_large",
        Kind::RateLimit => "rate_limit_error",
        Kind::Timeout => "timeout_error",
        Kind::Upstream | Kind::Internal => "api_error",
    }
}

pub async fn messages(State(g): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    match messages_inner(&g, &headers, body).await {
        Ok(r) => r,
        Err(f) => error_response(&f),
    }
}

async fn messages_inner(g: &Gateway, headers: &HeaderMap, body: Body) -> Result<Response, Failure> {
    let caller = scope(g, headers).await?;
    let body = read_json(g, headers, body).await?;
    let (mut req, stream) = parse(&body)?;
    caller.apply(&mut req)?;
    let model = req.route.clone();
    Ok(match super::answer(g, headers, req, stream).await? {
        Answer::Stream(first, rx) => stream::respond(model, first, rx),
        Answer::Whole(resp) => axum::Json(message(&model, &resp)).into_response(),
    })
}
