use bridle_core::ids::RunId;

/// Errors of the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("agent '{agent}' is not defined for tenant '{tenant}'")]
    UnknownAgent { tenant: String, agent: String },
    #[error("run '{0}' does not exist")]
    UnknownRun(RunId),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another writer advanced the run first; reload and try again.
    #[error("run '{0}' was changed by another worker")]
    Fenced(RunId),
    #[error("run state of '{0}' is unreadable: {1}")]
    Corrupt(String, String),
    #[error("{0}")]
    Core(#[from] bridle_core::Error),
}

impl Error {
    /// Redis refused a write for lack of memory: the step waits for memory rather than fail.
    pub fn is_redis_out_of_memory(&self) -> bool {
        matches!(self, Error::Core(c) if c.is_redis_out_of_memory())
    }

    /// Says what was not done, when Redis refused it for lack of memory (see
    /// `bridle_core::Error::doing`).
    pub fn doing(self, what: impl Into<String>) -> Self {
        match self {
            Error::Core(c) => Error::Core(c.doing(what)),
            other => other,
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Core(e.into())
    }
}

impl From<Error> for bridle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::UnknownAgent { .. } | Error::UnknownRun(_) => {
                bridle_core::Error::NotFound(e.to_string())
            }
            Error::InvalidArgument(m) => bridle_core::Error::InvalidArgument(m),
            Error::FailedPrecondition(m) => bridle_core::Error::FailedPrecondition(m),
            Error::Fenced(_) => bridle_core::Error::Aborted(e.to_string()),
            Error::Corrupt(..) => bridle_core::Error::Internal(e.to_string()),
            Error::Core(c) => c,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        bridle_core::Error::from(e).into()
    }
}
