//! The shared error type and its one exhaustive mapping to gRPC status codes.
//!
//! Every service crate has its own `Error` enum; the variants that are about shared concerns
//! (config, Redis, manifests, a downstream call) wrap this one. The mapping below has no
//! wildcard arm on purpose: a new variant must decide its code.

use crate::manifest::ValidationErrors;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Options were invalid; the process exits before binding anything.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// One or more manifests failed validation; each error names file, field and reason.
    #[error("{0}")]
    Manifest(#[from] ValidationErrors),
    /// The request was malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A named thing does not exist; the message names it.
    #[error("{0}")]
    NotFound(String),
    /// The thing exists already and cannot be created again.
    #[error("{0}")]
    AlreadyExists(String),
    /// The operation is not allowed in the current state (the message says which state).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller did not say who it is.
    #[error("{0}")]
    Unauthenticated(String),
    /// A limit was hit; retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A dependency (Redis, Vault, Docker, another service) could not be reached.
    #[error("{what} is unavailable: {reason}")]
    Unavailable { what: String, reason: String },
    /// A deadline passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Someone else changed it first (version fence); retry from fresh state.
    #[error("{0}")]
    Aborted(String),
    /// Redis answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A bug or an invariant broken: logged with detail, reported without it.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn unavailable(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Unavailable {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub fn internal(what: impl std::fmt::Display) -> Self {
        Error::Internal(what.to_string())
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Config(_) => tonic::Code::FailedPrecondition,
            Error::Manifest(_) => tonic::Code::InvalidArgument,
            Error::InvalidArgument(_) => tonic::Code::InvalidArgument,
            Error::NotFound(_) => tonic::Code::NotFound,
            Error::AlreadyExists(_) => tonic::Code::AlreadyExists,
            Error::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Error::PermissionDenied(_) => tonic::Code::PermissionDenied,
            Error::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Error::ResourceExhausted(_) => tonic::Code::ResourceExhausted,
            Error::Unavailable { .. } => tonic::Code::Unavailable,
            Error::DeadlineExceeded(_) => tonic::Code::DeadlineExceeded,
            Error::Aborted(_) => tonic::Code::Aborted,
            Error::Redis(e) => redis_code(e),
            Error::Internal(_) => tonic::Code::Internal,
        }
    }
}

/// Connection-level Redis failures are UNAVAILABLE (retry elsewhere or later); anything
/// Redis itself rejected is INTERNAL (our command was wrong).
fn redis_code(e: &redis::RedisError) -> tonic::Code {
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_cluster_error()
    {
        tonic::Code::Unavailable
    } else {
        tonic::Code::Internal
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let code = e.code();
        let message = match &e {
            // Internal details stay in the log; the caller gets an error it can report.
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error (see the service log)".to_string()
            }
            Error::Redis(err) if code == tonic::Code::Internal => {
                tracing::error!(error = %err, "redis command failed");
                "internal error talking to redis (see the service log)".to_string()
            }
            other => other.to_string(),
        };
        tonic::Status::new(code, message)
    }
}

/// Maps a status received from another Bridle service back into an error, keeping its code.
pub fn from_status(what: &str, s: tonic::Status) -> Error {
    let msg = s.message().to_string();
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Error::InvalidArgument(msg),
        tonic::Code::NotFound => Error::NotFound(msg),
        tonic::Code::AlreadyExists => Error::AlreadyExists(msg),
        tonic::Code::FailedPrecondition => Error::FailedPrecondition(msg),
        tonic::Code::PermissionDenied => Error::PermissionDenied(msg),
        tonic::Code::Unauthenticated => Error::Unauthenticated(msg),
        tonic::Code::ResourceExhausted => Error::ResourceExhausted(msg),
        tonic::Code::Unavailable => Error::unavailable(what, msg),
        tonic::Code::DeadlineExceeded => Error::DeadlineExceeded(format!("{what}: {msg}")),
        tonic::Code::Aborted => Error::Aborted(msg),
        tonic::Code::Cancelled => Error::unavailable(what, format!("cancelled: {msg}")),
        tonic::Code::Ok
        | tonic::Code::Unknown
        | tonic::Code::Internal
        | tonic::Code::Unimplemented
        | tonic::Code::DataLoss => Error::Internal(format!("{what}: {}: {msg}", s.code())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_is_not_sent_to_callers() {
        let s: tonic::Status = Error::internal("secret detail at line 3").into();
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(!s.message().contains("secret detail"));
    }

    #[test]
    fn unavailable_names_the_dependency() {
        let s: tonic::Status =
            Error::unavailable("redis at 127.0.0.1:1", "connection refused").into();
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(
            s.message(),
            "redis at 127.0.0.1:1 is unavailable: connection refused"
        );
    }

    #[test]
    fn status_round_trips_its_code() {
        for code in [
            tonic::Code::NotFound,
            tonic::Code::InvalidArgument,
            tonic::Code::FailedPrecondition,
            tonic::Code::PermissionDenied,
            tonic::Code::ResourceExhausted,
            tonic::Code::Unavailable,
            tonic::Code::Aborted,
        ] {
            let e = from_status("x", tonic::Status::new(code, "m"));
            assert_eq!(tonic::Status::from(e).code(), code);
        }
    }
}
