//! Who is using the inbox, and proof that a form was posted from it.
//!
//! Login: a Bridle API key, checked with the shared `Authenticator`, is exchanged for a random
//! session id in an `HttpOnly`, `SameSite=Strict` cookie; the server keeps the session (never
//! the key) in Redis under the id's SHA-256, with a TTL. With auth off there is no login and
//! every visitor is the anonymous admin.
//!
//! CSRF: every form carries a token that must match — the session's own token when logged in,
//! else a random `bridle_csrf` cookie (double submit) — compared in constant time; a POST
//! whose `Origin` is another site, or whose `Sec-Fetch-Site` is `cross-site` or `same-site`,
//! is refused before that (an `Origin: null` passes only with `Sec-Fetch-Site: same-origin`).

use axum::http::{HeaderMap, header};
use bridle_core::auth::{AuthMode, Principal, Role};
use rand::RngCore as _;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Inbox;
use crate::Error;

pub const SESSION_COOKIE: &str = "bridle_session";
pub const CSRF_COOKIE: &str = "bridle_csrf";

/// A login, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stored {
    id: String,
    name: String,
    tenant: Option<String>,
    roles: Vec<Role>,
    #[serde(default)]
    groups: Vec<String>,
    csrf: String,
}

/// The visitor of one request.
#[derive(Clone, Debug)]
pub struct Visitor {
    pub principal: Principal,
    /// The token forms must carry.
    pub csrf: String,
    /// Set when a new `bridle_csrf` cookie must be sent with the response.
    pub new_csrf_cookie: Option<String>,
    pub logged_in: bool,
}

pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn sha(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A `Set-Cookie` value. Cookie values here are hex, so nothing needs quoting.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> String {
    set_cookie_same_site(name, value, max_age_secs, secure, "Strict")
}

/// [`set_cookie`] with another SameSite: `Lax` for the OIDC state cookie, which must come back
/// with the issuer's redirect (a navigation from another site).
pub fn set_cookie_same_site(
    name: &str,
    value: &str,
    max_age_secs: u64,
    secure: bool,
    same_site: &str,
) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when the POST came from this site (or the browser does not say).
pub fn same_origin(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s == "cross-site" || s == "same-site")
    {
        return false;
    }
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    // Browsers send "null" for privacy reasons (a no-referrer policy, some extensions) as well
    // as from sandboxed frames; only the browser's own fetch metadata can vouch for it then.
    if origin == "null" {
        return fetch_site == Some("same-origin");
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // "null" (sandboxed or privacy-stripped) is not this site.
    url::Url::parse(origin).is_ok_and(|u| {
        let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
        !host.is_empty() && format!("{}{port}", u.host_str().unwrap_or("")) == host
    })
}

pub fn csrf_ok(visitor: &Visitor, submitted: &str) -> bool {
    !visitor.csrf.is_empty() && constant_time_eq(visitor.csrf.as_bytes(), submitted.as_bytes())
}

impl Inbox {
    /// The visitor of a request: None when auth is on and nobody is logged in.
    pub async fn visitor(&self, headers: &HeaderMap) -> Result<Option<Visitor>, Error> {
        if self.auth.mode() == AuthMode::Off {
            return Ok(Some(Self::double_submit(headers, Principal::anonymous())));
        }
        let Some(sid) = cookie(headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        let json: Option<String> = self.conn.clone().get(self.keys.session(&sha(&sid))).await?;
        let Some(s) = json.and_then(|j| serde_json::from_str::<Stored>(&j).ok()) else {
            return Ok(None);
        };
        Ok(Some(Visitor {
            principal: Principal {
                id: s.id,
                name: s.name,
                tenant: s.tenant,
                roles: s.roles,
                service: false,
                groups: s.groups,
            },
            csrf: s.csrf,
            new_csrf_cookie: None,
            logged_in: true,
        }))
    }

    /// A visitor whose forms are protected by the `bridle_csrf` cookie (no session).
    pub fn double_submit(headers: &HeaderMap, principal: Principal) -> Visitor {
        match cookie(headers, CSRF_COOKIE) {
            Some(t) => Visitor {
                principal,
                csrf: t,
                new_csrf_cookie: None,
                logged_in: false,
            },
            None => {
                let t = random_token();
                Visitor {
                    principal,
                    csrf: t.clone(),
                    new_csrf_cookie: Some(t),
                    logged_in: false,
                }
            }
        }
    }

    /// Checks an API key and opens a session; returns the session cookie's value.
    pub async fn login(&self, api_key: &str) -> Result<(String, Principal), Error> {
        let p = self.auth.authenticate_bearer(api_key.trim()).await?;
        let sid = self.open_session(&p).await?;
        tracing::info!(key = %p.id, name = %p.name, "inbox login");
        Ok((sid, p))
    }

    /// Opens a session for `p`; returns the session cookie's value.
    pub async fn open_session(&self, p: &Principal) -> Result<String, Error> {
        let sid = random_token();
        let stored = Stored {
            id: p.id.clone(),
            name: p.name.clone(),
            tenant: p.tenant.clone(),
            roles: p.roles.clone(),
            groups: p.groups.clone(),
            csrf: random_token(),
        };
        let json = serde_json::to_string(&stored).map_err(bridle_core::Error::internal)?;
        let () = self
            .conn
            .clone()
            .set_ex(
                self.keys.session(&sha(&sid)),
                json,
                self.session_ttl.as_secs().max(1),
            )
            .await?;
        Ok(sid)
    }

    pub async fn logout(&self, headers: &HeaderMap) -> Result<(), Error> {
        if let Some(sid) = cookie(headers, SESSION_COOKIE) {
            let _: i64 = self.conn.clone().del(self.keys.session(&sha(&sid))).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookies_are_read_strictly() {
        let h = headers(&[("cookie", "a=1; bridle_csrf=abc123; x=<y>")]);
        assert_eq!(cookie(&h, CSRF_COOKIE).as_deref(), Some("abc123"));
        assert_eq!(cookie(&h, "x"), None, "only hex tokens are accepted");
        assert_eq!(cookie(&h, SESSION_COOKIE), None);
        assert_eq!(
            set_cookie("n", "ab", 60, true),
            "n=ab; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
    }

    #[test]
    fn cross_site_posts_are_refused() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site")
        ])));
        let v = Visitor {
            principal: Principal::anonymous(),
            csrf: "abc".into(),
            new_csrf_cookie: None,
            logged_in: false,
        };
        assert!(csrf_ok(&v, "abc"));
        assert!(!csrf_ok(&v, "abd") && !csrf_ok(&v, ""));
    }
}
