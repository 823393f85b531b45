//! The `google.rpc` details every error status carries, so a program tells errors apart without
//! reading their text: an `ErrorInfo` on every status (a stable UPPER_SNAKE `reason`, domain
//! [`DOMAIN`], metadata), a `BadRequest` naming each manifest problem's field (its file,
//! document and line in the `ErrorInfo` metadata), and on a refusal for a while `RetryInfo`
//! and `QuotaFailure`. Built once, in `From<Error> for tonic::Status`; the message text is the
//! same as without them.
//!
//! The reasons and metadata keys are a contract (documented in ARCHITECTURE.md "Errors" and
//! the docs' errors page): a reason is never renamed or reused for another meaning.

use std::collections::HashMap;
use std::time::Duration;

use tonic_types::{BadRequest, ErrorDetail, ErrorInfo, FieldViolation, QuotaFailure, RetryInfo};

use crate::error::Error;
use crate::manifest::ValidationErrors;

/// The `ErrorInfo.domain` of every Bridle error.
pub const DOMAIN: &str = "bridle.dev";

/// Most manifest problems sent as field violations: the status travels in HTTP/2 trailers,
/// which common clients cap at 8 to 16 KiB. `ErrorInfo.metadata["problems"]` has the count.
pub const MAX_FIELD_VIOLATIONS: usize = 20;

/// Longest description of one field violation or quota violation, in characters.
const DESCRIPTION_MAX: usize = 300;

/// Longest field path or file name quoted in a field violation or its metadata, in characters.
const NAME_MAX: usize = 120;

/// The most bytes the field violations and their metadata take: with the message's own copy
/// they travel in one response header, which common clients cap at 8 KiB
/// (`server::MAX_STATUS_DETAILS` is the backstop that drops what is still too big).
const VIOLATIONS_BUDGET: usize = 1200;

/// Why a call was refused for a while, when waiting is the cure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A requests- or tokens-per-minute limit (RESOURCE_EXHAUSTED).
    RateLimited,
    /// A spend budget would be exceeded (RESOURCE_EXHAUSTED).
    BudgetExceeded,
    /// Every target of a model route has its circuit breaker open (UNAVAILABLE).
    CircuitOpen,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::RateLimited => "RATE_LIMITED",
            Refusal::BudgetExceeded => "BUDGET_EXCEEDED",
            Refusal::CircuitOpen => "CIRCUIT_OPEN",
        }
    }

    pub fn code(self) -> tonic::Code {
        match self {
            Refusal::RateLimited | Refusal::BudgetExceeded => tonic::Code::ResourceExhausted,
            Refusal::CircuitOpen => tonic::Code::Unavailable,
        }
    }
}

/// The limit that refused a call, as `google.rpc.QuotaFailure` names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// What the limit counts against, as `kind:name` pairs joined by `/`:
    /// `tenant:acme/agent:writer/route:fast`, `tenant:acme/budget:daily/agent:writer`.
    pub subject: String,
    /// The violation's description (the refusal's first sentence).
    pub description: String,
    /// What is counted: `requests_per_minute`, `tokens_per_minute`, `spend_nano_usd`.
    pub metric: String,
    /// Which limit: `per_tenant`, `per_agent`, `route_per_tenant`, `route_per_agent`, or the
    /// budget's name.
    pub id: String,
    /// The limit itself, in the metric's unit.
    pub value: i64,
}

/// The stable reason of an error (`ErrorInfo.reason`).
pub fn reason(e: &Error) -> &'static str {
    match e {
        Error::Config(_) => "CONFIG_INVALID",
        Error::Manifest(_) => "MANIFEST_INVALID",
        Error::InvalidArgument(_) => "INVALID_ARGUMENT",
        Error::NotFound(_) => "NOT_FOUND",
        Error::AlreadyExists(_) => "ALREADY_EXISTS",
        Error::FailedPrecondition(_) => "FAILED_PRECONDITION",
        Error::PermissionDenied(_) => "PERMISSION_DENIED",
        Error::Unauthenticated(_) => "UNAUTHENTICATED",
        Error::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
        Error::Refused { refusal, .. } => refusal.reason(),
        Error::Unavailable { .. } => "DEPENDENCY_UNAVAILABLE",
        Error::DeadlineExceeded(_) => "DEADLINE_EXCEEDED",
        Error::Aborted(_) => "CONFLICT",
        Error::RedisOutOfMemory { .. } => "REDIS_OUT_OF_MEMORY",
        Error::Redis(_) if e.code() == tonic::Code::Unavailable => "DEPENDENCY_UNAVAILABLE",
        Error::Redis(_) | Error::Internal(_) => "INTERNAL",
    }
}

/// The details of `e`'s status: `ErrorInfo` first, then the ones its kind has.
pub fn details(e: &Error) -> Vec<ErrorDetail> {
    let mut metadata = HashMap::new();
    let mut out = Vec::new();
    match e {
        Error::Manifest(errors) => {
            out.push(bad_request(errors, &mut metadata).into());
        }
        Error::Unavailable { what, .. } => {
            metadata.insert("dependency".to_string(), what.clone());
        }
        Error::Redis(_) if e.code() == tonic::Code::Unavailable => {
            metadata.insert("dependency".to_string(), "redis".to_string());
        }
        Error::Refused {
            quota, retry_after, ..
        } => {
            if let Some(d) = retry_after {
                out.push(RetryInfo::new(Some(*d)).into());
                metadata.insert("retry_after_ms".to_string(), millis(*d).to_string());
            }
            if let Some(q) = quota {
                out.push(quota_failure(q).into());
            }
        }
        Error::Config(_)
        | Error::InvalidArgument(_)
        | Error::NotFound(_)
        | Error::AlreadyExists(_)
        | Error::FailedPrecondition(_)
        | Error::PermissionDenied(_)
        | Error::Unauthenticated(_)
        | Error::ResourceExhausted(_)
        | Error::DeadlineExceeded(_)
        | Error::Aborted(_)
        | Error::RedisOutOfMemory { .. }
        | Error::Redis(_)
        | Error::Internal(_) => {}
    }
    out.insert(0, ErrorInfo::new(reason(e), DOMAIN, metadata).into());
    out
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

/// One field violation per problem (the first [`MAX_FIELD_VIOLATIONS`]), in the order of the
/// message's lines; where each is goes into `metadata` under the violation's index:
/// `file_<i>`, `document_<i>` (1-based, in a file of several documents), `line_<i>` (when
/// known), `subject_<i>` (`Agent 'writer'`, once known).
fn bad_request(errors: &ValidationErrors, metadata: &mut HashMap<String, String>) -> BadRequest {
    metadata.insert("problems".to_string(), errors.0.len().to_string());
    let mut violations = Vec::new();
    let mut used = 0usize;
    for (i, p) in errors.0.iter().take(MAX_FIELD_VIOLATIONS).enumerate() {
        let (file, document) = split_source(&p.source);
        let file = crate::redact::preview(file, NAME_MAX);
        let field = crate::redact::preview(&p.field, NAME_MAX);
        let description = crate::redact::preview(&p.message, DESCRIPTION_MAX);
        // What this problem adds (its violation and its metadata, with their keys).
        let cost = file.len() + field.len() + description.len() + 40;
        if used + cost > VIOLATIONS_BUDGET {
            break;
        }
        used += cost;
        metadata.insert(format!("file_{i}"), file);
        if let Some(d) = document {
            metadata.insert(format!("document_{i}"), d.to_string());
        }
        if let Some(l) = p.line {
            metadata.insert(format!("line_{i}"), l.to_string());
        }
        if let Some(s) = &p.subject {
            metadata.insert(format!("subject_{i}"), crate::redact::quote(s));
        }
        let mut v = FieldViolation::new(field, description);
        v.reason = "MANIFEST_INVALID".to_string();
        violations.push(v);
    }
    BadRequest::new(violations)
}

/// `examples/agents.yaml#2` -> (`examples/agents.yaml`, Some(2)): the document number that
/// the manifest reader appends to a file of several documents.
fn split_source(source: &str) -> (&str, Option<u32>) {
    if let Some((file, n)) = source.rsplit_once('#')
        && let Ok(n) = n.parse::<u32>()
    {
        return (file, Some(n));
    }
    (source, None)
}

fn quota_failure(q: &Quota) -> QuotaFailure {
    let mut v = tonic_types::QuotaViolation::new(
        q.subject.clone(),
        crate::redact::preview(&q.description, DESCRIPTION_MAX),
    );
    v.api_service = DOMAIN.to_string();
    v.quota_metric = q.metric.clone();
    v.quota_id = q.id.clone();
    v.quota_value = q.value;
    QuotaFailure::new(vec![v])
}

#[cfg(test)]
mod tests;
