//! The broker's side of Vault/OpenBao: one logged-in session (swapped atomically when the
//! token is renewed or the broker logs in again), KV v2 reads with vaultrs, and the calls
//! vaultrs has no function for (dynamic engine reads, lease renew and revoke) over the same
//! HTTP client.

mod keeper;
mod login;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bridle_core::manifest::DynamicMethod;
use secrecy::SecretString;
use serde::Deserialize;
use vaultrs::client::VaultClient;
use vaultrs::error::ClientError;

pub use keeper::spawn_keeper;
pub use login::Login;

use crate::{Error, Options};

/// The fields of a secret (KV entry or dynamic response data), values kept secret.
pub type Fields = HashMap<String, SecretString>;

/// What went wrong talking to Vault; cloneable so one failed request can answer every caller
/// that waited for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaultError {
    /// Nothing at the path (404), or a response without data.
    NotFound,
    /// 403 with a live token: the broker's policy does not cover the path.
    Denied,
    /// Another 4xx: the request was wrong (a bad dynamic path or body, an unknown lease).
    Rejected(u16),
    /// Unreachable, sealed, overloaded, or an answer that is not Vault's.
    Unavailable(String),
    /// The broker's credentials are refused or its token is dead and cannot be renewed.
    Login(String),
}

impl VaultError {
    /// The crate error for secret `name`.
    pub fn for_secret(self, name: &str, addr: &str) -> Error {
        match self {
            VaultError::NotFound => Error::NoValue(name.to_string()),
            VaultError::Denied => Error::VaultDenied(name.to_string()),
            VaultError::Rejected(status) => Error::VaultRejected {
                name: name.to_string(),
                status,
            },
            VaultError::Unavailable(reason) => Error::VaultUnavailable {
                addr: addr.to_string(),
                reason,
            },
            VaultError::Login(reason) => Error::VaultLogin(reason),
        }
    }

    /// The crate error for something that is not one secret (start, EndRun).
    pub fn general(self, what: &str, addr: &str) -> Error {
        match self {
            VaultError::Unavailable(reason) => Error::VaultUnavailable {
                addr: addr.to_string(),
                reason,
            },
            VaultError::Login(reason) => Error::VaultLogin(reason),
            VaultError::NotFound => Error::VaultLogin(format!("{what}: not found")),
            VaultError::Denied => Error::VaultLogin(format!("{what}: permission denied")),
            VaultError::Rejected(s) => Error::VaultLogin(format!("{what}: status {s}")),
        }
    }
}

/// One logged-in token and what the broker knows of its life.
pub struct Session {
    /// Shared by a session and its renewals (the token is the same).
    client: Arc<VaultClient>,
    /// TTL at the last login or renewal; zero = the token never expires.
    ttl: Duration,
    /// The TTL the token was issued with: what each renewal asks for.
    base_ttl: Duration,
    renewable: bool,
    /// The last renewal returned less than asked: the token reached its max TTL.
    capped: bool,
    at: Instant,
    generation: u64,
}

impl Session {
    fn token(&self) -> &str {
        &self.client.settings.token
    }

    fn http(&self) -> &reqwest::Client {
        &self.client.http.http
    }
}

/// A dynamic read's answer.
pub struct Leased {
    pub fields: Fields,
    /// Empty when the engine returned no lease.
    pub lease_id: String,
    pub duration: Duration,
    pub renewable: bool,
}

pub struct Vault {
    addr: String,
    timeout: Duration,
    login: Login,
    session: RwLock<Arc<Session>>,
    /// One login at a time; whoever waited behind it sees the new session and does not log
    /// in again.
    relogin: tokio::sync::Mutex<()>,
}

impl Vault {
    /// Logs in (failing when Vault cannot be reached or refuses the credentials).
    pub async fn connect(opts: &Options) -> Result<Arc<Self>, Error> {
        let login = Login::from_options(opts)?;
        let session = login
            .login(&opts.vault_addr, opts.vault_timeout, 0)
            .await
            .map_err(|e| e.general(login.describe(), &opts.vault_addr))?;
        tracing::info!(
            addr = %opts.vault_addr,
            method = login.method(),
            ttl = ?session.ttl,
            renewable = session.renewable,
            "logged in to vault"
        );
        Ok(Arc::new(Vault {
            addr: opts.vault_addr.clone(),
            timeout: opts.vault_timeout,
            login,
            session: RwLock::new(Arc::new(session)),
            relogin: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether Vault answers the broker (its token looks itself up), for the
    /// `bridle.dependency.up` gauge.
    pub async fn probe(&self) -> Result<(), String> {
        vaultrs::token::lookup_self(&*self.current().client)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn current(&self) -> Arc<Session> {
        self.session
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, s: Session) {
        *self.session.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
    }

    /// Logs in again unless someone already did since `seen` was current.
    async fn relogin(&self, seen: u64) -> Result<(), VaultError> {
        let _one = self.relogin.lock().await;
        if self.current().generation != seen {
            return Ok(());
        }
        let s = self.login.login(&self.addr, self.timeout, seen + 1).await?;
        tracing::info!(method = self.login.method(), ttl = ?s.ttl, "logged in to vault again");
        self.replace(s);
        Ok(())
    }

    /// Runs `call` with the current session. A 403 is either the broker's policy or a dead
    /// token; only the second is cured by logging in again, so the token is checked first.
    async fn with_session<T, F, Fut>(&self, call: F) -> Result<T, VaultError>
    where
        F: Fn(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T, VaultError>>,
    {
        let s = self.current();
        match call(s.clone()).await {
            Err(VaultError::Denied) => {
                if vaultrs::token::lookup_self(&*s.client).await.is_ok() {
                    return Err(VaultError::Denied);
                }
                if !self.login.can_relogin() {
                    return Err(VaultError::Login(
                        "the broker's Vault token is no longer valid".into(),
                    ));
                }
                self.relogin(s.generation).await?;
                call(self.current()).await
            }
            other => other,
        }
    }

    /// Reads every field of the KV v2 entry at `mount`/`path`.
    pub async fn kv_read(&self, mount: &str, path: &str) -> Result<Fields, VaultError> {
        self.with_session(|s| async move {
            let data: serde_json::Map<String, serde_json::Value> =
                vaultrs::kv2::read(&*s.client, mount, path)
                    .await
                    .map_err(classify)?;
            Ok(fields(data))
        })
        .await
    }

    /// Writes `data` as the new version of the KV v2 entry at `mount`/`path`.
    pub async fn kv_write(
        &self,
        mount: &str,
        path: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<(), VaultError> {
        self.with_session(|s| async move {
            vaultrs::kv2::set(&*s.client, mount, path, data)
                .await
                .map(|_| ())
                .map_err(classify)
        })
        .await
    }

    /// Deletes the KV v2 entry at `mount`/`path` with every version of it; NotFound when there
    /// was none.
    pub async fn kv_delete(&self, mount: &str, path: &str) -> Result<(), VaultError> {
        self.with_session(|s| async move {
            vaultrs::kv2::read_metadata(&*s.client, mount, path)
                .await
                .map_err(classify)?;
            vaultrs::kv2::delete_metadata(&*s.client, mount, path)
                .await
                .map_err(classify)
        })
        .await
    }

    /// Reads a dynamic engine path (`database/creds/readonly`), which may return a lease.
    pub async fn dynamic_read(
        &self,
        method: DynamicMethod,
        path: &str,
        body: &BTreeMap<String, serde_json::Value>,
    ) -> Result<Leased, VaultError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            lease_id: String,
            #[serde(default)]
            lease_duration: u64,
            #[serde(default)]
            renewable: bool,
            data: Option<serde_json::Map<String, serde_json::Value>>,
        }
        let body = (method == DynamicMethod::Post).then(|| serde_json::json!(body));
        let v = self
            .with_session(|s| {
                let body = body.clone();
                async move { self.raw(&s, method, path, body).await }
            })
            .await?;
        let a: Answer = serde_json::from_value(v).map_err(|e| {
            VaultError::Unavailable(format!("unexpected answer to a dynamic read: {e}"))
        })?;
        Ok(Leased {
            fields: fields(a.data.ok_or(VaultError::NotFound)?),
            lease_id: a.lease_id,
            duration: Duration::from_secs(a.lease_duration),
            renewable: a.renewable,
        })
    }

    /// Renews a lease by `increment`; returns the lease's new duration.
    pub async fn renew_lease(
        &self,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Duration, VaultError> {
        let body = serde_json::json!({"lease_id": lease_id, "increment": increment.as_secs()});
        let v = self
            .with_session(|s| {
                let body = body.clone();
                async move {
                    self.raw(&s, DynamicMethod::Post, "sys/leases/renew", Some(body))
                        .await
                }
            })
            .await?;
        Ok(Duration::from_secs(
            v.get("lease_duration")
                .and_then(|d| d.as_u64())
                .unwrap_or(0),
        ))
    }

    /// Revokes a lease (Vault answers success for one already gone).
    pub async fn revoke_lease(&self, lease_id: &str) -> Result<(), VaultError> {
        let body = serde_json::json!({ "lease_id": lease_id });
        self.with_session(|s| {
            let body = body.clone();
            async move {
                self.raw(&s, DynamicMethod::Post, "sys/leases/revoke", Some(body))
                    .await
            }
        })
        .await
        .map(|_| ())
    }

    /// A call vaultrs has no function for, on the session's HTTP client.
    async fn raw(
        &self,
        s: &Session,
        method: DynamicMethod,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, VaultError> {
        let url = format!("{}/v1/{path}", self.addr.trim_end_matches('/'));
        let mut req = match method {
            DynamicMethod::Get => s.http().get(&url),
            DynamicMethod::Post => s.http().post(&url),
        }
        .header("X-Vault-Token", s.token())
        .header("X-Vault-Request", "true")
        .timeout(self.timeout);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| VaultError::Unavailable(root_cause(&e)))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| VaultError::Unavailable(root_cause(&e)))?;
        if let Some(e) = status_error(status) {
            if matches!(e, VaultError::Rejected(_)) {
                // Vault's own words help the operator; they stay in the log, not the answer.
                tracing::warn!(status, path, errors = %text.trim(), "vault rejected a request");
            }
            return Err(e);
        }
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| VaultError::Unavailable(format!("answer is not JSON: {e}")))
    }
}

fn fields(data: serde_json::Map<String, serde_json::Value>) -> Fields {
    data.into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, SecretString::from(s))
        })
        .collect()
}

fn status_error(status: u16) -> Option<VaultError> {
    match status {
        200..=299 => None,
        404 => Some(VaultError::NotFound),
        401 | 403 => Some(VaultError::Denied),
        503 => Some(VaultError::Unavailable("sealed or in standby (503)".into())),
        429 | 500..=599 => Some(VaultError::Unavailable(format!("answered {status}"))),
        other => Some(VaultError::Rejected(other)),
    }
}

fn classify(e: ClientError) -> VaultError {
    match e {
        ClientError::APIError { code, .. } => {
            status_error(code).unwrap_or(VaultError::Unavailable(format!("answered {code}")))
        }
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
            VaultError::NotFound
        }
        other => VaultError::Unavailable(root_cause(&other)),
    }
}

/// The innermost error message (connection refused, DNS failure), not "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
