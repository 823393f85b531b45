//! Which engine decides for a tenant: Cedar over the tenant's `Policy` manifests, or the
//! built-in rules when it has none. Compiled policy sets are cached per tenant and rebuilt when
//! the tenant's policy version (bumped by every apply or delete through this service) moves.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bridle_core::manifest::Manifest;
use bridle_core::redis_util::RedisConn;
use bridle_core::store::ManifestStore;
use redis::AsyncCommands;

use crate::Error;
use crate::cedar::CedarEngine;
use crate::policy::{Decision, PolicyEngine, PolicyInput, Verdict};

/// A cached set is trusted this long even if no version bump was seen (a bump lost to a
/// crash between storing a policy and bumping its version heals within this time).
const MAX_AGE: Duration = Duration::from_secs(60);
/// Tenants kept compiled; past this the cache starts over (it is only a cache).
const MAX_TENANTS: usize = 10_000;

struct Cached {
    version: u64,
    loaded: Instant,
    engine: Arc<dyn PolicyEngine>,
}

pub struct Policies {
    manifests: ManifestStore,
    conn: RedisConn,
    versions_key: String,
    fallback: Arc<dyn PolicyEngine>,
    cache: RwLock<HashMap<String, Cached>>,
}

/// Stored policies that no longer compile (for example after a schema change): every call of
/// the tenant is denied until they are fixed, rather than decided by a partial set.
struct Broken(String);

impl PolicyEngine for Broken {
    fn evaluate(&self, _: &PolicyInput<'_>) -> Result<Verdict, Error> {
        Ok(Verdict {
            decision: Decision::Deny,
            reason: self.0.clone(),
            policies: vec!["builtin.broken_policies".into()],
        })
    }
}

impl Policies {
    pub fn new(
        manifests: ManifestStore,
        conn: RedisConn,
        versions_key: String,
        fallback: Arc<dyn PolicyEngine>,
    ) -> Self {
        Self {
            manifests,
            conn,
            versions_key,
            fallback,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The engine for `tenant`. An error means its policies could not be read (Redis).
    pub async fn engine(&self, tenant: &str) -> Result<Arc<dyn PolicyEngine>, Error> {
        let version: Option<u64> = self.conn.clone().hget(&self.versions_key, tenant).await?;
        let version = version.unwrap_or(0);
        if let Ok(cache) = self.cache.read()
            && let Some(c) = cache.get(tenant)
            && c.version == version
            && c.loaded.elapsed() < MAX_AGE
        {
            return Ok(c.engine.clone());
        }
        let stored = self.manifests.list(tenant, Some("Policy")).await?;
        let pairs: Vec<(String, String)> = stored
            .iter()
            .filter_map(|(m, _)| match m {
                Manifest::Policy(p) => Some((p.metadata.name.clone(), p.spec.cedar.clone())),
                _ => None,
            })
            .collect();
        let engine: Arc<dyn PolicyEngine> = if pairs.is_empty() {
            self.fallback.clone()
        } else {
            match CedarEngine::from_manifests(&pairs) {
                Ok(e) => Arc::new(e),
                Err(e) => {
                    tracing::error!(
                        tenant,
                        "stored policies do not compile; denying every call: {e}"
                    );
                    Arc::new(Broken(format!(
                        "{e}; every call is denied until it is fixed"
                    )))
                }
            }
        };
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= MAX_TENANTS {
                cache.clear();
            }
            cache.insert(
                tenant.to_string(),
                Cached {
                    version,
                    loaded: Instant::now(),
                    engine: engine.clone(),
                },
            );
        }
        Ok(engine)
    }

    /// Records that `tenant`'s policies changed, so every replica recompiles them.
    pub async fn changed(&self, tenant: &str) -> Result<(), Error> {
        let _: u64 = self
            .conn
            .clone()
            .hincr(&self.versions_key, tenant, 1)
            .await?;
        if let Ok(mut cache) = self.cache.write() {
            cache.remove(tenant);
        }
        Ok(())
    }
}
