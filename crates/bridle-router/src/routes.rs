//! The routes a replica has read, kept for `route_cache_ttl` so a call does not pay a Redis
//! round trip and a JSON decode for its route (the benchmark showed that round trip to be one
//! of the three network hops a call adds).
//!
//! A route found is kept for the TTL, then read again; a route not found is never kept, so a
//! newly applied route works at once. An updated or deleted route reaches every replica within
//! the TTL (1s by default; 0 reads Redis on every call).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridle_core::manifest::{Manifest, ModelRoute};
use bridle_core::store::ManifestStore;

use crate::Error;

pub const KIND: &str = "ModelRoute";

/// Entries kept at most; past it, expired ones are dropped first, then everything.
const MAX_ENTRIES: usize = 65_536;

/// (tenant, name) -> the route and when it was read.
type Cache = HashMap<(String, String), (Arc<ModelRoute>, Instant)>;

pub struct Routes {
    store: ManifestStore,
    ttl: Duration,
    cache: Mutex<Cache>,
}

impl Routes {
    pub fn new(store: ManifestStore, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The route `name` of `tenant`.
    pub async fn get(&self, tenant: &str, name: &str) -> Result<Arc<ModelRoute>, Error> {
        let key = (tenant.to_string(), name.to_string());
        if !self.ttl.is_zero()
            && let Some((r, at)) = self.lock().get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(r.clone());
        }
        let route = match self.store.get(KIND, tenant, name).await? {
            Some(Manifest::ModelRoute(r)) => Arc::new(r),
            Some(other) => {
                return Err(bridle_core::Error::internal(format!(
                    "stored {KIND} '{name}' decoded as {}",
                    other.kind()
                ))
                .into());
            }
            None => {
                self.lock().remove(&key);
                return Err(Error::RouteNotFound {
                    route: name.into(),
                    tenant: tenant.into(),
                });
            }
        };
        if !self.ttl.is_zero() {
            let mut cache = self.lock();
            if cache.len() >= MAX_ENTRIES {
                let ttl = self.ttl;
                cache.retain(|_, (_, at)| at.elapsed() < ttl);
                if cache.len() >= MAX_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(key, (route.clone(), Instant::now()));
        }
        Ok(route)
    }

    /// Every route of `tenant`, sorted by name (always read from Redis).
    pub async fn list(&self, tenant: &str) -> Result<Vec<ModelRoute>, Error> {
        let stored = self.store.list(tenant, Some(KIND)).await?;
        Ok(stored
            .into_iter()
            .filter_map(|(m, _)| match m {
                Manifest::ModelRoute(r) => Some(r),
                _ => None,
            })
            .collect())
    }
}
