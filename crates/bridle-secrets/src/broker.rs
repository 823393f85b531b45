//! Resolving one name for one scope: the tenant's SecretBinding (or the `unbound` rule), its
//! grants, then the value from the cache or Vault.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bridle_core::manifest::{DynamicMethod, Engine, Manifest};
use bridle_core::store::ManifestStore;
use bridle_proto::Scope;
use secrecy::SecretString;

use crate::access::{check_run_id, describe_scope};
use crate::cache::{Cache, Entry, Failure, Key};
use crate::clock::Clock;
use crate::leases::Leases;
use crate::options::Unbound;
use crate::vault::Vault;
use crate::{Error, Options};

/// One resolved value.
pub struct Resolved {
    pub value: SecretString,
    /// How long the caller may keep it: what is left of its cache time or lease.
    pub ttl: Duration,
    pub lease_id: String,
}

enum Source {
    Kv {
        mount: String,
        path: String,
    },
    Dynamic {
        method: DynamicMethod,
        path: String,
        body: BTreeMap<String, serde_json::Value>,
    },
}

pub struct Broker {
    vault: Arc<Vault>,
    bindings: ManifestStore,
    cache: Cache,
    leases: Leases,
    kv_mount: String,
    path_prefix: String,
    grants_prefix: String,
    field: String,
    unbound: Unbound,
    cache_ttl: Duration,
}

impl Broker {
    pub fn new(
        vault: Arc<Vault>,
        bindings: ManifestStore,
        leases: Leases,
        o: &Options,
        clock: Clock,
    ) -> Self {
        Self {
            vault,
            bindings,
            cache: Cache::new(clock),
            leases,
            kv_mount: o.kv_mount.clone(),
            path_prefix: o.path_prefix.clone(),
            grants_prefix: o.grants_prefix.clone(),
            field: o.field.clone(),
            unbound: o.unbound,
            cache_ttl: o.cache_ttl,
        }
    }

    /// Whether a binding points into the OAuth grants' folder.
    fn is_grant(&self, source: &Source) -> bool {
        in_grants(&self.kv_mount, &self.grants_prefix, source)
    }

    /// Where `name` comes from for this scope, and which field holds it; refuses a scope the
    /// binding does not grant.
    async fn source(
        &self,
        tenant: &str,
        scope: &Scope,
        name: &str,
    ) -> Result<(Source, String, Option<Duration>), Error> {
        match self.bindings.get("SecretBinding", tenant, name).await? {
            Some(Manifest::SecretBinding(b)) => {
                let s = b.spec;
                if !s.grants_to(&scope.agent, &scope.tool, &scope.provider) {
                    return Err(Error::NotGranted {
                        name: name.to_string(),
                        scope: describe_scope(tenant, scope),
                    });
                }
                let source = match s.engine {
                    Engine::Kv2 => Source::Kv {
                        mount: s.mount.unwrap_or_else(|| self.kv_mount.clone()),
                        path: s.path,
                    },
                    Engine::Dynamic => Source::Dynamic {
                        method: s.method.unwrap_or(DynamicMethod::Get),
                        path: s.path,
                        body: s.body,
                    },
                };
                Ok((source, s.key, s.max_use_time))
            }
            Some(other) => Err(Error::Core(bridle_core::Error::internal(format!(
                "the SecretBinding store holds a {}",
                other.kind()
            )))),
            None => match self.unbound {
                Unbound::Deny => Err(Error::NotFound(name.to_string())),
                Unbound::Convention => {
                    let path = if self.path_prefix.is_empty() {
                        name.to_string()
                    } else {
                        format!("{}/{name}", self.path_prefix)
                    };
                    Ok((
                        Source::Kv {
                            mount: self.kv_mount.clone(),
                            path,
                        },
                        self.field.clone(),
                        None,
                    ))
                }
            },
        }
    }

    /// `refresh`: the caller's copy was refused; a KV value is read from Vault again (a leased
    /// one stays the run's until EndRun).
    pub async fn resolve(
        &self,
        tenant: &str,
        scope: &Scope,
        name: &str,
        refresh: bool,
    ) -> Result<Resolved, Error> {
        let (source, field, max_use) = self.source(tenant, scope, name).await?;
        if self.is_grant(&source) {
            return Err(Error::NotGranted {
                name: name.to_string(),
                scope: format!(
                    "{}: it names the folder of OAuth grants, which are only the tools service's to use",
                    describe_scope(tenant, scope)
                ),
            });
        }
        // A time-limited static secret: refused once the run has had it for its time, and
        // never handed out for longer than what is left.
        let use_left = match max_use {
            None => None,
            Some(max) => {
                if scope.run_id.is_empty() {
                    return Err(Error::UseTimeNeedsRun(name.to_string()));
                }
                check_run_id(&scope.run_id)?;
                let used = self.leases.since_first_use(&scope.run_id, name).await?;
                if used >= max {
                    return Err(Error::UseTimeOver {
                        name: name.to_string(),
                        max: bridle_core::timeutil::short_duration(max),
                        used: bridle_core::timeutil::short_duration(used),
                    });
                }
                Some(max - used)
            }
        };
        let entry = match source {
            Source::Kv { mount, path } => {
                let key = Key::Kv {
                    mount: mount.clone(),
                    path: path.clone(),
                };
                let ttl = self.cache_ttl;
                self.cache
                    .get_or_fetch(&key, refresh, |_| async move {
                        let fields = self.vault.kv_read(&mount, &path).await?;
                        Ok(Entry {
                            fields: Arc::new(fields),
                            expires: self.cache.now() + ttl,
                            lease_id: String::new(),
                        })
                    })
                    .await
            }
            Source::Dynamic { method, path, body } => {
                if scope.run_id.is_empty() {
                    return Err(Error::NeedsRun(name.to_string()));
                }
                check_run_id(&scope.run_id)?;
                let key = Key::Dynamic {
                    tenant: tenant.to_string(),
                    run: scope.run_id.clone(),
                    method,
                    path: path.clone(),
                    body: serde_json::to_string(&body).unwrap_or_default(),
                };
                let (run, cache_ttl) = (scope.run_id.as_str(), self.cache_ttl);
                self.cache
                    .get_or_fetch(&key, false, |slot| async move {
                        let read_at = self.cache.now();
                        let l = self.vault.dynamic_read(method, &path, &body).await?;
                        let ttl = if l.lease_id.is_empty() {
                            // No lease: treat it like a KV value of this run.
                            if l.duration.is_zero() {
                                cache_ttl
                            } else {
                                l.duration.min(cache_ttl)
                            }
                        } else {
                            self.leases
                                .track(run, &l.lease_id, l.duration, l.renewable, slot)
                                .await
                                .map_err(|e| Failure::Redis(e.to_string()))?;
                            l.duration
                        };
                        Ok(Entry {
                            fields: Arc::new(l.fields),
                            expires: read_at + ttl,
                            lease_id: l.lease_id,
                        })
                    })
                    .await
            }
        }
        .map_err(|f| match f {
            Failure::Vault(e) => e.for_secret(name, self.vault.addr()),
            Failure::Redis(reason) => Error::Core(bridle_core::Error::unavailable(
                "redis (recording the lease)",
                reason,
            )),
        })?;
        let value = match entry.fields.get(&field) {
            Some(v) => v.clone(),
            // An entry with exactly one field is unambiguous whatever it is called.
            None if entry.fields.len() == 1 => entry
                .fields
                .values()
                .next()
                .cloned()
                .unwrap_or_else(|| SecretString::from(String::new())),
            None => return Err(Error::MissingField(name.to_string(), field)),
        };
        let ttl = entry.remaining(self.cache.now());
        Ok(Resolved {
            value,
            ttl: use_left.map_or(ttl, |left| ttl.min(left)),
            lease_id: entry.lease_id.clone(),
        })
    }

    /// Revokes the run's leases and forgets its values.
    pub async fn end_run(&self, run: &str) -> Result<u32, Error> {
        check_run_id(run)?;
        self.cache.forget_run(run);
        let n = self.leases.end_run(run).await;
        // A resolve racing with the end may have cached again; forget once more.
        self.cache.forget_run(run);
        n
    }
}

/// Whether `source` reads inside `<kv_mount>/<grants_prefix>` (a KV path under it, or the KV
/// API path of one as a dynamic read): a tenant's binding must not read another's tokens.
fn in_grants(kv_mount: &str, grants_prefix: &str, source: &Source) -> bool {
    let under = |path: &str, folder: &str| {
        let path = path.trim_matches('/');
        path == folder || path.starts_with(&format!("{folder}/"))
    };
    match source {
        Source::Kv { mount, path } => mount == kv_mount && under(path, grants_prefix),
        Source::Dynamic { path, .. } => ["data", "metadata"]
            .iter()
            .any(|api| under(path, &format!("{kv_mount}/{api}/{grants_prefix}"))),
    }
}

#[cfg(test)]
mod grant_tests {
    use super::*;

    fn kv(mount: &str, path: &str) -> Source {
        Source::Kv {
            mount: mount.into(),
            path: path.into(),
        }
    }

    fn dynamic(path: &str) -> Source {
        Source::Dynamic {
            method: DynamicMethod::Get,
            path: path.into(),
            body: BTreeMap::new(),
        }
    }

    #[test]
    fn bindings_into_the_grants_folder_are_recognised() {
        let g = |s: &Source| in_grants("secret", "bridle-grants", s);
        assert!(g(&kv("secret", "bridle-grants/acme/notes")));
        assert!(g(&kv("secret", "/bridle-grants/acme/notes")));
        assert!(g(&kv("secret", "bridle-grants")));
        assert!(g(&dynamic("secret/data/bridle-grants/acme/notes")));
        assert!(g(&dynamic("secret/metadata/bridle-grants/acme")));
        assert!(!g(&kv("secret", "bridle/openai")));
        assert!(!g(&kv("secret", "bridle-grants-old/x")));
        assert!(!g(&kv("other", "bridle-grants/acme/notes")));
        assert!(!g(&dynamic("database/creds/readonly")));
    }
}
