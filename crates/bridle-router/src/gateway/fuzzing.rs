//! Entry points for the fuzz targets in `fuzz/` (`gateway_openai` for both OpenAI fronts,
//! `gateway_anthropic`, `sse`);
//! not an API. They run what the HTTP fronts do with a request body once the caller is
//! authenticated — the body as JSON, the front's translation, the router's checks — without a
//! server, Redis or a provider, so the fuzzer can run them millions of times.

use bridle_proto::CompleteRequest;

pub use crate::provider::sse::SseParser;

/// The request body limit of a router with default options.
const MAX_BODY: usize = 4 << 20;

/// What a front makes of a request body; the message the client would get on error.
pub type Parsed = Result<CompleteRequest, String>;

fn checked(req: CompleteRequest) -> Parsed {
    crate::request::validate(&req, MAX_BODY)
        .map(|()| req)
        .map_err(|e| super::Failure::from(e).message)
}

fn json(body: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("the request body is not JSON: {e}"))
}

/// `POST /v1/chat/completions`.
pub fn openai_request(body: &[u8]) -> Parsed {
    let v = json(body)?;
    let (req, _stream, _usage) = super::openai::parse(&v).map_err(|f| f.message)?;
    checked(req)
}

/// `POST /v1/responses`.
pub fn responses_request(body: &[u8]) -> Parsed {
    let v = json(body)?;
    let parsed = super::openai::parse_responses(&v).map_err(|f| f.message)?;
    checked(parsed.req)
}

/// `POST /v1/messages`.
pub fn anthropic_request(body: &[u8]) -> Parsed {
    let v = json(body)?;
    let (req, _stream) = super::anthropic::parse(&v).map_err(|f| f.message)?;
    checked(req)
}
