//! The shared error type and its one exhaustive mapping to gRPC status codes.
//!
//! Every service crate has its own `Error` enum; the variants that are about shared concerns
//! (config, Redis, manifests, a downstream call) wrap this one. The mapping below has no
//! wildcard arm on purpose: a new variant must decide its code.

use crate::error_details::{Quota, Refusal};
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
    /// A limit refused the call for a while: a rate limit or a spend budget
    /// (RESOURCE_EXHAUSTED), or every circuit breaker of a model route open (UNAVAILABLE). Its
    /// status carries `RetryInfo` when `retry_after` is known and `QuotaFailure` when `quota`
    /// is (see [`crate::error_details`]).
    #[error("{message}")]
    Refused {
        refusal: Refusal,
        message: String,
        quota: Option<Box<Quota>>,
        retry_after: Option<std::time::Duration>,
    },
    /// A dependency (Redis, Vault, Docker, another service) could not be reached.
    #[error("{what} is unavailable: {reason}")]
    Unavailable { what: String, reason: String },
    /// A deadline passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Someone else changed it first (version fence); retry from fresh state.
    #[error("{0}")]
    Aborted(String),
    /// Redis refused a write because it reached its `maxmemory` (with the `noeviction`
    /// policy, or nothing left to evict): `doing` says what was not done. Nothing was written
    /// (see [`redis_out_of_memory`]), so the same call succeeds once memory is freed.
    #[error("Redis is out of memory (maxmemory reached): {doing}; retry when memory is freed")]
    RedisOutOfMemory { doing: String },
    /// Redis answered with an error.
    #[error("redis: {0}")]
    Redis(redis::RedisError),
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

    /// Says what was being done, for a refusal that the caller reads: "the run was not
    /// created". Only a Redis out-of-memory refusal takes it; any other error is unchanged.
    pub fn doing(self, what: impl Into<String>) -> Self {
        match self {
            Error::RedisOutOfMemory { .. } => Error::RedisOutOfMemory { doing: what.into() },
            other => other,
        }
    }

    /// Redis refused a write for lack of memory: waiting until memory is freed is the cure.
    pub fn is_redis_out_of_memory(&self) -> bool {
        matches!(self, Error::RedisOutOfMemory { .. })
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
            Error::Refused { refusal, .. } => refusal.code(),
            Error::Unavailable { .. } => tonic::Code::Unavailable,
            Error::DeadlineExceeded(_) => tonic::Code::DeadlineExceeded,
            Error::Aborted(_) => tonic::Code::Aborted,
            Error::RedisOutOfMemory { .. } => tonic::Code::ResourceExhausted,
            Error::Redis(e) => redis_code(e),
            Error::Internal(_) => tonic::Code::Internal,
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        if redis_out_of_memory(&e) {
            Error::RedisOutOfMemory {
                doing: "it refused a write".into(),
            }
        } else {
            Error::Redis(e)
        }
    }
}

/// What Redis says when a command that may grow memory meets `maxmemory`.
const OOM_REPLY: &str = "OOM command not allowed";

/// True when Redis refused a command because it reached `maxmemory`, in every form the reply
/// takes: a plain command (`OOM command not allowed when used memory > 'maxmemory'.`); a Lua
/// script whose `redis.call` was refused (Redis 7 keeps the `OOM` code and appends the script;
/// older servers wrap it in `ERR Error running script ... OOM command not allowed ...`); and a
/// pipeline or MULTI whose commands were (`EXECABORT`, the refused command's error inside).
///
/// Nothing half-done hides behind it: Redis refuses a script at its first write that may grow
/// memory only while the script has written nothing yet (it cannot stop one halfway), and a
/// MULTI with a refused command runs none of them.
pub fn redis_out_of_memory(e: &redis::RedisError) -> bool {
    // A plain reply comes out as one server error, a pipeline's or MULTI's as several.
    e.clone().into_server_errors().is_some_and(|errs| {
        errs.iter()
            .any(|(_, s)| s.code() == "OOM" || s.details().is_some_and(|d| d.contains(OOM_REPLY)))
    })
}

/// The same for an error's text, as a Lua script that caught a refusal with `redis.pcall`
/// hands it back (`OOM command not allowed when used memory > 'maxmemory'...`).
pub fn redis_out_of_memory_text(reply: &str) -> bool {
    reply.contains(OOM_REPLY)
}

/// Connection-level Redis failures are UNAVAILABLE (retry elsewhere or later); anything
/// Redis itself rejected is INTERNAL (our command was wrong), except a refusal for lack of
/// memory, which `From<RedisError>` makes `RedisOutOfMemory` (RESOURCE_EXHAUSTED).
fn redis_code(e: &redis::RedisError) -> tonic::Code {
    use redis::{ErrorKind, ServerErrorKind as S};
    // A server that cannot take commands for now: LOADING its data after a restart, a replica
    // still READONLY or a MASTERDOWN during a failover, a cluster slot TRYAGAIN or CLUSTERDOWN.
    // Seen by the cluster test: a StartRun right after Redis restarted answered INTERNAL.
    let for_now = matches!(
        e.kind(),
        ErrorKind::Server(
            S::BusyLoading | S::TryAgain | S::ClusterDown | S::MasterDown | S::ReadOnly
        )
    );
    if for_now
        || e.is_io_error()
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
        let message = match &e {
            // Internal details stay in the log; the caller gets an error it can report.
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error (see the service log)".to_string()
            }
            Error::Redis(err) if e.code() == tonic::Code::Internal => {
                tracing::error!(error = %err, "redis command failed");
                "internal error talking to redis (see the service log)".to_string()
            }
            other => other.to_string(),
        };
        e.into_status_with_message(message)
    }
}

impl Error {
    /// The status of this error with `message` in place of its own text (a service whose own
    /// error words its message for the caller): code, `google.rpc` details and metadata as
    /// `From<Error> for tonic::Status` gives them.
    pub fn into_status_with_message(self, message: impl Into<String>) -> tonic::Status {
        use tonic_types::StatusExt;
        let mut status = tonic::Status::with_error_details_vec(
            self.code(),
            message,
            crate::error_details::details(&self),
        );
        if self.is_redis_out_of_memory() {
            status.metadata_mut().insert(
                CAUSE_METADATA,
                tonic::metadata::MetadataValue::from_static(CAUSE_REDIS_OUT_OF_MEMORY),
            );
        }
        status
    }
}

/// Status metadata saying why a call failed, where the caller acts on the cause and not only
/// the code: [`CAUSE_REDIS_OUT_OF_MEMORY`] on a RESOURCE_EXHAUSTED that a full Redis caused
/// (the orchestrator then holds the step and waits instead of counting a failed delivery).
pub const CAUSE_METADATA: &str = "bridle-cause";
pub const CAUSE_REDIS_OUT_OF_MEMORY: &str = "redis-out-of-memory";

/// True when another Bridle service answered that its Redis is out of memory.
pub fn status_is_redis_out_of_memory(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::ResourceExhausted
        && s.metadata()
            .get(CAUSE_METADATA)
            .is_some_and(|v| v == CAUSE_REDIS_OUT_OF_MEMORY)
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
        // What tonic's client reports when the call broke below gRPC ("transport error": the
        // replica died mid-call, its connection reset). Seen by the cluster test: a StartRun
        // whose ListTools went to a tools replica being killed answered INTERNAL.
        tonic::Code::Unknown => Error::unavailable(what, format!("unknown: {msg}")),
        tonic::Code::Ok
        | tonic::Code::Internal
        | tonic::Code::Unimplemented
        | tonic::Code::DataLoss => Error::Internal(format!("{what}: {}: {msg}", s.code())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_broke_below_grpc_is_unavailable() {
        let e = from_status(
            "tools service",
            tonic::Status::new(tonic::Code::Unknown, "transport error"),
        );
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("tools service"), "{}", s.message());
    }

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

    fn oom_reply(code: &str, detail: &str) -> redis::RedisError {
        redis::make_extension_error(code.into(), Some(detail.into()))
    }

    #[test]
    fn redis_out_of_memory_is_resource_exhausted_naming_redis() {
        for e in [
            // A plain command.
            oom_reply("OOM", "command not allowed when used memory > 'maxmemory'."),
            // A script's redis.call, as Redis 7 reports it.
            oom_reply(
                "OOM",
                "command not allowed when used memory > 'maxmemory'. script: 5849fad0707709da5733f013e31b917a7e7d3e87, on @user_script:1.",
            ),
            // The same before Redis 7.
            oom_reply(
                "ERR",
                "Error running script (call to f_5849fad0): @user_script:1: -OOM command not allowed when used memory > 'maxmemory'.",
            ),
        ] {
            assert!(redis_out_of_memory(&e), "{e}");
            let s = tonic::Status::from(Error::from(e).doing("the run was not created"));
            assert_eq!(s.code(), tonic::Code::ResourceExhausted);
            assert_eq!(
                s.message(),
                "Redis is out of memory (maxmemory reached): the run was not created; retry when memory is freed"
            );
            assert!(status_is_redis_out_of_memory(&s));
        }
        // As a script that caught the refusal with redis.pcall hands it back.
        assert!(redis_out_of_memory_text(
            "OOM command not allowed when used memory > 'maxmemory'."
        ));
        assert!(!redis_out_of_memory_text("ERR unknown command"));
        // Without a context it still names Redis and the cure.
        let s = tonic::Status::from(Error::from(oom_reply("OOM", "command not allowed")));
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "Redis is out of memory (maxmemory reached): it refused a write; retry when memory is freed"
        );
    }

    #[test]
    fn a_redis_that_cannot_take_commands_for_now_is_unavailable() {
        for reply in [
            "-LOADING Redis is loading the dataset in memory\r\n",
            "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
            "-READONLY You can't write against a read only replica.\r\n",
            "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
            "-CLUSTERDOWN The cluster is down\r\n",
        ] {
            let v = redis::parse_redis_value(reply.as_bytes()).unwrap();
            let redis::Value::ServerError(e) = v else {
                panic!("{reply}: {v:?}")
            };
            let s = tonic::Status::from(Error::from(redis::RedisError::from(e)));
            assert_eq!(s.code(), tonic::Code::Unavailable, "{reply}");
        }
    }

    #[test]
    fn other_redis_refusals_stay_internal_and_unmarked() {
        let e = oom_reply(
            "WRONGTYPE",
            "Operation against a key holding the wrong kind of value",
        );
        assert!(!redis_out_of_memory(&e));
        let err = Error::from(e).doing("ignored");
        assert!(!err.is_redis_out_of_memory());
        let s = tonic::Status::from(err);
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(!status_is_redis_out_of_memory(&s));
        // A rate limit is RESOURCE_EXHAUSTED too, but not a full Redis.
        let s = tonic::Status::from(Error::ResourceExhausted("rate limit".into()));
        assert!(!status_is_redis_out_of_memory(&s));
    }
}
