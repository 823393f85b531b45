/// Errors of the secrets broker. Messages name the secret and the scope, never a Vault path or
/// a value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("secret '{0}' is not known to the broker")]
    NotFound(String),
    #[error("secret '{0}' is bound, but Vault holds no value for it")]
    NoValue(String),
    #[error("'{0}' is not a secret reference (expected secret://<name>): {1}")]
    BadReference(String, String),
    #[error("secret '{0}' has no field '{1}'")]
    MissingField(String, String),
    #[error("secret '{name}' is not granted to {scope}")]
    NotGranted { name: String, scope: String },
    /// The caller is not the service that may resolve for this scope (message says which).
    #[error("{0}")]
    WrongCaller(String),
    #[error(
        "secret '{0}' comes from a dynamic engine (a lease per run) and can only be resolved within a run (scope.run_id)"
    )]
    NeedsRun(String),
    #[error(
        "secret '{0}' may be used for a limited time per run (spec.maxUseTime) and can only be resolved within a run (scope.run_id)"
    )]
    UseTimeNeedsRun(String),
    #[error(
        "secret '{name}' may be used for {max} by a run (spec.maxUseTime), and this run first used it {used} ago"
    )]
    UseTimeOver {
        name: String,
        max: String,
        used: String,
    },
    #[error("vault refused the broker access to secret '{0}'; check the broker's Vault policy")]
    VaultDenied(String),
    #[error("vault rejected the read of secret '{name}' (status {status}); check its binding")]
    VaultRejected { name: String, status: u16 },
    #[error("vault at {addr} is unavailable: {reason}")]
    VaultUnavailable { addr: String, reason: String },
    #[error("vault refused the broker's credentials ({0}); check its token or role")]
    VaultLogin(String),
    /// The broker's Vault policy does not cover the OAuth grants' folder (message says which).
    #[error("{0}")]
    GrantsDenied(String),
    #[error("{0}")]
    Core(#[from] bridle_core::Error),
}

impl From<Error> for bridle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(_) | Error::NoValue(_) => bridle_core::Error::NotFound(e.to_string()),
            Error::BadReference(..) => bridle_core::Error::InvalidArgument(e.to_string()),
            Error::MissingField(..)
            | Error::NeedsRun(_)
            | Error::UseTimeNeedsRun(_)
            | Error::VaultDenied(_)
            | Error::GrantsDenied(_)
            | Error::VaultRejected { .. } => bridle_core::Error::FailedPrecondition(e.to_string()),
            Error::NotGranted { .. } | Error::WrongCaller(_) | Error::UseTimeOver { .. } => {
                bridle_core::Error::PermissionDenied(e.to_string())
            }
            Error::VaultUnavailable { addr, reason } => {
                bridle_core::Error::unavailable(format!("vault at {addr}"), reason)
            }
            Error::VaultLogin(_) => bridle_core::Error::Unavailable {
                what: "vault".into(),
                reason: e.to_string(),
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
