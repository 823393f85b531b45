//! How the broker gets its Vault token: given (token), or by logging in (AppRole, Kubernetes).
//! Secret ids and ServiceAccount JWTs are read from their files at every login, so rotating
//! them needs no restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretString};
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};

use super::{Session, VaultError, classify};
use crate::options::VaultAuth;
use crate::{Error, Options};

pub enum SecretSource {
    Inline(SecretString),
    File(PathBuf),
}

impl SecretSource {
    async fn read(&self, what: &str) -> Result<SecretString, VaultError> {
        match self {
            SecretSource::Inline(s) => Ok(s.clone()),
            SecretSource::File(p) => tokio::fs::read_to_string(p)
                .await
                .map(|s| SecretString::from(s.trim().to_string()))
                .map_err(|e| VaultError::Login(format!("cannot read {what} {}: {e}", p.display()))),
        }
    }
}

pub enum Login {
    Token(SecretString),
    AppRole {
        mount: String,
        role_id: String,
        secret_id: SecretSource,
    },
    Kubernetes {
        mount: String,
        role: String,
        jwt_file: PathBuf,
    },
}

impl Login {
    pub fn from_options(o: &Options) -> Result<Self, Error> {
        let missing =
            |what: &str| Error::Core(bridle_core::Error::Config(format!("{what} is not set")));
        Ok(match o.vault_auth {
            VaultAuth::Token => Login::Token(o.token().ok_or_else(|| missing("vault_token"))?),
            VaultAuth::Approle => Login::AppRole {
                mount: o.vault_approle_mount.clone(),
                role_id: o.vault_approle_role_id.clone(),
                secret_id: match (&o.vault_approle_secret_id, &o.vault_approle_secret_id_file) {
                    (Some(s), _) => SecretSource::Inline(s.clone()),
                    (None, Some(f)) => SecretSource::File(f.clone()),
                    (None, None) => return Err(missing("vault_approle_secret_id")),
                },
            },
            VaultAuth::Kubernetes => Login::Kubernetes {
                mount: o.vault_kubernetes_mount.clone(),
                role: o.vault_kubernetes_role.clone(),
                jwt_file: o.vault_kubernetes_token_file.clone(),
            },
        })
    }

    pub fn method(&self) -> &'static str {
        match self {
            Login::Token(_) => VaultAuth::Token.as_str(),
            Login::AppRole { .. } => VaultAuth::Approle.as_str(),
            Login::Kubernetes { .. } => VaultAuth::Kubernetes.as_str(),
        }
    }

    /// For messages: which credentials, never their secret part.
    pub fn describe(&self) -> &'static str {
        match self {
            Login::Token(_) => "the broker's token",
            Login::AppRole { .. } => "AppRole login",
            Login::Kubernetes { .. } => "Kubernetes login",
        }
    }

    /// Only methods that log in can get a new token; a given token can only be renewed.
    pub fn can_relogin(&self) -> bool {
        !matches!(self, Login::Token(_))
    }

    /// Logs in (or checks the given token) and returns the session.
    pub(super) async fn login(
        &self,
        addr: &str,
        timeout: Duration,
        generation: u64,
    ) -> Result<Session, VaultError> {
        let token = match self {
            Login::Token(t) => t.clone(),
            _ => SecretString::from(String::new()),
        };
        let settings = VaultClientSettingsBuilder::default()
            .address(addr)
            .token(token.expose_secret())
            .timeout(Some(timeout))
            .build()
            .map_err(|e| VaultError::Login(format!("vault settings: {e}")))?;
        // vaultrs builds its own reqwest client, which has no crypto provider of its own.
        bridle_core::config::install_crypto_provider();
        let mut client = VaultClient::new(settings)
            .map_err(|e| VaultError::Login(format!("vault client: {e}")))?;
        fn refused(what: &'static str) -> impl Fn(vaultrs::error::ClientError) -> VaultError {
            move |e| match classify(e) {
                VaultError::Denied | VaultError::Rejected(_) | VaultError::NotFound => {
                    VaultError::Login(format!("{what} was refused"))
                }
                other => other,
            }
        }
        let at = Instant::now();
        let (ttl, renewable) = match self {
            Login::Token(_) => {
                // lookup-self proves both reachability and a valid token.
                let me = vaultrs::token::lookup_self(&client)
                    .await
                    .map_err(refused("the broker's token"))?;
                (me.ttl, me.renewable.unwrap_or(false))
            }
            Login::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                let sid = secret_id.read("the AppRole secret id file").await?;
                let auth =
                    vaultrs::auth::approle::login(&client, mount, role_id, sid.expose_secret())
                        .await
                        .map_err(refused("AppRole login"))?;
                client.set_token(&auth.client_token);
                (auth.lease_duration, auth.renewable)
            }
            Login::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                let jwt = SecretSource::File(jwt_file.clone())
                    .read("the ServiceAccount token file")
                    .await?;
                let auth =
                    vaultrs::auth::kubernetes::login(&client, mount, role, jwt.expose_secret())
                        .await
                        .map_err(refused("Kubernetes login"))?;
                client.set_token(&auth.client_token);
                (auth.lease_duration, auth.renewable)
            }
        };
        let ttl = Duration::from_secs(ttl);
        Ok(Session {
            client: Arc::new(client),
            ttl,
            base_ttl: ttl,
            renewable,
            capped: false,
            at,
            generation,
        })
    }
}
