/// `input`, cut to `bridle_core::redact::QUOTE_CHARS` characters (with an ellipsis and its
/// length) for an error message: errors travel in gRPC metadata (16 KiB in most clients) and
/// HTML pages, and a name or id longer than that is wrong anyway.
pub(crate) fn quote(input: &str) -> String {
    bridle_core::redact::quote(input)
}

/// Errors of the approvals service. Messages name the approval, run or call they are about and
/// say what to do; they never carry tool arguments (which may hold sensitive data).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    /// Also what an approval dropped at the end of its retention answers: the same words for
    /// one that never existed and one of another tenant, so nobody learns which.
    #[error(
        "approval {0} not found (there is no such approval, or it was dropped \
         approval_retention after it was decided or expired)"
    )]
    NotFound(String),
    /// The approval cannot move: it is decided, expired, or bound to other arguments.
    #[error("{0}")]
    Refused(String),
    /// Separation of duties refused the decider (the message says which rule).
    #[error("{0}")]
    Duty(String),
    /// The audit record could not be written, so nothing was applied (fail closed).
    #[error("{0}; nothing was applied")]
    AuditUnavailable(String),
    /// The policy engine could not decide; the call must not run.
    #[error("policy engine: {0}")]
    Policy(String),
    #[error("{0}")]
    Core(#[from] bridle_core::Error),
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Core(e.into())
    }
}

impl From<Error> for bridle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(m) => bridle_core::Error::InvalidArgument(m),
            Error::NotFound(_) => bridle_core::Error::NotFound(e.to_string()),
            Error::Refused(m) => bridle_core::Error::FailedPrecondition(m),
            Error::Duty(m) => bridle_core::Error::PermissionDenied(m),
            Error::AuditUnavailable(reason) => bridle_core::Error::Unavailable {
                what: "the audit trail".into(),
                reason: format!("{reason}; nothing was applied"),
            },
            Error::Policy(m) => bridle_core::Error::Unavailable {
                what: "the policy engine".into(),
                reason: m,
            },
            Error::Core(c) => c,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        bridle_core::Error::from(e).into()
    }
}
