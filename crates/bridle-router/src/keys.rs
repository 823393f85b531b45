//! Provider credentials: `secret://` references of a target resolved through the secrets
//! broker, for the caller's scope, and cached no longer than the broker allows.
//!
//! Values are `SecretString`s: never logged, never in an error, never in Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bridle_core::client::Traced as Channel;
use bridle_core::manifest::{SecretRef, Target};
use bridle_core::redact::Redactor;
use bridle_proto::secrets_client::SecretsClient;
use bridle_proto::{ResolveRequest, Scope};
use secrecy::{ExposeSecret, SecretString};

use crate::error::FailureCode;
use crate::provider::TryError;
use crate::provider::http::Creds;

/// Who a value was resolved for: a grant to one agent must not serve another.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub tenant: String,
    pub agent: String,
    pub provider: String,
    pub name: String,
}

struct Cached {
    value: SecretString,
    expires: Instant,
}

/// Resolved values with their expiry.
#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<CacheKey, Cached>>,
}

const MAX_ENTRIES: usize = 4096;

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Cached>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<SecretString> {
        self.lock()
            .get(key)
            .filter(|c| c.expires > now)
            .map(|c| c.value.clone())
    }

    /// Keeps `value` for `ttl`; a zero TTL keeps nothing.
    pub fn put(&self, key: CacheKey, value: SecretString, ttl: Duration, now: Instant) {
        let mut map = self.lock();
        if ttl.is_zero() {
            map.remove(&key);
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, c| c.expires > now);
        }
        map.insert(
            key,
            Cached {
                value,
                expires: now + ttl,
            },
        );
    }

    pub fn forget(&self, key: &CacheKey) {
        self.lock().remove(key);
    }
}

/// What a failed `Secrets.Resolve` means for the call, and what to tell the operator. Every
/// code has its own arm: a router the broker does not accept is misconfigured, and must not be
/// reported as an outage that the orchestrator would retry forever.
fn broker_failure(code: tonic::Code) -> (FailureCode, &'static str) {
    use tonic::Code;
    match code {
        // The target names a secret the broker does not have or will not give to this scope:
        // fixing the manifest or the grant fixes it, retrying does not.
        Code::NotFound => (FailureCode::FailedPrecondition, "no such secret"),
        Code::PermissionDenied => (
            FailureCode::FailedPrecondition,
            "this scope may not resolve the secret: check the SecretBinding's grants",
        ),
        Code::FailedPrecondition => (FailureCode::FailedPrecondition, "the secret cannot be used"),
        Code::InvalidArgument => (
            FailureCode::FailedPrecondition,
            "the broker refused the target's secret reference",
        ),
        // The router itself is misconfigured: its identity is refused, or `secrets_url` is not
        // a broker that serves Resolve.
        Code::Unauthenticated => (
            FailureCode::Internal,
            "the broker does not accept the router's identity: check internal_token or the TLS client certificate",
        ),
        Code::Unimplemented => (
            FailureCode::Internal,
            "secrets_url does not point at a secrets broker that serves Resolve",
        ),
        // The broker is broken, or broke its contract.
        Code::Internal | Code::DataLoss => (FailureCode::Internal, "the broker failed"),
        Code::Ok | Code::AlreadyExists | Code::OutOfRange => {
            (FailureCode::Internal, "an answer Resolve never gives")
        }
        // Transient: the broker is down, overloaded, slow, or the call was cut off. tonic
        // reports a connection that broke mid-call as UNKNOWN.
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted => {
            (FailureCode::Unavailable, "the broker cannot be reached")
        }
        Code::ResourceExhausted => (FailureCode::ResourceExhausted, "the broker is overloaded"),
        Code::DeadlineExceeded => (
            FailureCode::DeadlineExceeded,
            "the broker did not answer in time",
        ),
    }
}

pub struct KeyResolver {
    client: SecretsClient<Channel>,
    cache: Cache,
    max_ttl: Duration,
}

/// The secret names a target refers to: its API key, then any header values.
fn referenced(target: &Target) -> Vec<String> {
    let refs = target.api_key.iter().chain(
        target
            .headers
            .values()
            .filter(|v| SecretRef::is_reference(v)),
    );
    let mut names: Vec<String> = refs
        .filter_map(|r| SecretRef::parse(r).ok())
        .map(|r| r.name().to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

impl KeyResolver {
    pub fn new(client: SecretsClient<Channel>, max_ttl: Duration) -> Self {
        Self {
            client,
            cache: Cache::default(),
            max_ttl,
        }
    }

    /// The target's credentials for `scope` (its `provider` already "route/target"). With
    /// `refresh`, cached values are dropped and resolved again (after a 401).
    pub async fn creds(
        &self,
        scope: &Scope,
        target: &Target,
        refresh: bool,
    ) -> Result<Creds, TryError> {
        let names = referenced(target);
        let key = |name: &str| CacheKey {
            tenant: scope.tenant.clone(),
            agent: scope.agent.clone(),
            provider: scope.provider.clone(),
            name: name.to_string(),
        };
        let now = Instant::now();
        let mut values: HashMap<String, SecretString> = HashMap::new();
        let mut missing = Vec::new();
        for n in &names {
            if refresh {
                self.cache.forget(&key(n));
            }
            match self.cache.get(&key(n), now) {
                Some(v) => {
                    values.insert(n.clone(), v);
                }
                None => missing.push(n.clone()),
            }
        }
        if !missing.is_empty() {
            let fail = |code, why: String| {
                TryError::rejected(
                    code,
                    format!(
                        "target '{}': cannot resolve its credentials: {why}",
                        target.name
                    ),
                )
            };
            let mut client = self.client.clone();
            let resp = client
                .resolve(ResolveRequest {
                    scope: Some(scope.clone()),
                    names: missing.clone(),
                    refresh,
                })
                .await
                .map_err(|s| {
                    let (code, what) = broker_failure(s.code());
                    fail(
                        code,
                        format!(
                            "the secrets broker answered {:?} ({what}): {}",
                            s.code(),
                            bridle_core::redact::preview(s.message(), 300)
                        ),
                    )
                })?
                .into_inner();
            for s in resp.secrets {
                let ttl = bridle_core::timeutil::std_duration(s.ttl.as_ref())
                    .unwrap_or_default()
                    .min(self.max_ttl);
                let value = SecretString::from(s.value);
                self.cache.put(key(&s.name), value.clone(), ttl, now);
                values.insert(s.name, value);
            }
            if let Some(n) = missing.iter().find(|n| !values.contains_key(*n)) {
                return Err(fail(
                    FailureCode::FailedPrecondition,
                    format!("the broker returned no value for secret '{n}'"),
                ));
            }
        }
        let lookup = |r: &str| -> Option<SecretString> {
            let name = SecretRef::parse(r).ok()?;
            values.get(name.name()).cloned()
        };
        let mut redactor = Redactor::default();
        for v in values.values() {
            redactor.add(v.expose_secret());
        }
        let mut headers = Vec::with_capacity(target.headers.len());
        for (name, value) in &target.headers {
            let v = if SecretRef::is_reference(value) {
                lookup(value).unwrap_or_else(|| SecretString::from(String::new()))
            } else {
                SecretString::from(value.clone())
            };
            headers.push((name.clone(), v));
        }
        Ok(Creds {
            api_key: target.api_key.as_deref().and_then(lookup),
            headers,
            redactor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str) -> CacheKey {
        CacheKey {
            tenant: "t".into(),
            agent: "a".into(),
            provider: "r/x".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_misconfigured_router_is_not_an_outage() {
        use tonic::Code;
        assert_eq!(
            broker_failure(Code::Unauthenticated).0,
            FailureCode::Internal
        );
        assert_eq!(broker_failure(Code::Unimplemented).0, FailureCode::Internal);
        assert_eq!(broker_failure(Code::Internal).0, FailureCode::Internal);
        assert_eq!(
            broker_failure(Code::PermissionDenied).0,
            FailureCode::FailedPrecondition
        );
        assert_eq!(
            broker_failure(Code::ResourceExhausted).0,
            FailureCode::ResourceExhausted
        );
        assert_eq!(
            broker_failure(Code::DeadlineExceeded).0,
            FailureCode::DeadlineExceeded
        );
        assert_eq!(
            broker_failure(Code::Unavailable).0,
            FailureCode::Unavailable
        );
    }

    #[test]
    fn values_expire_at_their_ttl() {
        let c = Cache::default();
        let t0 = Instant::now();
        c.put(
            k("key"),
            SecretString::from("v1".to_string()),
            Duration::from_secs(10),
            t0,
        );
        assert_eq!(
            c.get(&k("key"), t0 + Duration::from_secs(9))
                .unwrap()
                .expose_secret(),
            "v1"
        );
        assert!(c.get(&k("key"), t0 + Duration::from_secs(10)).is_none());
        assert!(c.get(&k("other"), t0).is_none());
    }

    #[test]
    fn zero_ttl_keeps_nothing_and_forget_drops() {
        let c = Cache::default();
        let t0 = Instant::now();
        c.put(
            k("key"),
            SecretString::from("v1".to_string()),
            Duration::from_secs(10),
            t0,
        );
        c.put(
            k("key"),
            SecretString::from("v2".to_string()),
            Duration::ZERO,
            t0,
        );
        assert!(c.get(&k("key"), t0).is_none());
        c.put(
            k("key"),
            SecretString::from("v3".to_string()),
            Duration::from_secs(10),
            t0,
        );
        c.forget(&k("key"));
        assert!(c.get(&k("key"), t0).is_none());
    }

    #[test]
    fn scopes_do_not_share_values() {
        let c = Cache::default();
        let t0 = Instant::now();
        c.put(
            k("key"),
            SecretString::from("v1".to_string()),
            Duration::from_secs(10),
            t0,
        );
        let other_agent = CacheKey {
            agent: "b".into(),
            ..k("key")
        };
        assert!(c.get(&other_agent, t0).is_none());
    }
}
