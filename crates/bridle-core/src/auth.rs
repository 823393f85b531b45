//! Who is calling, and what they may do.
//!
//! Callers present a Bridle API key (`authorization: Bearer bk_...`); keys are stored hashed
//! (SHA-256: they are long random strings, so a slow hash buys nothing) with a tenant and roles.
//! People may present an OIDC token (a JWT) from an issuer the `oidc` option trusts instead;
//! its claims give the tenant and roles (see [`crate::oidc`]).
//! Services calling services present the deployment's internal token instead (until mTLS
//! certificates name them: with mutual TLS a verified client certificate's CN is the calling
//! service). `auth = "keys"` is the default; with `auth = "off"` (which `bridle dev` and the
//! tests set explicitly) every caller is an anonymous admin of any tenant.
//!
//! The [`AuthLayer`] authenticates every gRPC request (health and reflection excepted) and puts
//! the [`Principal`] in the request's extensions; handlers read it with [`principal`], which
//! fails closed: a request that did not pass the layer has no roles at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::redis_util::RedisConn;
use rand::Rng as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::Error;
use crate::ids::TenantId;
use crate::redis_util::Keys;

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything within the key's tenant.
    Admin,
    /// Applies manifests, starts and cancels runs.
    Operator,
    /// Decides approvals.
    Approver,
    /// Reads runs, events, approvals and manifests.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "approver" => Ok(Role::Approver),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!(
                "'{other}' is not a role (admin, operator, approver, viewer)"
            )),
        }
    }
}

/// The caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Key id ("key_..."), service name, or "anonymous".
    pub id: String,
    /// Human-readable name of the key or service.
    pub name: String,
    /// The tenant the caller is bound to; `None` = any tenant (services, auth off).
    pub tenant: Option<String>,
    pub roles: Vec<Role>,
    /// A Bridle service, not a person or an application.
    pub service: bool,
    /// The person's groups (an OIDC token's groups claim); empty for keys and services.
    pub groups: Vec<String>,
}

impl Principal {
    /// Everyone, when auth is off.
    pub fn anonymous() -> Self {
        Principal {
            id: "anonymous".into(),
            name: "anonymous".into(),
            tenant: None,
            roles: vec![Role::Admin],
            service: false,
            groups: vec![],
        }
    }

    pub fn service(name: &str) -> Self {
        Principal {
            id: format!("service:{name}"),
            name: name.into(),
            tenant: None,
            roles: vec![Role::Admin],
            service: true,
            groups: vec![],
        }
    }

    /// A request that did not pass the auth layer: may do nothing.
    pub fn nobody() -> Self {
        Principal {
            id: "nobody".into(),
            name: "unauthenticated".into(),
            tenant: Some(String::new()),
            roles: vec![],
            service: false,
            groups: vec![],
        }
    }

    /// Admin implies every role; operator and approver each imply viewer.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&Role::Admin)
            || self.roles.contains(&role)
            || (role == Role::Viewer
                && self
                    .roles
                    .iter()
                    .any(|r| matches!(r, Role::Operator | Role::Approver)))
    }

    /// What the caller is: `service`, `anonymous` (auth off), `user` (a person's OIDC token)
    /// or `api_key`; [`kind_word`] says it in a message.
    pub fn kind(&self) -> &'static str {
        if self.service {
            "service"
        } else if self.id == "anonymous" {
            "anonymous"
        } else if self.id.starts_with("oidc:") {
            "user"
        } else {
            "api_key"
        }
    }

    /// The caller as runs, histories and the spend ledger record it.
    pub fn actor(&self) -> bridle_proto::Actor {
        bridle_proto::Actor {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: actor_kind(self.kind()) as i32,
        }
    }

    /// Whom a request acts for: the actor it names when a service sends it (the orchestrator
    /// passing on its caller), else the caller itself, whatever it names.
    pub fn acting_for(&self, named: Option<&bridle_proto::Actor>) -> bridle_proto::Actor {
        match named {
            Some(a) if self.service && !a.id.is_empty() => a.clone(),
            _ => self.actor(),
        }
    }

    pub fn require(&self, role: Role) -> Result<(), Error> {
        if self.has(role) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "{} '{}' does not have the {} role (it has: {})",
                kind_word(self.kind()),
                self.name,
                role.as_str(),
                if self.roles.is_empty() {
                    "none".to_string()
                } else {
                    self.roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )))
        }
    }

    /// The tenant a request acts for, from its `tenant` field: the one rule of every service
    /// (see [`Principal::tenant_in`]).
    pub fn tenant_for(&self, requested: &str) -> Result<TenantId, Error> {
        self.tenant_in("tenant", requested)
    }

    /// The tenant a request acts for, from its field `field` (`tenant`, `scope.tenant`), the
    /// same in every service and RPC:
    /// - a caller bound to a tenant (an API key, a person's token) acts for its own: an empty
    ///   field or its own name is its tenant, another name is refused (PERMISSION_DENIED);
    /// - a caller bound to none (a Bridle service; anyone when auth is off) acts for the tenant
    ///   named, and for `default` when the field is empty.
    ///
    /// A name given must be a valid tenant name (INVALID_ARGUMENT naming `field`), checked
    /// first: no tenant can exist under an invalid name, and a refusal then never quotes one.
    /// The answer is a [`TenantId`]: nothing downstream checks it again.
    pub fn tenant_in(&self, field: &str, requested: &str) -> Result<TenantId, Error> {
        let named = if requested.is_empty() {
            None
        } else {
            Some(
                TenantId::parse(requested)
                    .map_err(|e| Error::InvalidArgument(format!("{field}: {e}")))?,
            )
        };
        match (&self.tenant, named) {
            (Some(t), None) => TenantId::parse(t).map_err(|e| {
                Error::PermissionDenied(format!(
                    "{} '{}' is bound to a tenant whose name is not valid: {e}",
                    kind_word(self.kind()),
                    self.name,
                ))
            }),
            (Some(t), Some(n)) if n == *t => Ok(n),
            (Some(t), Some(n)) => Err(Error::PermissionDenied(format!(
                "{} '{}' belongs to tenant '{t}' and cannot act for tenant '{n}'",
                kind_word(self.kind()),
                self.name,
            ))),
            (None, None) => Ok(TenantId::default_tenant()),
            (None, Some(n)) => Ok(n),
        }
    }

    /// The tenants a read that may span tenants covers (the approvals event feed, the list of
    /// API keys): [`Principal::tenant_for`]'s answer, except that a caller bound to no tenant
    /// naming none reads every tenant (`None`), which is what the orchestrator's approval
    /// listener and an operator listing keys ask for.
    pub fn tenants_for(&self, requested: &str) -> Result<Option<TenantId>, Error> {
        if self.tenant.is_none() && requested.is_empty() {
            return Ok(None);
        }
        self.tenant_for(requested).map(Some)
    }

    /// Whether the caller may see things of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }
}

/// A caller's kind word ([`Principal::kind`], as runs and histories store it) as the
/// contracts' `ActorKind`; a word it does not know (none is stored) is UNSPECIFIED.
pub fn actor_kind(word: &str) -> bridle_proto::ActorKind {
    use bridle_proto::ActorKind as K;
    match word {
        "api_key" => K::ApiKey,
        "user" => K::User,
        "service" => K::Service,
        "anonymous" => K::Anonymous,
        _ => K::Unspecified,
    }
}

/// The word of an `ActorKind` (`Actor.kind`): the inverse of [`actor_kind`]; empty for
/// UNSPECIFIED and for a number this build does not know.
pub fn actor_kind_word(kind: i32) -> &'static str {
    use bridle_proto::ActorKind as K;
    match K::try_from(kind).unwrap_or(K::Unspecified) {
        K::ApiKey => "api_key",
        K::User => "user",
        K::Service => "service",
        K::Anonymous => "anonymous",
        K::Unspecified => "",
    }
}

/// A caller's kind ([`Principal::kind`]) in a message: "API key", "user", "service".
pub fn kind_word(kind: &str) -> &str {
    match kind {
        "api_key" => "API key",
        "" => "caller",
        k => k,
    }
}

/// The principal of a gRPC request (fails closed: no principal, no roles).
pub fn principal<T>(req: &tonic::Request<T>) -> Principal {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::nobody)
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Every caller is an anonymous admin: only where nobody else can reach the services
    /// (`bridle dev` and the tests choose it explicitly).
    Off,
    /// API keys for people and applications; services prove themselves with the internal
    /// token or their mutual-TLS client certificate. The default.
    #[default]
    Keys,
}

/// A stored API key (never its plaintext).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub roles: Vec<Role>,
    pub created_ms: i64,
    #[serde(default)]
    pub revoked: bool,
    /// When the key stops working (unset: never). A rotation sets the old key's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    /// Who created the key (a caller's id: `key_...`, `oidc:<sub>`, `service:<name>`); empty
    /// for keys made before this was recorded, and for `bridle keys bootstrap`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_by: String,
    /// Who revoked it, and when.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revoked_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<i64>,
    /// The key this one replaced (`bridle keys rotate`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rotated_from: String,
}

impl KeyRecord {
    /// A new key's record: a fresh id, created now, not revoked.
    fn new(tenant: &str, name: &str, roles: &[Role]) -> Self {
        KeyRecord {
            id: format!("key_{}", ulid::Ulid::new().to_string().to_lowercase()),
            name: name.to_string(),
            tenant: tenant.to_string(),
            roles: roles.to_vec(),
            created_ms: crate::timeutil::now_ms(),
            revoked: false,
            expires_ms: None,
            created_by: String::new(),
            revoked_by: String::new(),
            revoked_ms: None,
            rotated_from: String::new(),
        }
    }

    /// Whether the key works now: not revoked, not expired.
    pub fn usable(&self, now_ms: i64) -> bool {
        !self.revoked && self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

/// How a key is made: its life and who makes it.
#[derive(Clone, Debug, Default)]
pub struct NewKey {
    /// How long it works (unset: until revoked).
    pub expires_in: Option<Duration>,
    /// The caller's id, recorded on the key.
    pub created_by: String,
    /// The key it replaces, when a rotation makes it.
    pub rotated_from: String,
}

/// What [`ApiKeyStore::rotate`] made.
#[derive(Debug)]
pub struct Rotated {
    pub plaintext: String,
    pub new: KeyRecord,
    pub old: KeyRecord,
}

/// API keys in Redis, by the SHA-256 of their plaintext.
#[derive(Clone)]
pub struct ApiKeyStore {
    conn: RedisConn,
    by_hash: String,
    by_id: String,
}

pub const KEY_PREFIX: &str = "bk_";

/// What [`ApiKeyStore::ensure`] found or did.
#[derive(Debug)]
pub enum Ensured {
    Created(KeyRecord),
    Already(KeyRecord),
    Revoked(KeyRecord),
}

/// A key's plaintext as Bridle makes them: `bk_` and 32 to 125 letters and digits. The error
/// never quotes the value.
pub fn check_plaintext(plaintext: &str) -> Result<(), Error> {
    let body = plaintext
        .strip_prefix(KEY_PREFIX)
        .ok_or_else(|| Error::InvalidArgument(format!("an API key starts with '{KEY_PREFIX}'")))?;
    if !(32..=125).contains(&body.len()) || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::InvalidArgument(format!(
            "an API key is '{KEY_PREFIX}' and 32 to 125 letters and digits (this one has {} \
             characters after the prefix{})",
            body.len(),
            if body.bytes().all(|b| b.is_ascii_alphanumeric()) {
                ""
            } else {
                ", not all letters and digits"
            }
        )));
    }
    Ok(())
}

fn hash(plaintext: &str) -> String {
    hex::encode(sha2::Sha256::digest(plaintext.as_bytes()))
}

impl ApiKeyStore {
    pub fn new(conn: RedisConn, keys: &Keys) -> Self {
        Self {
            conn,
            by_hash: keys.key("auth:{keys}"),
            by_id: keys.key("auth:{keys}:ids"),
        }
    }

    /// Creates a key that works until revoked; the plaintext is returned once and never
    /// stored.
    pub async fn create(
        &self,
        tenant: &str,
        name: &str,
        roles: &[Role],
    ) -> Result<(String, KeyRecord), Error> {
        self.create_with(tenant, name, roles, &NewKey::default())
            .await
    }

    /// [`Self::create`], with a life and its creator recorded.
    pub async fn create_with(
        &self,
        tenant: &str,
        name: &str,
        roles: &[Role],
        how: &NewKey,
    ) -> Result<(String, KeyRecord), Error> {
        crate::ids::check_name(tenant)
            .map_err(|e| Error::InvalidArgument(format!("tenant: {e}")))?;
        if name.trim().is_empty() {
            return Err(Error::InvalidArgument("name: must not be empty".into()));
        }
        if roles.is_empty() {
            return Err(Error::InvalidArgument(
                "roles: at least one role is required".into(),
            ));
        }
        let secret: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(40)
            .map(char::from)
            .collect();
        let plaintext = format!("{KEY_PREFIX}{secret}");
        let mut rec = KeyRecord::new(tenant, name, roles);
        rec.created_by = how.created_by.clone();
        rec.rotated_from = how.rotated_from.clone();
        if let Some(d) = how.expires_in {
            if d < Duration::from_secs(60) {
                return Err(Error::InvalidArgument(
                    "expires_in: at least one minute".into(),
                ));
            }
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            rec.expires_ms = Some(rec.created_ms.saturating_add(ms));
        }
        let json = serde_json::to_string(&rec).map_err(Error::internal)?;
        let h = hash(&plaintext);
        let mut c = self.conn.clone();
        let () = redis::pipe()
            .atomic()
            .hset(&self.by_hash, &h, json)
            .ignore()
            .hset(&self.by_id, &rec.id, &h)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok((plaintext, rec))
    }

    /// Registers `plaintext`, a key made elsewhere (a deployment's bootstrap admin key, kept
    /// in a Secret), unless it is registered already: idempotent, and safe when several
    /// replicas start at once (the first write wins). A key that was revoked stays revoked.
    pub async fn ensure(
        &self,
        plaintext: &str,
        tenant: &str,
        name: &str,
        roles: &[Role],
    ) -> Result<Ensured, Error> {
        check_plaintext(plaintext)?;
        crate::ids::check_name(tenant)
            .map_err(|e| Error::InvalidArgument(format!("tenant: {e}")))?;
        let h = hash(plaintext);
        let mut c = self.conn.clone();
        let existing: Option<String> = redis::cmd("HGET")
            .arg(&self.by_hash)
            .arg(&h)
            .query_async(&mut c)
            .await?;
        if let Some(json) = existing {
            let rec: KeyRecord = serde_json::from_str(&json).map_err(Error::internal)?;
            return Ok(if rec.revoked {
                Ensured::Revoked(rec)
            } else {
                Ensured::Already(rec)
            });
        }
        let rec = KeyRecord::new(tenant, name, roles);
        let json = serde_json::to_string(&rec).map_err(Error::internal)?;
        let won: bool = redis::cmd("HSETNX")
            .arg(&self.by_hash)
            .arg(&h)
            .arg(json)
            .query_async(&mut c)
            .await?;
        if !won {
            // Another replica registered it between the read and the write.
            return Ok(Ensured::Already(rec));
        }
        let () = redis::cmd("HSET")
            .arg(&self.by_id)
            .arg(&rec.id)
            .arg(&h)
            .query_async(&mut c)
            .await
            .map(|_: i64| ())?;
        Ok(Ensured::Created(rec))
    }

    pub async fn verify(&self, plaintext: &str) -> Result<Option<KeyRecord>, Error> {
        if !plaintext.starts_with(KEY_PREFIX) || plaintext.len() > 128 {
            return Ok(None);
        }
        let mut c = self.conn.clone();
        let json: Option<String> = redis::cmd("HGET")
            .arg(&self.by_hash)
            .arg(hash(plaintext))
            .query_async(&mut c)
            .await?;
        let Some(json) = json else { return Ok(None) };
        let rec: KeyRecord = serde_json::from_str(&json).map_err(Error::internal)?;
        Ok(rec.usable(crate::timeutil::now_ms()).then_some(rec))
    }

    /// A key by id.
    pub async fn get(&self, id: &str) -> Result<Option<KeyRecord>, Error> {
        Ok(self.lookup(id).await?.map(|(_, rec)| rec))
    }

    /// A key's record by id, with the hash it is stored under.
    async fn lookup(&self, id: &str) -> Result<Option<(String, KeyRecord)>, Error> {
        let mut c = self.conn.clone();
        let h: Option<String> = redis::cmd("HGET")
            .arg(&self.by_id)
            .arg(id)
            .query_async(&mut c)
            .await?;
        let Some(h) = h else { return Ok(None) };
        let json: Option<String> = redis::cmd("HGET")
            .arg(&self.by_hash)
            .arg(&h)
            .query_async(&mut c)
            .await?;
        let Some(json) = json else { return Ok(None) };
        let rec = serde_json::from_str(&json).map_err(Error::internal)?;
        Ok(Some((h, rec)))
    }

    /// Writes a changed record over the stored one at hash `h`.
    async fn store(&self, h: &str, rec: &KeyRecord) -> Result<(), Error> {
        let () = redis::cmd("HSET")
            .arg(&self.by_hash)
            .arg(h)
            .arg(serde_json::to_string(rec).map_err(Error::internal)?)
            .query_async(&mut self.conn.clone())
            .await
            .map(|_: i64| ())?;
        Ok(())
    }

    /// Replaces key `id` without downtime: a new key with its tenant, name and roles, while the
    /// old one keeps working for `overlap` (zero: it stops now), so clients can move over.
    pub async fn rotate(
        &self,
        id: &str,
        overlap: Duration,
        how: &NewKey,
    ) -> Result<Rotated, Error> {
        let Some((h, mut old)) = self
            .lookup(id)
            .await?
            .filter(|(_, r)| r.usable(crate::timeutil::now_ms()))
        else {
            return Err(Error::NotFound(format!(
                "API key '{}' does not exist, or is revoked or expired",
                crate::redact::quote(id)
            )));
        };
        let how = NewKey {
            rotated_from: old.id.clone(),
            ..how.clone()
        };
        let (plaintext, new) = self
            .create_with(&old.tenant, &old.name, &old.roles, &how)
            .await?;
        let ms = i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX);
        let ends = crate::timeutil::now_ms().saturating_add(ms);
        old.expires_ms = Some(old.expires_ms.map_or(ends, |e| e.min(ends)));
        self.store(&h, &old).await?;
        Ok(Rotated {
            plaintext,
            new,
            old,
        })
    }

    /// Keys of a tenant (all tenants with `None`).
    pub async fn list(&self, tenant: Option<&str>) -> Result<Vec<KeyRecord>, Error> {
        let mut c = self.conn.clone();
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&self.by_hash)
            .query_async(&mut c)
            .await?;
        let mut out: Vec<KeyRecord> = all
            .values()
            .filter_map(|j| serde_json::from_str::<KeyRecord>(j).ok())
            .filter(|r| tenant.is_none_or(|t| r.tenant == t))
            .collect();
        out.sort_by_key(|r| r.created_ms);
        Ok(out)
    }

    pub async fn revoke(&self, id: &str) -> Result<bool, Error> {
        self.revoke_by(id, "").await
    }

    /// Revokes key `id`, recording who did.
    pub async fn revoke_by(&self, id: &str, by: &str) -> Result<bool, Error> {
        let Some((h, mut rec)) = self.lookup(id).await? else {
            return Ok(false);
        };
        rec.revoked = true;
        rec.revoked_by = by.to_string();
        rec.revoked_ms = Some(crate::timeutil::now_ms());
        self.store(&h, &rec).await?;
        Ok(true)
    }
}

/// How long a verified key is trusted without asking Redis again; a revocation takes at most
/// this long to reach every replica.
const CACHE_TTL: Duration = Duration::from_secs(10);

/// A verified key: its caller, when it was verified, and when it expires.
type Cached = (Principal, Instant, Option<i64>);

#[derive(Clone)]
pub struct Authenticator {
    mode: AuthMode,
    store: Option<ApiKeyStore>,
    internal_token: Option<SecretString>,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    /// Trusted OIDC issuers, when configured: bearer tokens that are JWTs are theirs.
    oidc: Option<Arc<crate::oidc::Oidc>>,
}

pub const SERVICE_TOKEN_HEADER: &str = "x-bridle-service-token";
pub const SERVICE_NAME_HEADER: &str = "x-bridle-service";

impl Authenticator {
    pub fn new(
        mode: AuthMode,
        internal_token: Option<SecretString>,
        store: Option<ApiKeyStore>,
    ) -> Self {
        Self {
            mode,
            store,
            internal_token,
            cache: Arc::default(),
            oidc: None,
        }
    }

    /// A service that people call: API keys from `store`, and OIDC tokens from the issuers
    /// of the server options' `oidc`.
    pub fn for_people(opts: &crate::config::ServerOptions, store: ApiKeyStore) -> Self {
        let mut a = Self::new(opts.auth, opts.internal_token.clone(), Some(store));
        a.oidc = crate::oidc::Oidc::new(&opts.oidc);
        a
    }

    pub fn off() -> Self {
        Self::new(AuthMode::Off, None, None)
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Authenticates a bearer token (an API key, or an OIDC token), for HTTP fronts.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Principal, Error> {
        if self.mode == AuthMode::Off {
            return Ok(Principal::anonymous());
        }
        if crate::oidc::Oidc::looks_like_jwt(token) {
            return match &self.oidc {
                // Why a token is refused is logged, not told: a forger learns nothing.
                Some(o) => o.verify(token).await.map_err(|e| match e {
                    Error::Unauthenticated(why) => {
                        tracing::warn!(reason = %why, "OIDC token refused");
                        Error::Unauthenticated(
                            "the bearer token (an OIDC token) is not valid here; the service's log says why".into(),
                        )
                    }
                    other => other,
                }),
                None => Err(Error::Unauthenticated(
                    "this service trusts no OIDC issuer (its `oidc` option is empty): send a Bridle API key".into(),
                )),
            };
        }
        let h = hash(token);
        if let Some((p, at, expires)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&h)
            && at.elapsed() < CACHE_TTL
            && expires.is_none_or(|e| crate::timeutil::now_ms() < e)
        {
            return Ok(p.clone());
        }
        let Some(store) = &self.store else {
            return Err(Error::Unauthenticated(
                "this service does not accept API keys".into(),
            ));
        };
        match store.verify(token).await? {
            Some(rec) => {
                let p = Principal {
                    id: rec.id,
                    name: rec.name,
                    tenant: Some(rec.tenant),
                    roles: rec.roles,
                    service: false,
                    groups: vec![],
                };
                self.cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(h, (p.clone(), Instant::now(), rec.expires_ms));
                Ok(p)
            }
            None => Err(Error::Unauthenticated(
                "the API key is not valid (unknown, revoked or expired)".into(),
            )),
        }
    }

    /// Authenticates a request from its headers.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, Error> {
        if self.mode == AuthMode::Off {
            return Ok(Principal::anonymous());
        }
        if let (Some(expected), Some(got)) =
            (&self.internal_token, headers.get(SERVICE_TOKEN_HEADER))
        {
            if constant_time_eq(expected.expose_secret().as_bytes(), got.as_bytes()) {
                let name = headers
                    .get(SERVICE_NAME_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("service");
                return Ok(Principal::service(name));
            }
            return Err(Error::Unauthenticated(
                "the service token is not valid".into(),
            ));
        }
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(Error::Unauthenticated(
                "an API key is required: send 'authorization: Bearer <key>'".into(),
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                Error::Unauthenticated("the authorization header must be 'Bearer <key>'".into())
            })?;
        self.authenticate_bearer(token.trim()).await
    }

    pub fn layer(&self) -> AuthLayer {
        AuthLayer { auth: self.clone() }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Tower layer for tonic servers: authenticates each request and stores its [`Principal`].
#[derive(Clone)]
pub struct AuthLayer {
    auth: Authenticator,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Authenticator,
}

impl<S, B, RB> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let path = req.uri().path();
            let open =
                path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.");
            // A client certificate verified against the deployment's CA names the service.
            let peer =
                req.extensions()
                    .get::<tonic::transport::server::TlsConnectInfo<
                        tonic::transport::server::TcpConnectInfo,
                    >>()
                    .and_then(|i| i.peer_certs())
                    .and_then(|certs| certs.first().and_then(|c| common_name(c.as_ref())));
            if let Some(service) = peer {
                req.extensions_mut().insert(Principal::service(&service));
            } else if !open {
                match auth.authenticate(req.headers()).await {
                    Ok(p) => {
                        req.extensions_mut().insert(p);
                    }
                    Err(e) => return Ok(tonic::Status::from(e).into_http()),
                }
            }
            inner.call(req).await
        })
    }
}

/// The subject's common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_imply() {
        let p = |roles: Vec<Role>| Principal {
            roles,
            ..Principal::anonymous()
        };
        assert!(p(vec![Role::Admin]).has(Role::Approver));
        assert!(p(vec![Role::Operator]).has(Role::Viewer));
        assert!(!p(vec![Role::Operator]).has(Role::Approver));
        assert!(!p(vec![Role::Viewer]).has(Role::Operator));
        assert!(!Principal::nobody().has(Role::Viewer));
        let e = p(vec![Role::Viewer]).require(Role::Approver).unwrap_err();
        assert!(
            e.to_string()
                .contains("does not have the approver role (it has: viewer)"),
            "{e}"
        );
    }

    #[test]
    fn tenants_bind() {
        let p = Principal {
            tenant: Some("acme".into()),
            ..Principal::anonymous()
        };
        assert_eq!(p.tenant_for("").unwrap(), "acme");
        assert_eq!(p.tenant_for("acme").unwrap(), "acme");
        assert_eq!(
            p.tenant_for("globex").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(Principal::anonymous().tenant_for("").unwrap(), "default");
        assert_eq!(
            Principal::service("orchestrator").tenant_for("").unwrap(),
            "default"
        );
        assert_eq!(
            Principal::anonymous().tenant_for("globex").unwrap(),
            "globex"
        );
        assert!(p.sees("acme") && !p.sees("globex"));
        // A name that cannot be a tenant is refused by the field it came in, before anything.
        for who in [p.clone(), Principal::anonymous()] {
            let e = who.tenant_in("scope.tenant", "Not A Name").unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.to_string().starts_with("scope.tenant: "), "{e}");
        }
        // Reads across tenants: everything for an unbound caller naming none, else the rule.
        assert_eq!(Principal::anonymous().tenants_for("").unwrap(), None);
        assert_eq!(
            Principal::anonymous().tenants_for("globex").unwrap(),
            Some(TenantId::parse("globex").unwrap())
        );
        assert_eq!(
            p.tenants_for("").unwrap(),
            Some(TenantId::parse("acme").unwrap())
        );
        assert_eq!(
            p.tenants_for("globex").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn constant_time() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

/// Which Bridle service sent a request, for RPCs only one service may call (the tools service's
/// Execute, the broker's Resolve for a tool or a provider, EndRun).
///
/// The caller is the authenticated service principal: the common name of its mTLS client
/// certificate when mTLS is configured, else (auth on) the holder of the internal token, named
/// by `x-bridle-service`. The internal token is shared by every service, so without mTLS the
/// name is the token holder's word: only mTLS binds a name to a service. With auth off and no
/// mTLS the header's word is all there is: a guard against mistakes, not an enforcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A Bridle service, by name.
    Service(String),
    /// An API key or anything that is not a service.
    Other(String),
    /// Auth is off and the request did not say which service sent it.
    Unidentified,
}

impl Caller {
    pub fn of<T>(req: &tonic::Request<T>, auth: AuthMode) -> Caller {
        let p = principal(req);
        if p.service {
            return Caller::Service(p.name);
        }
        match auth {
            AuthMode::Off => match req
                .metadata()
                .get(SERVICE_NAME_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                Some(name) if !name.is_empty() => Caller::Service(name.to_string()),
                _ => Caller::Unidentified,
            },
            AuthMode::Keys => Caller::Other(p.name),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Caller::Service(n) => format!("service '{n}'"),
            Caller::Other(n) => format!("'{n}' (not a Bridle service)"),
            Caller::Unidentified => "an unidentified caller".into(),
        }
    }

    /// Whether the caller is `service`. An unidentified caller (auth off, no header: tools like
    /// grpcurl, or a service that does not say) is let through: with auth off anyone could say
    /// anything anyway.
    pub fn is(&self, service: &str) -> bool {
        match self {
            Caller::Service(n) => n == service,
            Caller::Other(_) => false,
            Caller::Unidentified => true,
        }
    }

    /// PERMISSION_DENIED unless the caller is `service`; `action` says what was refused.
    pub fn require(&self, service: &str, action: &str) -> Result<(), Error> {
        if self.is(service) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "{} may not {action}: only the {service} service may",
                self.describe()
            )))
        }
    }
}
