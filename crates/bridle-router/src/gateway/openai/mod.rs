//! The OpenAI-compatible front: Chat Completions and Responses (plain and streamed), and the
//! model list.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Answer, Failure, Gateway, Kind, read_json, scope};
use crate::error::bounded;

mod responses;
mod responses_stream;
mod stream;
mod wire;

pub(super) use responses::parse as parse_responses;
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

pub async fn responses(State(g): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    match responses_inner(&g, &headers, body).await {
        Ok(r) => r,
        Err(f) => error_response(&f),
    }
}

async fn responses_inner(
    g: &Gateway,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let caller = scope(g, headers).await?;
    let body = read_json(g, headers, body).await?;
    let responses::Parsed {
        mut req,
        stream,
        echo,
    } = responses::parse(&body)?;
    caller.apply(&mut req)?;
    Ok(match super::answer(g, headers, req, stream).await? {
        Answer::Stream(first, rx) => responses_stream::respond(echo, first, rx),
        Answer::Whole(resp) => {
            let ids = responses::ItemIds::default();
            let v = responses::finished(
                &echo,
                &super::new_id("resp_"),
                super::unix_now(),
                &resp,
                &ids,
            );
            axum::Json(v).into_response()
        }
    })
}

fn model_entry(name: &str) -> Value {
    json!({"id": name, "object": "model", "created": 0, "owned_by": "bridle"})
}

/// `GET /v1/models/{id}`: the caller's route of that name, or 404 in OpenAI's shape.
pub async fn model(
    State(g): State<Arc<Gateway>>,
    headers: HeaderMap,
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let found = async {
        let caller = scope(&g, &headers).await?;
        let id = id
            .map_err(|e| Failure::invalid(format!("the model id in the path: {e}")))?
            .0;
        let routes = g.dispatch.routes(&caller.scope.tenant).await?;
        if routes.iter().any(|r| r.metadata.name == id) {
            Ok(model_entry(&id))
        } else {
            Err(Failure::new(
                StatusCode::NOT_FOUND,
                Kind::NotFound,
                format!(
                    "the model {} does not exist: no ModelRoute of that name in this tenant (GET /v1/models lists them)",
                    crate::error::quote(&id)
                ),
            ))
        }
    };
    match found.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(f) => error_response(&f),
    }
}

pub async fn models(State(g): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let listed = async {
        let caller = scope(&g, &headers).await?;
        let routes = g.dispatch.routes(&caller.scope.tenant).await?;
        let data: Vec<Value> = routes
            .iter()
            .map(|r| model_entry(&r.metadata.name))
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
            "this gateway serves POST /v1/chat/completions, POST /v1/responses, GET /v1/models, GET /v1/models/{{id}} and POST /v1/messages, not {method} {}",
            crate::error::quote(uri.path())
        ),
    ))
}
