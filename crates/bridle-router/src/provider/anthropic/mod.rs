//! Anthropic Messages (`POST <baseUrl>/messages`): one try, plain or streamed, with the key in
//! `x-api-key` and the API version in `anthropic-version`.

pub mod stream;
pub mod wire;

use std::time::Duration;

use bridle_core::manifest::Target;
use bridle_proto::CompleteRequest;
use reqwest::header::{HeaderName, HeaderValue};

use super::http::{self, Creds};
use super::{DeltaSink, ProviderReply, TryError};
use crate::error::FailureCode;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com/v1";
/// The API version this translation speaks.
pub const API_VERSION: &str = "2023-06-01";
const NAME: &str = "anthropic";

#[derive(Clone)]
pub struct Anthropic {
    http: reqwest::Client,
}

impl Anthropic {
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
        let url = format!("{}/messages", base.trim_end_matches('/'));
        let body = wire::request_body(req, model, target.max_output_tokens, sink.is_some())
            .map_err(|m| {
                TryError::rejected(
                    FailureCode::InvalidArgument,
                    format!("target '{}': {m}", target.name),
                )
            })?;
        let mut headers = http::headers(target, creds, HeaderName::from_static("x-api-key"), "")?;
        // A target may pin another version through its headers.
        headers
            .entry("anthropic-version")
            .or_insert(HeaderValue::from_static(API_VERSION));
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
            let parsed = match sink {
                None => {
                    let bytes = resp
                        .bytes()
                        .await
                        .map_err(|e| http::transport(&e, base, creds))?;
                    wire::parse_message(&bytes).map_err(|m| {
                        TryError::faulty(
                            FailureCode::Unavailable,
                            format!("{NAME} answered HTTP {status} but {m}"),
                        )
                    })?
                }
                Some(sink) => {
                    let mut asm = stream::Assembler::default();
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
