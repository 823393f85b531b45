/// Errors of the tool service. A tool that ran and failed is not an error here: it is a
/// `ToolResult` with `is_error` set, which the model reads. These are the cases where the
/// call could not be carried out at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tool '{tool}' is not defined for tenant '{tenant}'")]
    UnknownTool { tenant: String, tool: String },
    #[error("{0}")]
    InvalidArgument(String),
    /// The tool's definition cannot be run as it stands (a bad limit, an unsupported kind).
    #[error("tool '{tool}': {reason}")]
    BadTool { tool: String, reason: String },
    #[error(
        "image '{0}' does not exist on the Docker engine; build or pull it (see deploy/sandbox/build.sh)"
    )]
    ImageMissing(String),
    #[error("docker engine ({at}) is unreachable: {reason}")]
    DockerUnavailable { at: String, reason: String },
    /// The engine answered, but refused (an unknown runtime, a bad option).
    #[error("docker refused to {op}: {message}")]
    DockerRefused { op: String, message: String },
    /// The sandbox's OCI runtime is not registered with the engine: the call is refused, never
    /// run under another runtime.
    #[error(
        "the Docker engine ({at}) has no OCI runtime '{runtime}' (it has: {have}); sandboxes never fall back to another runtime: register '{runtime}' in the engine's `runtimes` setting (scripts/install-deps.sh does for runsc) or name another"
    )]
    RuntimeMissing {
        runtime: String,
        at: String,
        have: String,
    },
    /// A configuration the sandbox rules refuse; nothing was created. `reason` is the
    /// refusal as the sandbox rules word it (see `sandbox::Refused`, which makes this error).
    #[error("tool '{tool}': {reason}")]
    Refused { tool: String, reason: String },
    /// A `secret://` reference of the tool could not be resolved; `var` says where it is
    /// ("environment variable TOKEN", "secret file key", "header Authorization").
    #[error("tool '{tool}': {var}: {reason}")]
    Secret {
        tool: String,
        var: String,
        reason: String,
    },
    /// A call for a run that EndRun already ended.
    #[error("run '{0}' has ended; its sandboxes and workspace are gone")]
    RunEnded(String),
    /// EndRun came while this call was getting its sandbox.
    #[error("run '{0}' ended while the call was starting")]
    EndedWhileStarting(String),
    /// An MCP server could not be started, reached or understood.
    #[error("tool '{tool}': MCP server: {reason}")]
    Mcp { tool: String, reason: String },
    /// An MCP server the tool service does not know (`mcp.local`) or a tool it does not have.
    #[error("{0}")]
    McpUnknown(String),
    #[error("a call with idempotency key '{0}' is still running; retry later")]
    InProgress(String),
    /// The run's workspace filesystem could not be made, mounted or bound.
    #[error("{0}")]
    Workspace(String),
    /// A Tool's or Agent's workspace quota above this service's ceiling (lowered after the
    /// manifest was applied).
    #[error(
        "{what} asks for a workspace quota of {asked}, above this tools service's ceiling of {ceiling} (its workspace_quota_max option); ask for less or raise the ceiling"
    )]
    QuotaAboveCeiling {
        what: String,
        asked: String,
        ceiling: String,
    },
    #[error("{0}")]
    Core(#[from] bridle_core::Error),
}

impl Error {
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

/// The innermost error message ("Connection refused"), not "error trying to connect".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    let mut text = cur.to_string();
    while let Some(next) = cur.source() {
        cur = next;
        text = cur.to_string();
    }
    text
}

impl From<Error> for bridle_core::Error {
    fn from(e: Error) -> Self {
        use bridle_core::Error as C;
        match e {
            Error::UnknownTool { .. } => C::NotFound(e.to_string()),
            Error::InvalidArgument(m) => C::InvalidArgument(m),
            Error::BadTool { .. }
            | Error::ImageMissing(_)
            | Error::DockerRefused { .. }
            | Error::RuntimeMissing { .. }
            | Error::Refused { .. } => C::FailedPrecondition(e.to_string()),
            Error::Secret { .. }
            | Error::RunEnded(_)
            | Error::EndedWhileStarting(_)
            | Error::McpUnknown(_)
            | Error::Mcp { .. }
            | Error::Workspace(_)
            | Error::QuotaAboveCeiling { .. } => C::FailedPrecondition(e.to_string()),
            Error::DockerUnavailable { at, reason } => {
                C::unavailable(format!("docker engine ({at})"), reason)
            }
            Error::InProgress(_) => C::Aborted(e.to_string()),
            Error::Core(c) => c,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Core(c) => c.into(),
            // Our own messages are written for the caller; keep them word for word and take
            // only the code from the shared mapping.
            other => {
                let message = other.to_string();
                bridle_core::Error::from(other).into_status_with_message(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let s: tonic::Status = Error::UnknownTool {
            tenant: "acme".into(),
            tool: "py".into(),
        }
        .into();
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.message(), "tool 'py' is not defined for tenant 'acme'");

        let s: tonic::Status = Error::ImageMissing("x:1".into()).into();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert!(
            s.message()
                .starts_with("image 'x:1' does not exist on the Docker engine")
        );

        let s: tonic::Status = Error::DockerUnavailable {
            at: "unix:///var/run/docker.sock".into(),
            reason: "connection refused".into(),
        }
        .into();
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(
            s.message(),
            "docker engine (unix:///var/run/docker.sock) is unreachable: connection refused"
        );

        let s: tonic::Status = Error::InProgress("k".into()).into();
        assert_eq!(s.code(), tonic::Code::Aborted);

        let s: tonic::Status = Error::Core(bridle_core::Error::internal("detail")).into();
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(!s.message().contains("detail"));
    }
}
