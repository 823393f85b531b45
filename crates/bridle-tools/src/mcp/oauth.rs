//! The MCP authorization flow for remote (streamable-HTTP) servers whose manifest sets
//! `spec.mcp.oauth`: OAuth 2.1, authorization code with PKCE, with the server's authorization
//! server found from its metadata (protected resource metadata, then authorization server
//! metadata) and a client registered there dynamically when the manifest names none. rmcp's
//! `AuthorizationManager` runs the protocol; this module gives it Bridle's storage and network:
//!
//! - a pending authorization (PKCE verifier, client, redirect) lives in Redis for ten minutes,
//!   so the replica that completes it need not be the one that began it;
//! - a tenant's grant (client id and tokens) lives in Vault through the secrets broker
//!   (`Secrets.GetGrant`/`PutGrant`), cached here for a short while; a refresh is serialized
//!   across replicas by a Redis lock, so a rotating refresh token is used once;
//! - every OAuth request (discovery, registration, token) goes only where the platform's egress
//!   rules let this tenant's tools go, to the addresses checked, redirects checked one by one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridle_core::client::Traced as Channel;
use bridle_core::manifest::{McpTool, Tool};
use bridle_core::redis_util::{Keys, RedisConn};
use bridle_proto::secrets_client::SecretsClient;
use bridle_proto::{DeleteGrantRequest, GetGrantRequest, GrantKey, PutGrantRequest};
use oauth2::TokenResponse as _;
use rmcp::transport::auth::{
    AuthClient, AuthError, AuthorizationManager, AuthorizationRequest, AuthorizationSession,
    CredentialRefreshGuard, CredentialStore, OAuthClientConfig, OAuthHttpClient,
    OAuthHttpClientError, OAuthHttpClientFuture, OAuthHttpRedirectPolicy, OAuthHttpRequest,
    StateStore, StoredAuthorizationState, StoredCredentials,
};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::egress::{Allowlist, Platform};

/// How long a person has to authorize once the flow began.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// How long a grant read from Vault is used before it is read again (a refresh by another
/// replica is seen within this; the access token it replaced stays valid meanwhile).
const GRANT_CACHE: Duration = Duration::from_secs(30);
/// How long an authorized client (its discovered metadata and pinned addresses) is reused.
const CLIENT_CACHE: Duration = Duration::from_secs(300);
/// A refresh lock's life: one token request's time, with margin.
const REFRESH_LOCK: Duration = Duration::from_secs(30);
/// Bytes of an OAuth answer read (metadata, registration, tokens).
const MAX_ANSWER: usize = 1024 * 1024;
/// Redirects followed by a discovery request.
const MAX_REDIRECTS: usize = 5;

/// The authorization flows and grants of every OAuth-protected MCP server of this service.
pub struct OAuth {
    conn: RedisConn,
    keys: Keys,
    secrets: SecretsClient<Channel>,
    egress: Arc<Platform>,
    timeout: Duration,
    clients: Mutex<HashMap<String, (Instant, AuthClient<reqwest::Client>)>>,
}

/// What BeginAuthorization returns.
pub struct Begun {
    pub url: String,
    pub state: String,
    pub client_id: String,
    pub registered: bool,
}

/// What CompleteAuthorization returns.
pub struct Completed {
    pub tool: String,
    pub scopes: Vec<String>,
    pub expires_in: Option<Duration>,
    pub refreshable: bool,
}

/// A flow between Begin and Complete (Redis, `<prefix>:mcp:oauth:pending:<state>`).
#[derive(Serialize, Deserialize)]
struct Pending {
    tenant: String,
    tool: String,
    url: String,
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
}

/// A grant as kept in Vault: the server it is for and rmcp's credentials.
#[derive(Serialize, Deserialize)]
struct Kept {
    url: String,
    credentials: StoredCredentials,
}

/// The error of a tool whose tenant has no usable grant.
pub fn needs_login(tool: &str, tenant: &str, url: &str, why: &str) -> Error {
    Error::Core(bridle_core::Error::FailedPrecondition(format!(
        "tool '{tool}': the MCP server at {url} needs an OAuth authorization for tenant '{tenant}' ({why}); a person runs `bridle mcp login {tool}` to give one"
    )))
}

/// A redirect URI a person's browser may be sent to: a loopback listener (RFC 8252) or HTTPS.
pub fn check_redirect(uri: &str) -> Result<(), Error> {
    let bad = |why: &str| {
        Error::Core(bridle_core::Error::InvalidArgument(format!(
            "redirect_uri: '{uri}' {why}"
        )))
    };
    let u = url::Url::parse(uri).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if u.fragment().is_some() {
        return Err(bad("must not have a fragment"));
    }
    if bridle_core::config::https_or_loopback(&u) {
        Ok(())
    } else {
        Err(bad(
            "must be https://, or http:// to a loopback address (127.0.0.1, [::1] or localhost)",
        ))
    }
}

fn auth_error(e: impl std::fmt::Display) -> AuthError {
    AuthError::InternalError(e.to_string())
}

fn store_error(e: impl std::fmt::Display) -> AuthError {
    AuthError::CredentialStoreError(e.to_string())
}

impl OAuth {
    pub fn new(
        conn: RedisConn,
        keys: Keys,
        secrets: SecretsClient<Channel>,
        egress: Arc<Platform>,
        timeout: Duration,
    ) -> Self {
        Self {
            conn,
            keys,
            secrets,
            egress,
            timeout,
            clients: Mutex::default(),
        }
    }

    fn pending_key(&self, state: &str) -> String {
        self.keys.key(&format!("tools:oauth:pending:{state}"))
    }

    /// A manager for `url` whose requests go through the egress rules of `tenant`, whose
    /// pending flows are in Redis and whose grant is the tenant's for `tool`.
    async fn manager(
        &self,
        tenant: &str,
        tool: &str,
        url: &str,
    ) -> Result<AuthorizationManager, AuthError> {
        let http = Arc::new(EgressHttp {
            egress: self.egress.clone(),
            tenant: tenant.to_string(),
            timeout: self.timeout,
        });
        let mut m = AuthorizationManager::new_with_oauth_http_client(url, http).await?;
        m.set_state_store(RedisStates {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
        });
        m.set_credential_store(VaultGrant {
            secrets: self.secrets.clone(),
            conn: self.conn.clone(),
            lock_key: self
                .keys
                .key(&format!("tools:oauth:refresh:{tenant}:{tool}")),
            key: GrantKey {
                tenant: tenant.to_string(),
                tool: tool.to_string(),
            },
            url: url.to_string(),
            cached: Arc::default(),
        });
        Ok(m)
    }

    /// Discovers the server's authorization server, registers a client when the manifest
    /// names none, and keeps the pending flow; returns the URL the person opens.
    pub async fn begin(
        &self,
        tenant: &str,
        tool: &Tool,
        m: &McpTool,
        redirect_uri: &str,
    ) -> Result<Begun, Error> {
        let name = tool.metadata.name.as_str();
        let (url, o) = oauth_of(name, m)?;
        check_redirect(redirect_uri)?;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Error::Core(bridle_core::Error::FailedPrecondition(format!(
                "tool '{name}': {what} of the MCP server at {url} failed: {e}"
            )))
        };
        let mut manager = self
            .manager(tenant, name, url)
            .await
            .map_err(|e| failed("authorization", &e))?;
        let found = manager
            .resolve_metadata()
            .await
            .map_err(|e| failed("discovering the authorization server", &e))?;
        manager.set_metadata(found.metadata);
        let scopes = if o.scopes.is_empty() {
            manager.select_scopes(None, &[])
        } else {
            o.scopes.clone()
        };
        let (client_id, registered) = match &o.client_id {
            Some(c) => (c.clone(), false),
            None => {
                let refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
                let client = manager
                    .register_client(&format!("Bridle (tenant {tenant})"), redirect_uri, &refs)
                    .await
                    .map_err(|e| failed("dynamic client registration", &e))?;
                if client.client_secret.is_some() {
                    // Bridle registers a public client (PKCE, no secret) and keeps no client
                    // secret; a server that insists on one needs a pre-registered client.
                    return Err(Error::Core(bridle_core::Error::FailedPrecondition(
                        format!(
                            "tool '{name}': the authorization server of {url} registered a confidential client (it returned a client secret); Bridle registers public clients only: register one there and name it in spec.mcp.oauth.clientId"
                        ),
                    )));
                }
                (client.client_id, true)
            }
        };
        let request = AuthorizationRequest::new(redirect_uri)
            .with_scopes(scopes.iter().cloned())
            .with_preregistered_client(client_id.clone());
        let session = AuthorizationSession::new(manager, request)
            .await
            .map_err(|(_, e)| failed("starting the authorization", &e))?;
        let auth_url = session.get_authorization_url().to_string();
        let state = url::Url::parse(&auth_url)
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "state")
                    .map(|(_, v)| v.to_string())
            })
            .ok_or_else(|| {
                Error::Core(bridle_core::Error::internal(
                    "the authorization URL has no state parameter",
                ))
            })?;
        let pending = Pending {
            tenant: tenant.to_string(),
            tool: name.to_string(),
            url: url.to_string(),
            client_id: client_id.clone(),
            redirect_uri: redirect_uri.to_string(),
            scopes: session.auth_manager.get_current_scopes().await,
        };
        let body = serde_json::to_string(&pending).map_err(bridle_core::Error::internal)?;
        let mut conn = self.conn.clone();
        let () = redis::cmd("SET")
            .arg(self.pending_key(&state))
            .arg(body)
            .arg("EX")
            .arg(PENDING_TTL.as_secs())
            .query_async(&mut conn)
            .await?;
        tracing::info!(tenant, tool = name, %url, registered, "oauth authorization begun");
        Ok(Begun {
            url: auth_url,
            state,
            client_id,
            registered,
        })
    }

    /// Exchanges the code for tokens and keeps them (in Vault, through the broker).
    pub async fn complete(
        &self,
        tenant: &str,
        state: &str,
        code: &str,
        issuer: Option<&str>,
        registry: &crate::registry::Registry,
    ) -> Result<Completed, Error> {
        let gone = || {
            Error::Core(bridle_core::Error::FailedPrecondition(format!(
                "no authorization of tenant '{tenant}' is pending with this state: it took more than {} minutes, was completed already, or was begun for another tenant; begin again",
                PENDING_TTL.as_secs() / 60
            )))
        };
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.pending_key(state))
            .query_async(&mut conn)
            .await?;
        let p: Pending = raw
            .and_then(|r| serde_json::from_str(&r).ok())
            .ok_or_else(gone)?;
        if p.tenant != tenant {
            return Err(gone());
        }
        // The manifest may have changed since: the grant is for the server it names now.
        let tool = registry.get(tenant, &p.tool).await?.ok_or_else(|| {
            Error::Core(bridle_core::Error::FailedPrecondition(format!(
                "tool '{}' was deleted while it was being authorized",
                p.tool
            )))
        })?;
        let Some(m) = &tool.spec.mcp else {
            return Err(Error::Core(bridle_core::Error::FailedPrecondition(
                format!("tool '{}' is no longer an MCP tool", p.tool),
            )));
        };
        let (url, _) = oauth_of(&p.tool, m)?;
        if url != p.url {
            return Err(Error::Core(bridle_core::Error::FailedPrecondition(
                format!(
                    "tool '{}' now names the MCP server {url}, not {} it was being authorized for; begin again",
                    p.tool, p.url
                ),
            )));
        }
        let failed = |e: AuthError| {
            Error::Core(bridle_core::Error::FailedPrecondition(format!(
                "tool '{}': the authorization server of {url} refused the code: {e}",
                p.tool
            )))
        };
        let mut manager = self.manager(tenant, &p.tool, url).await.map_err(failed)?;
        let found = manager.resolve_metadata().await.map_err(failed)?;
        manager.set_metadata(found.metadata);
        manager
            .configure_client(
                OAuthClientConfig::new(p.client_id.clone(), p.redirect_uri.clone())
                    .with_scopes(p.scopes.clone()),
            )
            .map_err(failed)?;
        let token = manager
            .exchange_code_for_token_with_issuer(code, state, issuer)
            .await
            .map_err(failed)?;
        let _: i64 = redis::cmd("DEL")
            .arg(self.pending_key(state))
            .query_async(&mut conn)
            .await?;
        self.forget(tenant, &p.tool);
        tracing::info!(tenant, tool = %p.tool, %url, "oauth authorization completed");
        Ok(Completed {
            tool: p.tool,
            scopes: manager.get_current_scopes().await,
            expires_in: token.expires_in(),
            refreshable: token.refresh_token().is_some(),
        })
    }

    /// Forgets the tenant's grant for `tool`; false when there was none.
    pub async fn revoke(&self, tenant: &str, tool: &str) -> Result<bool, Error> {
        let deleted = self
            .secrets
            .clone()
            .delete_grant(DeleteGrantRequest {
                tenant: tenant.to_string(),
                tool: tool.to_string(),
            })
            .await
            .map_err(|s| Error::Core(bridle_core::client::call_error("secrets broker", s)))?
            .into_inner()
            .deleted;
        self.forget(tenant, tool);
        Ok(deleted)
    }

    fn forget(&self, tenant: &str, tool: &str) {
        let prefix = format!("{tenant}\0{tool}\0");
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| !k.starts_with(&prefix));
    }

    /// An HTTP client for the tool's calls that carries the tenant's access token (refreshed
    /// when it is about to expire, and once when the server refuses it); `http` is the client
    /// pinned to the server's checked addresses. Fails with [`needs_login`] when the tenant
    /// has no grant.
    pub async fn authorized(
        &self,
        tenant: &str,
        tool: &str,
        url: &str,
        http: reqwest::Client,
        pinned: &[std::net::SocketAddr],
    ) -> Result<AuthClient<reqwest::Client>, Error> {
        let key = format!("{tenant}\0{tool}\0{url}\0{pinned:?}");
        if let Some((at, c)) = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < CLIENT_CACHE
        {
            return Ok(c.clone());
        }
        let unavailable = |e: AuthError| {
            Error::Core(bridle_core::Error::unavailable(
                format!("the authorization server of MCP server {url} (tool '{tool}')"),
                e.to_string(),
            ))
        };
        let mut manager = self.manager(tenant, tool, url).await.map_err(unavailable)?;
        let has = manager.initialize_from_store().await.map_err(|e| match e {
            AuthError::CredentialStoreError(why) => Error::Core(bridle_core::Error::unavailable(
                "the secrets broker (OAuth grants)",
                why,
            )),
            other => unavailable(other),
        })?;
        if !has {
            return Err(needs_login(tool, tenant, url, "none is kept"));
        }
        let c = AuthClient::new(http, manager);
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (Instant::now(), c.clone()));
        Ok(c)
    }
}

/// The server's URL and its `oauth` block.
fn oauth_of<'a>(
    tool: &str,
    m: &'a McpTool,
) -> Result<(&'a str, &'a bridle_core::manifest::McpOAuth), Error> {
    match (&m.url, &m.oauth) {
        (Some(u), Some(o)) => Ok((u, o)),
        _ => Err(Error::Core(bridle_core::Error::FailedPrecondition(
            format!(
                "tool '{tool}' is not an OAuth-protected MCP server (its manifest needs spec.mcp.url and spec.mcp.oauth)"
            ),
        ))),
    }
}

/// Pending flows' PKCE state in Redis, beside the flow (same expiry).
struct RedisStates {
    conn: RedisConn,
    keys: Keys,
}

impl RedisStates {
    fn key(&self, csrf: &str) -> String {
        self.keys.key(&format!("tools:oauth:state:{csrf}"))
    }
}

#[async_trait::async_trait]
impl StateStore for RedisStates {
    async fn save(&self, csrf: &str, state: StoredAuthorizationState) -> Result<(), AuthError> {
        let body = serde_json::to_string(&state).map_err(auth_error)?;
        let () = redis::cmd("SET")
            .arg(self.key(csrf))
            .arg(body)
            .arg("EX")
            .arg(PENDING_TTL.as_secs())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn load(&self, csrf: &str) -> Result<Option<StoredAuthorizationState>, AuthError> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.key(csrf))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        raw.map(|r| serde_json::from_str(&r).map_err(auth_error))
            .transpose()
    }

    async fn delete(&self, csrf: &str) -> Result<(), AuthError> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.key(csrf))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

/// A grant as last read or written, and when.
type Cached = (Instant, Option<StoredCredentials>);

/// A tenant's grant for one tool, in Vault through the broker, cached for [`GRANT_CACHE`].
struct VaultGrant {
    secrets: SecretsClient<Channel>,
    conn: RedisConn,
    lock_key: String,
    key: GrantKey,
    url: String,
    cached: Arc<Mutex<Option<Cached>>>,
}

impl VaultGrant {
    fn remember(&self, c: Option<StoredCredentials>) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), c));
    }
}

#[async_trait::async_trait]
impl CredentialStore for VaultGrant {
    async fn load(&self) -> Result<Option<StoredCredentials>, AuthError> {
        if let Some((at, c)) = &*self.cached.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < GRANT_CACHE
        {
            return Ok(c.clone());
        }
        let got = self
            .secrets
            .clone()
            .get_grant(GetGrantRequest {
                tenant: self.key.tenant.clone(),
                tool: self.key.tool.clone(),
            })
            .await;
        let c = match got {
            Ok(g) => {
                let kept: Kept = serde_json::from_str(&g.into_inner().value).map_err(|e| {
                    store_error(format!("the kept grant does not parse ({e}); log in again"))
                })?;
                if kept.url == self.url {
                    Some(kept.credentials)
                } else {
                    // Issued for the server the manifest named before: not this one's.
                    tracing::warn!(tool = %self.key.tool, tenant = %self.key.tenant, "the kept oauth grant is for another server URL; it is not used");
                    None
                }
            }
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => return Err(store_error(format!("secrets broker: {}", s.message()))),
        };
        self.remember(c.clone());
        Ok(c)
    }

    async fn save(&self, credentials: StoredCredentials) -> Result<(), AuthError> {
        let kept = Kept {
            url: self.url.clone(),
            credentials: credentials.clone(),
        };
        let value = serde_json::to_string(&kept).map_err(auth_error)?;
        self.secrets
            .clone()
            .put_grant(PutGrantRequest {
                key: Some(self.key.clone()),
                value,
            })
            .await
            .map_err(|s| store_error(format!("secrets broker: {}", s.message())))?;
        self.remember(Some(credentials));
        Ok(())
    }

    async fn clear(&self) -> Result<(), AuthError> {
        self.secrets
            .clone()
            .delete_grant(DeleteGrantRequest {
                tenant: self.key.tenant.clone(),
                tool: self.key.tool.clone(),
            })
            .await
            .map_err(|s| store_error(format!("secrets broker: {}", s.message())))?;
        self.remember(None);
        Ok(())
    }

    /// One refresh at a time across replicas (a rotating refresh token is good once), and the
    /// grant read again under the lock: another replica may have refreshed it already.
    async fn acquire_refresh_guard(&self) -> Result<Option<CredentialRefreshGuard>, AuthError> {
        let token = ulid::Ulid::new().to_string();
        let deadline = Instant::now() + REFRESH_LOCK;
        let mut conn = self.conn.clone();
        loop {
            let got: Option<String> = redis::cmd("SET")
                .arg(&self.lock_key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(REFRESH_LOCK.as_millis() as u64)
                .query_async(&mut conn)
                .await
                .map_err(store_error)?;
            if got.is_some() {
                break;
            }
            if Instant::now() > deadline {
                return Err(store_error(
                    "another replica has been refreshing this grant for 30s",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(Some(CredentialRefreshGuard::new(RefreshLock {
            conn: self.conn.clone(),
            key: self.lock_key.clone(),
            token,
        })))
    }
}

/// Held through a refresh; released (if still ours) when dropped.
struct RefreshLock {
    conn: RedisConn,
    key: String,
    token: String,
}

const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

impl Drop for RefreshLock {
    fn drop(&mut self) {
        let (mut conn, key, token) = (
            self.conn.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            // Dropping cannot wait; the lock expires by itself if this never runs.
            #[allow(clippy::disallowed_methods)]
            rt.spawn(async move {
                let _: Result<i64, _> = redis::Script::new(RELEASE)
                    .key(key)
                    .arg(token)
                    .invoke_async(&mut conn)
                    .await;
            });
        }
    }
}

/// OAuth requests, each to an address the platform's egress rules admit for the tenant.
struct EgressHttp {
    egress: Arc<Platform>,
    tenant: String,
    timeout: Duration,
}

impl EgressHttp {
    async fn client_for(&self, url: &reqwest::Url) -> Result<reqwest::Client, String> {
        let (allow, dest, port) = Allowlist::for_url(url, self.egress.clone(), &self.tenant)?;
        let pinned = allow.addresses(&dest, port, self.timeout).await?;
        super::client::pinned_http(url.as_str(), self.timeout, &pinned).map_err(|e| e.to_string())
    }
}

impl OAuthHttpClient for EgressHttp {
    fn execute(&self, request: OAuthHttpRequest) -> OAuthHttpClientFuture<'_> {
        Box::pin(async move {
            let follow = request.redirect_policy == OAuthHttpRedirectPolicy::Follow;
            let boxed = |e: String| -> OAuthHttpClientError { e.into() };
            let mut req = reqwest::Request::try_from(request.request)
                .map_err(|e| boxed(format!("OAuth request: {e}")))?;
            let mut hops = 0;
            let response = loop {
                let url = req.url().clone();
                let client = self.client_for(&url).await.map_err(|why| {
                    boxed(format!(
                        "egress to {} refused: {why}",
                        url.origin().ascii_serialization()
                    ))
                })?;
                let again = req.try_clone();
                let r = client
                    .execute(req)
                    .await
                    .map_err(|e| boxed(format!("{}: {e}", url.origin().ascii_serialization())))?;
                let next = r
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok());
                match (follow && r.status().is_redirection(), next, again) {
                    (true, Some(next), Some(mut again)) if hops < MAX_REDIRECTS => {
                        hops += 1;
                        *again.url_mut() = next;
                        req = again;
                    }
                    _ => break r,
                }
            };
            let mut builder = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let mut body = Vec::new();
            let mut response = response;
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| boxed(format!("reading the answer: {e}")))?
            {
                if body.len() + chunk.len() > MAX_ANSWER {
                    return Err(boxed(format!(
                        "the answer is larger than {MAX_ANSWER} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            builder
                .body(body)
                .map_err(|e| boxed(format!("answer: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_loopback_or_https() {
        for ok in [
            "http://127.0.0.1:43123/callback",
            "http://localhost:8080/cb",
            "http://[::1]:9000/",
            "https://bridle.example.com/oauth/callback",
        ] {
            assert!(check_redirect(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://bridle.example.com/callback",
            "http://10.0.0.1/cb",
            "ftp://127.0.0.1/cb",
            "https://x.example/cb#frag",
            "not a url",
        ] {
            let e = check_redirect(bad).unwrap_err().to_string();
            assert!(e.contains("redirect_uri"), "{bad}: {e}");
        }
    }
}
