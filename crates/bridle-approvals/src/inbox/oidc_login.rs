//! People log in to the inbox with their identity provider: OpenID Connect's authorization
//! code flow with PKCE (S256) and a nonce. `GET /login/oidc` sends the browser to the issuer's
//! authorization endpoint; `GET /login/oidc/callback` takes the code back, exchanges it at the
//! token endpoint, checks the ID token as any token of that issuer (signature against its
//! JWKS, `iss`, `aud` = the client id, `exp`, `nbf`; claims to tenant, roles, groups) plus its
//! `nonce`, and opens the same session an API key login opens.
//!
//! The flow's state is bound twice: to the browser (a cookie holding it, so a login started
//! elsewhere cannot be finished here) and to Redis (verifier and nonce, 10 minutes, taken once,
//! so any replica can finish it and a code cannot be replayed).

use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bridle_core::auth::Principal;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::Inbox;
use super::session::{cookie, random_token};
use crate::Error;
use crate::options::OidcLogin;

/// The cookie that binds a login in flight to the browser that started it.
pub const STATE_COOKIE: &str = "bridle_oidc_state";
/// How long a person has to log in at the issuer.
pub const FLOW_TTL: Duration = Duration::from_secs(600);

/// The inbox's side of the flow.
pub struct OidcFlow {
    cfg: OidcLogin,
    http: reqwest::Client,
    /// `<origin>/login/oidc/callback`.
    redirect_uri: String,
}

#[derive(Serialize, Deserialize)]
struct Pending {
    verifier: String,
    nonce: String,
    token_endpoint: String,
}

#[derive(Deserialize)]
struct Discovery {
    authorization_endpoint: String,
    token_endpoint: String,
}

fn refused(why: impl Into<String>) -> Error {
    Error::Core(bridle_core::Error::Unauthenticated(why.into()))
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Core(bridle_core::Error::unavailable(
        format!("the identity provider ({what})"),
        e,
    ))
}

impl OidcFlow {
    pub fn new(cfg: OidcLogin, origin: &str) -> Result<Self, bridle_core::Error> {
        let http = bridle_core::http_client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| bridle_core::Error::Config(format!("inbox.oidc_login: {e}")))?;
        Ok(Self {
            redirect_uri: format!("{}/login/oidc/callback", origin.trim_end_matches('/')),
            cfg,
            http,
        })
    }

    async fn discover(&self) -> Result<Discovery, Error> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| unavailable("discovery", bridle_core::http_server::chain(&e)))?;
        resp.json()
            .await
            .map_err(|e| unavailable("discovery document", e))
    }
}

impl Inbox {
    /// Starts a login: where to send the browser, and the state for its cookie.
    pub async fn oidc_start(&self) -> Result<(String, String), Error> {
        let flow = self
            .oidc
            .as_ref()
            .ok_or_else(|| refused("OIDC login is not configured"))?;
        let d = flow.discover().await?;
        let state = random_token();
        let verifier = random_token();
        let nonce = random_token();
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let pending = Pending {
            verifier,
            nonce: nonce.clone(),
            token_endpoint: d.token_endpoint,
        };
        let json = serde_json::to_string(&pending).map_err(bridle_core::Error::internal)?;
        let () = self
            .conn
            .clone()
            .set_ex(self.keys.oidc_flow(&state), json, FLOW_TTL.as_secs())
            .await?;
        let mut url = url::Url::parse(&d.authorization_endpoint)
            .map_err(|e| unavailable("authorization endpoint", e))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &flow.cfg.client_id)
            .append_pair("redirect_uri", &flow.redirect_uri)
            .append_pair("scope", &flow.cfg.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok((url.to_string(), state))
    }

    /// Finishes a login the issuer sent back: opens a session for the person.
    pub async fn oidc_finish(
        &self,
        headers: &HeaderMap,
        state: &str,
        code: &str,
    ) -> Result<(String, Principal), Error> {
        let flow = self
            .oidc
            .as_ref()
            .ok_or_else(|| refused("OIDC login is not configured"))?;
        if state.is_empty() || cookie(headers, STATE_COOKIE).as_deref() != Some(state) {
            return Err(refused(
                "this login was not started from this browser (or it took more than 10 minutes): log in again",
            ));
        }
        let json: Option<String> = redis::cmd("GETDEL")
            .arg(self.keys.oidc_flow(state))
            .query_async(&mut self.conn.clone())
            .await?;
        let pending: Pending = json
            .and_then(|j| serde_json::from_str(&j).ok())
            .ok_or_else(|| refused("this login expired or was already used: log in again"))?;
        let resp = self
            .http_form(
                flow,
                &pending.token_endpoint,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", &flow.redirect_uri),
                    ("client_id", &flow.cfg.client_id),
                    ("code_verifier", &pending.verifier),
                ],
            )
            .await?;
        let id_token = resp
            .get("id_token")
            .and_then(|v| v.as_str())
            .ok_or_else(|| refused("the identity provider answered without an ID token"))?;
        // The signature, issuer, audience and times are checked as for any token of the issuer.
        let p = self.auth.authenticate_bearer(id_token).await?;
        if nonce_of(id_token).as_deref() != Some(pending.nonce.as_str()) {
            return Err(refused("the ID token's nonce is not this login's"));
        }
        let sid = self.open_session(&p).await?;
        tracing::info!(user = %p.id, name = %p.name, "inbox login (OIDC)");
        Ok((sid, p))
    }

    async fn http_form(
        &self,
        flow: &OidcFlow,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<serde_json::Value, Error> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = flow
            .http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable("token endpoint", bridle_core::http_server::chain(&e)))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| unavailable("token endpoint", e))?;
        if !status.is_success() {
            let error = body
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("unknown");
            return Err(refused(format!(
                "the identity provider refused the login ({status}, {})",
                bridle_core::redact::quote(error)
            )));
        }
        Ok(body)
    }
}

/// The `nonce` claim of a JWT whose signature was checked already.
fn nonce_of(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("nonce")?.as_str().map(str::to_string)
}
