//! People's identities: OIDC bearer tokens (JWTs) from configured issuers, beside API keys.
//!
//! A token is accepted when its `iss` is a configured issuer, its signature verifies with a key
//! of that issuer's JWKS (fetched from `jwks_uri`, or from the issuer's discovery document;
//! cached, fetched again for a `kid` it does not hold, at most every [`REFETCH_GAP`], and
//! after [`KEYS_REFRESH`]; while the issuer cannot be reached, keys fetched before keep working
//! for [`KEYS_TTL`] and unknown ones are refused), its algorithm is an asymmetric one the key allows (never `none` or an
//! HMAC), its `aud` holds one of the issuer's `audiences`, and `exp` and `nbf` hold (with
//! `leeway`). Its claims become the caller: the tenant (a fixed `tenant`, or a claim), roles
//! (a claim, plus roles given to groups), and a name for messages and audit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;
use crate::auth::{Principal, Role};

/// How long a fetched JWKS is used before it is fetched again.
pub const KEYS_REFRESH: Duration = Duration::from_secs(600);
/// How long fetched keys stay good while the issuer cannot be reached: past this, its tokens
/// are refused until it answers again.
pub const KEYS_TTL: Duration = Duration::from_secs(3600);
/// The least time between two fetches of one issuer's JWKS (an unknown `kid` cannot make a
/// caller hammer the issuer).
pub const REFETCH_GAP: Duration = Duration::from_secs(10);
/// A JWT longer than this is refused before it is parsed.
const MAX_TOKEN: usize = 16 * 1024;

/// One trusted OIDC issuer (`oidc` option, a list).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OidcIssuer {
    /// The issuer exactly as tokens name it in `iss` (`https://login.example.com/realms/x`).
    pub issuer: String,
    /// Tokens must name one of these in `aud` (the client id or API identifier Bridle is
    /// registered as). At least one.
    pub audiences: Vec<String>,
    /// Where the issuer's signing keys are; unset: `jwks_uri` of
    /// `<issuer>/.well-known/openid-configuration`.
    pub jwks_uri: Option<String>,
    /// Every token of this issuer acts for this tenant. Unset: the `tenant_claim` claim names it.
    pub tenant: Option<String>,
    /// The claim naming the caller's tenant, when `tenant` is unset.
    pub tenant_claim: String,
    /// The claim listing Bridle roles (admin, operator, approver, viewer): an array, or a
    /// space-separated string. Names that are not Bridle roles are ignored.
    pub roles_claim: String,
    /// The claim listing the caller's groups (array, or space-separated string).
    pub groups_claim: String,
    /// Roles given to members of a group (group -> roles), added to the roles claim's.
    pub group_roles: BTreeMap<String, Vec<String>>,
    /// The claim that names the person in messages and audit (falls back to `email`, then
    /// `sub`).
    pub name_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub leeway: Duration,
}

impl Default for OidcIssuer {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audiences: Vec::new(),
            jwks_uri: None,
            tenant: None,
            tenant_claim: "tenant".into(),
            roles_claim: "roles".into(),
            groups_claim: "groups".into(),
            group_roles: BTreeMap::new(),
            name_claim: "preferred_username".into(),
            leeway: Duration::from_secs(60),
        }
    }
}

/// Whether `u` is https, or http to a loopback host (a laptop's or a test's issuer).
fn secure_url(u: &str) -> bool {
    url::Url::parse(u).is_ok_and(|x| crate::config::https_or_loopback(&x))
}

/// Problems of the `oidc` option, each naming its entry and field.
pub fn validate(issuers: &[OidcIssuer], out: &mut Vec<String>) {
    for (i, o) in issuers.iter().enumerate() {
        let p = format!("oidc[{i}]");
        if !secure_url(&o.issuer) {
            out.push(format!(
                "{p}.issuer: '{}' must be an https:// URL (http:// only to a loopback address)",
                o.issuer
            ));
        }
        if o.audiences.is_empty() || o.audiences.iter().any(|a| a.trim().is_empty()) {
            out.push(format!(
                "{p}.audiences: name at least one audience (what Bridle is registered as at the issuer), none empty"
            ));
        }
        if let Some(j) = &o.jwks_uri
            && !secure_url(j)
        {
            out.push(format!(
                "{p}.jwks_uri: '{j}' must be an https:// URL (http:// only to a loopback address)"
            ));
        }
        match &o.tenant {
            Some(t) => {
                if let Err(e) = crate::ids::check_name(t) {
                    out.push(format!("{p}.tenant: {e}"));
                }
            }
            None if o.tenant_claim.trim().is_empty() => out.push(format!(
                "{p}.tenant_claim: set it, or set tenant (every token needs a tenant)"
            )),
            None => {}
        }
        for (group, roles) in &o.group_roles {
            for r in roles {
                if let Err(e) = Role::parse(r) {
                    out.push(format!("{p}.group_roles.{group}: {e}"));
                }
            }
        }
        if issuers[..i].iter().any(|x| x.issuer == o.issuer) {
            out.push(format!("{p}.issuer: '{}' is listed twice", o.issuer));
        }
    }
}

/// An issuer's keys, as last fetched.
#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    /// Keys without a `kid` (a token without one may use any of them).
    anonymous: Vec<(DecodingKey, Option<Algorithm>)>,
    fetched: Option<Instant>,
}

struct Issuer {
    cfg: OidcIssuer,
    keys: RwLock<Arc<Keys>>,
    /// One fetch at a time; who waited sees its result.
    fetching: tokio::sync::Mutex<()>,
}

/// The configured issuers, their keys, and the HTTP client that fetches them.
pub struct Oidc {
    issuers: Vec<Issuer>,
    http: reqwest::Client,
}

fn unauthenticated(why: impl Into<String>) -> Error {
    Error::Unauthenticated(why.into())
}

/// Claim values as strings: an array of strings, or one space-separated string.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => vec![],
    }
}

/// The asymmetric algorithms a token may use.
fn asymmetric(a: Algorithm) -> bool {
    !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl Oidc {
    /// None when no issuer is configured.
    pub fn new(issuers: &[OidcIssuer]) -> Option<Arc<Self>> {
        if issuers.is_empty() {
            return None;
        }
        let http = crate::http_client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .ok()?;
        Some(Arc::new(Self {
            issuers: issuers
                .iter()
                .map(|cfg| Issuer {
                    cfg: cfg.clone(),
                    keys: RwLock::default(),
                    fetching: tokio::sync::Mutex::new(()),
                })
                .collect(),
            http,
        }))
    }

    /// Whether `token` looks like a JWT (three base64url parts) rather than an API key.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.starts_with("ey") && token.split('.').count() == 3
    }

    /// The caller a token stands for, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Principal, Error> {
        if token.len() > MAX_TOKEN {
            return Err(unauthenticated(format!(
                "the bearer token is longer than {MAX_TOKEN} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthenticated(format!("the bearer token is not a valid JWT: {e}")))?;
        if !asymmetric(header.alg) {
            return Err(unauthenticated(format!(
                "the token is signed with {:?}; only asymmetric algorithms (RS*, PS*, ES*, EdDSA) are accepted",
                header.alg
            )));
        }
        // The issuer, read before the signature is checked, only to choose whose keys check it.
        let iss = token
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| unauthenticated("the token has no issuer ('iss' claim)"))?;
        let Some(issuer) = self.issuers.iter().find(|i| i.cfg.issuer == iss) else {
            return Err(unauthenticated(format!(
                "the token's issuer '{}' is not one this service trusts",
                crate::redact::quote(&iss)
            )));
        };
        let key = self.key(issuer, header.kid.as_deref(), header.alg).await?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&issuer.cfg.issuer]);
        v.set_audience(&issuer.cfg.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = issuer.cfg.leeway.as_secs();
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &v)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                unauthenticated(match e.kind() {
                    K::ExpiredSignature => "the token has expired".to_string(),
                    K::ImmatureSignature => "the token is not valid yet (nbf)".to_string(),
                    K::InvalidAudience => format!(
                        "the token's audience is not one this service accepts ({})",
                        issuer.cfg.audiences.join(", ")
                    ),
                    K::InvalidIssuer => "the token's issuer does not match".to_string(),
                    K::InvalidSignature => "the token's signature does not verify".to_string(),
                    K::MissingRequiredClaim(c) => format!("the token has no '{c}' claim"),
                    other => format!("the token is not valid: {other:?}"),
                })
            })?;
        self.principal(&issuer.cfg, &data.claims)
    }

    /// Maps verified claims to the caller.
    fn principal(
        &self,
        cfg: &OidcIssuer,
        claims: &serde_json::Map<String, Value>,
    ) -> Result<Principal, Error> {
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let tenant = match &cfg.tenant {
            Some(t) => t.clone(),
            None => {
                let t = claims
                    .get(&cfg.tenant_claim)
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        Error::PermissionDenied(format!(
                            "the token of '{sub}' has no '{}' claim naming a tenant, and issuer {} is not bound to one",
                            cfg.tenant_claim, cfg.issuer
                        ))
                    })?;
                crate::ids::check_name(t).map_err(|e| {
                    Error::PermissionDenied(format!(
                        "the token's '{}' claim is not a tenant name: {e}",
                        cfg.tenant_claim
                    ))
                })?;
                t.to_string()
            }
        };
        let mut roles: Vec<Role> = strings(claims.get(&cfg.roles_claim))
            .iter()
            .filter_map(|r| Role::parse(r).ok())
            .collect();
        for g in strings(claims.get(&cfg.groups_claim)) {
            if let Some(rs) = cfg.group_roles.get(&g) {
                roles.extend(rs.iter().filter_map(|r| Role::parse(r).ok()));
            }
        }
        roles.sort();
        roles.dedup();
        let groups = strings(claims.get(&cfg.groups_claim));
        let name = [cfg.name_claim.as_str(), "email"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str))
            .unwrap_or(&sub)
            .to_string();
        Ok(Principal {
            id: format!("oidc:{sub}"),
            name,
            tenant: Some(tenant),
            roles,
            service: false,
            groups,
        })
    }

    /// The key for `kid` (or, for a token without one, the one key the issuer has),
    /// fetching the issuer's keys when they are old or do not hold it.
    async fn key(
        &self,
        issuer: &Issuer,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, Error> {
        let find = |keys: &Keys| -> Option<(DecodingKey, Option<Algorithm>)> {
            match kid {
                Some(k) => keys.by_kid.get(k).cloned(),
                None if keys.anonymous.len() + keys.by_kid.len() == 1 => keys
                    .anonymous
                    .first()
                    .cloned()
                    .or_else(|| keys.by_kid.values().next().cloned()),
                None => None,
            }
        };
        let current = issuer
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let age = current.fetched.map(|t| t.elapsed());
        let fresh = age.is_some_and(|a| a < KEYS_REFRESH);
        let found = match (fresh, find(&current)) {
            (true, Some(k)) => Some(k),
            (_, found) => {
                let refreshed = self.refresh(issuer, current.fetched).await;
                match (refreshed, found) {
                    (Ok(keys), _) => find(&keys),
                    // The issuer cannot be reached: keys it gave before stay good for a while.
                    (Err(e), Some(k)) => {
                        if age.is_some_and(|a| a < KEYS_TTL) {
                            tracing::warn!(issuer = %issuer.cfg.issuer, error = %e, "cannot fetch the OIDC issuer's keys; using the ones fetched before");
                            Some(k)
                        } else {
                            return Err(e);
                        }
                    }
                    (Err(e), None) => return Err(e),
                }
            }
        };
        let Some((key, key_alg)) = found else {
            return Err(unauthenticated(match kid {
                Some(k) => format!(
                    "the token's signing key '{}' is not among issuer {}'s keys",
                    crate::redact::quote(k),
                    issuer.cfg.issuer
                ),
                None => format!(
                    "the token names no signing key ('kid') and issuer {} has several",
                    issuer.cfg.issuer
                ),
            }));
        };
        if let Some(a) = key_alg
            && a != alg
        {
            return Err(unauthenticated(format!(
                "the token is signed with {alg:?} but its key is for {a:?}"
            )));
        }
        Ok(key)
    }

    /// Fetches the issuer's keys unless someone did within [`REFETCH_GAP`] (or since `seen`).
    async fn refresh(&self, issuer: &Issuer, seen: Option<Instant>) -> Result<Arc<Keys>, Error> {
        let _one = issuer.fetching.lock().await;
        let current = issuer
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if current.fetched != seen || current.fetched.is_some_and(|t| t.elapsed() < REFETCH_GAP) {
            return Ok(current);
        }
        let unavailable = |why: String| Error::Unavailable {
            what: format!("the signing keys of OIDC issuer {}", issuer.cfg.issuer),
            reason: why,
        };
        let jwks_uri = match &issuer.cfg.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.cfg.issuer.trim_end_matches('/')
                );
                let doc: Value = self.get_json(&url).await.map_err(unavailable)?;
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .filter(|u| secure_url(u))
                    .ok_or_else(|| unavailable(format!("{url} names no usable jwks_uri")))?
                    .to_string()
            }
        };
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(self.get_json(&jwks_uri).await.map_err(unavailable)?)
                .map_err(|e| unavailable(format!("{jwks_uri} is not a JWK set: {e}")))?;
        let mut keys = Keys {
            fetched: Some(Instant::now()),
            ..Default::default()
        };
        for jwk in &set.keys {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                .filter(|a| asymmetric(*a));
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), (key, alg));
                }
                None => keys.anonymous.push((key, alg)),
            }
        }
        tracing::info!(issuer = %issuer.cfg.issuer, keys = keys.by_kid.len() + keys.anonymous.len(), "fetched OIDC signing keys");
        let keys = Arc::new(keys);
        *issuer.keys.write().unwrap_or_else(|p| p.into_inner()) = keys.clone();
        Ok(keys)
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("{url} answered {}", r.status()));
        }
        let bytes = r.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        if bytes.len() > 1024 * 1024 {
            return Err(format!("{url} answered more than 1 MiB"));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("{url} is not JSON: {e}"))
    }
}

#[cfg(test)]
mod tests;
