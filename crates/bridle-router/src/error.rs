//! Errors of the router and their one mapping to [`bridle_core::Error`] (and so to gRPC codes).
//! Messages name the route, the tenant and the target; they never hold a key or a header value.

use bridle_core::error_details::{Quota, Refusal};
use bridle_core::redact::preview;

/// Longest error message the router sends, whatever it quotes: it fits in a standard gRPC
/// client's 16 KiB metadata limit, so the caller sees the real error and not
/// RESOURCE_EXHAUSTED.
pub const MESSAGE_MAX: usize = 4096;

/// `s`, from a request, bounded for an error message (the one bound every service uses).
pub fn quote(s: &str) -> String {
    bridle_core::redact::quote(s)
}

/// `s` cut to [`MESSAGE_MAX`] characters.
pub fn bounded(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().count() <= MESSAGE_MAX {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(preview(s, MESSAGE_MAX))
    }
}

/// `status` with its message cut to [`MESSAGE_MAX`] characters (code and metadata kept): every
/// status the router answers with goes through this.
pub fn bounded_status(status: tonic::Status) -> tonic::Status {
    match bounded(status.message()) {
        std::borrow::Cow::Borrowed(_) => status,
        std::borrow::Cow::Owned(m) => tonic::Status::with_details_and_metadata(
            status.code(),
            m,
            status.details().to_vec().into(),
            status.metadata().clone(),
        ),
    }
}

/// The gRPC code a failed target reports, when it is the last failure of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCode {
    /// 5xx, connection failures, broken or malformed answers, the broker being down.
    Unavailable,
    /// 429 after the retries.
    ResourceExhausted,
    /// The provider rejected the request's content (400, 413, 422).
    InvalidArgument,
    /// The target cannot work as configured: the key was refused, the model does not exist,
    /// the secret is unknown, the script has ended.
    FailedPrecondition,
    /// The try (or the whole call) ran out of time.
    DeadlineExceeded,
    /// The router cannot work as deployed (the secrets broker refuses its identity) or a
    /// service it depends on is broken: not the caller's fault, and not worth retrying. The
    /// detail is logged; the caller gets INTERNAL.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "model route '{}' is not defined for tenant '{}'",
        quote(route),
        quote(tenant)
    )]
    RouteNotFound { route: String, tenant: String },
    /// The request itself is malformed (a message without a role, a tool schema that is not
    /// JSON); no provider was called.
    #[error("{0}")]
    InvalidRequest(String),
    /// Every target failed (or the deadline passed); the message lists each target's failure.
    #[error("{message}")]
    TargetsFailed {
        route: String,
        code: FailureCode,
        message: String,
        /// When a target may answer again, where that is known: every target's circuit
        /// breaker is open, and the first closes for a probe after this.
        retry_after: Option<std::time::Duration>,
    },
    /// A stream failed after deltas were sent, so it could not fail over.
    #[error("route '{route}' target '{target}' failed mid-stream: {message}")]
    StreamBroken {
        route: String,
        target: String,
        code: FailureCode,
        message: String,
    },
    /// A rate limit or a spend budget refused the call; it may be made again after
    /// `retry_after`. `quota` names the limit for a program (google.rpc.QuotaFailure).
    #[error("{message}; retry after {}", bridle_core::timeutil::short_duration(*retry_after))]
    RateLimited {
        refusal: Refusal,
        message: String,
        quota: Box<Quota>,
        retry_after: std::time::Duration,
    },
    #[error("{0}")]
    Core(#[from] bridle_core::Error),
}

impl Error {
    /// When the caller may try again, for errors that say so.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => Some(*retry_after),
            Error::RouteNotFound { .. }
            | Error::InvalidRequest(_)
            | Error::TargetsFailed { .. }
            | Error::StreamBroken { .. }
            | Error::Core(_) => None,
        }
    }
}

fn core(code: FailureCode, what: String, message: String) -> bridle_core::Error {
    match code {
        FailureCode::Unavailable => bridle_core::Error::Unavailable {
            what,
            reason: message,
        },
        FailureCode::ResourceExhausted => bridle_core::Error::ResourceExhausted(message),
        FailureCode::InvalidArgument => bridle_core::Error::InvalidArgument(message),
        FailureCode::FailedPrecondition => bridle_core::Error::FailedPrecondition(message),
        FailureCode::DeadlineExceeded => bridle_core::Error::DeadlineExceeded(message),
        FailureCode::Internal => bridle_core::Error::Internal(format!("{what}: {message}")),
    }
}

impl From<Error> for bridle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::RouteNotFound { .. } => bridle_core::Error::NotFound(e.to_string()),
            Error::InvalidRequest(m) => bridle_core::Error::InvalidArgument(m),
            Error::TargetsFailed {
                route,
                code: FailureCode::Unavailable,
                message,
                retry_after: Some(retry_after),
            } => {
                // Text as for any UNAVAILABLE route; the refusal adds when to retry.
                let text = core(
                    FailureCode::Unavailable,
                    format!("model route '{route}'"),
                    message,
                )
                .to_string();
                bridle_core::Error::Refused {
                    refusal: Refusal::CircuitOpen,
                    message: text,
                    quota: None,
                    retry_after: Some(retry_after),
                }
            }
            Error::TargetsFailed {
                route,
                code,
                message,
                retry_after: _,
            } => core(code, format!("model route '{route}'"), message),
            Error::StreamBroken {
                ref route, code, ..
            } => {
                let what = format!("model route '{route}'");
                core(code, what, e.to_string())
            }
            Error::RateLimited {
                refusal,
                ref quota,
                retry_after,
                ..
            } => bridle_core::Error::Refused {
                refusal,
                message: e.to_string(),
                quota: Some(quota.clone()),
                retry_after: Some(retry_after),
            },
            Error::Core(c) => c,
        }
    }
}

/// Metadata keys of a RESOURCE_EXHAUSTED status that says when to try again: whole seconds
/// (rounded up, as HTTP's `retry-after`), and milliseconds.
pub const RETRY_AFTER: &str = "retry-after";
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let retry = e.retry_after();
        let mut status = bounded_status(bridle_core::Error::from(e).into());
        if let Some(d) = retry {
            let ms = d.as_millis();
            let secs = ms.div_ceil(1000);
            let md = status.metadata_mut();
            if let Ok(v) = secs.to_string().parse() {
                md.insert(RETRY_AFTER, v);
            }
            if let Ok(v) = ms.to_string().parse() {
                md.insert(RETRY_AFTER_MS, v);
            }
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_carry_retry_after() {
        let s: tonic::Status = Error::RateLimited {
            refusal: Refusal::RateLimited,
            message: "rate limit: tenant 'a' may use 2 requests per minute".into(),
            quota: Box::default(),
            retry_after: std::time::Duration::from_millis(29_001),
        }
        .into();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "rate limit: tenant 'a' may use 2 requests per minute; retry after 29.0s"
        );
        assert_eq!(s.metadata().get(RETRY_AFTER).unwrap(), "30");
        assert_eq!(s.metadata().get(RETRY_AFTER_MS).unwrap(), "29001");
    }

    /// The same error at the gateway (HTTP 429) is tested with the gateway's mapping, in
    /// `gateway`, which sits above this module.
    #[test]
    fn a_full_redis_is_resource_exhausted_over_grpc() {
        let s = tonic::Status::from(Error::Core(bridle_core::Error::RedisOutOfMemory {
            doing: "the model was not called".into(),
        }));
        assert_eq!(
            (s.code(), s.message()),
            (
                tonic::Code::ResourceExhausted,
                "Redis is out of memory (maxmemory reached): the model was not called; retry when memory is freed"
            )
        );
    }

    #[test]
    fn codes_map_to_grpc() {
        let s: tonic::Status = Error::RouteNotFound {
            route: "x".into(),
            tenant: "y".into(),
        }
        .into();
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.message(), "model route 'x' is not defined for tenant 'y'");
        for (code, grpc) in [
            (FailureCode::Unavailable, tonic::Code::Unavailable),
            (
                FailureCode::ResourceExhausted,
                tonic::Code::ResourceExhausted,
            ),
            (FailureCode::InvalidArgument, tonic::Code::InvalidArgument),
            (
                FailureCode::FailedPrecondition,
                tonic::Code::FailedPrecondition,
            ),
            (FailureCode::DeadlineExceeded, tonic::Code::DeadlineExceeded),
            (FailureCode::Internal, tonic::Code::Internal),
        ] {
            let s: tonic::Status = Error::TargetsFailed {
                route: "r".into(),
                code,
                message: "m".into(),
                retry_after: None,
            }
            .into();
            assert_eq!(s.code(), grpc);
        }
    }
}
