//! OpenAI Chat Completions (and compatible servers through `baseUrl`, and Azure OpenAI
//! deployments through `azure`), or OpenAI's Responses API with `api: responses`: one try,
//! plain or streamed.

pub mod responses;
pub mod stream;
pub mod wire;

use std::time::Duration;

use bridle_core::manifest::{OpenAiApi, Target};
use bridle_proto::CompleteRequest;
use reqwest::header::{AUTHORIZATION, HeaderName};

use super::http::{self, Creds};
use super::{DeltaSink, ProviderReply, TryError};
use crate::error::FailureCode;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
const NAME: &str = "openai";

#[derive(Clone)]
pub struct OpenAi {
    http: reqwest::Client,
}

/// The URL of one call: `<baseUrl>/chat/completions`, or for Azure
/// `<baseUrl>/openai/deployments/<deployment>/chat/completions?api-version=<v>`.
pub fn url(target: &Target) -> String {
    let base = base_url(target);
    match &target.azure {
        Some(az) => format!(
            "{base}/openai/deployments/{}/chat/completions?api-version={}",
            az.deployment, az.api_version
        ),
        None => format!("{base}/chat/completions"),
    }
}

/// The target's base URL (OpenAI's own by default), without a trailing slash.
pub fn base_url(target: &Target) -> &str {
    target
        .base_url
        .as_deref()
        .unwrap_or(DEFAULT_BASE_URL)
        .trim_end_matches('/')
}

impl OpenAi {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    /// One try. With a sink the call streams and every delta goes to it as it arrives.
    pub async fn call(
        &self,
        target: &Target,
        req: &CompleteRequest,
        creds: &Creds,
        timeout: Duration,
        sink: Option<&DeltaSink>,
    ) -> Result<ProviderReply, TryError> {
        let model = target.model.as_deref().unwrap_or_default();
        let base = target.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let api = target.api.unwrap_or_default();
        let (url, body) = match api {
            OpenAiApi::ChatCompletions => (
                url(target),
                wire::request_body(req, model, target.max_output_tokens, sink.is_some()),
            ),
            OpenAiApi::Responses => (
                responses::url(target),
                responses::request_body(req, model, target.max_output_tokens, sink.is_some()),
            ),
        };
        let body = body.map_err(|m| {
            TryError::rejected(
                FailureCode::InvalidArgument,
                format!("target '{}': {m}", target.name),
            )
        })?;
        // Azure takes the key in its own header; everyone else as a bearer token.
        let headers = match target.azure {
            Some(_) => http::headers(target, creds, HeaderName::from_static("api-key"), ""),
            None => http::headers(target, creds, AUTHORIZATION, "Bearer "),
        }?;
        let attempt = async {
            let resp = self
                .http
                .post(&url)
                .headers(headers)
                .json(&body)
                .send()
                .await
                .map_err(|e| http::transport(&e, base, creds))?;
            let status = resp.status().as_u16();
            if !resp.status().is_success() {
                return Err(http::error_response(NAME, resp, creds).await);
            }
            let parsed = match (sink, api) {
                (None, _) => {
                    let bytes = resp
                        .bytes()
                        .await
                        .map_err(|e| http::transport(&e, base, creds))?;
                    match api {
                        OpenAiApi::ChatCompletions => wire::parse_completion(&bytes),
                        OpenAiApi::Responses => serde_json::from_slice(&bytes)
                            .map_err(|e| format!("the response is not JSON: {e}"))
                            .and_then(|v| responses::parse_response(&v)),
                    }
                    .map_err(|m| {
                        TryError::faulty(
                            FailureCode::Unavailable,
                            format!("{NAME} answered HTTP {status} but {m}"),
                        )
                    })?
                }
                (Some(sink), OpenAiApi::ChatCompletions) => {
                    let mut asm = stream::Assembler::default();
                    http::read_stream(NAME, resp, &mut asm, sink, base, creds).await?;
                    asm.finish()
                }
                (Some(sink), OpenAiApi::Responses) => {
                    let mut asm = responses::Assembler::default();
                    http::read_stream(NAME, resp, &mut asm, sink, base, creds).await?;
                    asm.finish()
                }
            };
            Ok(ProviderReply {
                message: parsed.message,
                finish_reason: parsed.finish_reason,
                model: if parsed.model.is_empty() {
                    model.to_string()
                } else {
                    parsed.model
                },
                response_id: parsed.id,
                usage: parsed.usage,
                http_status: Some(status),
            })
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(http::timed_out(timeout)),
        }
    }
}

#[cfg(test)]
mod tests;
