//! The Redis-backed store of the manifests a service owns. Each service stores only its own
//! kinds (the orchestrator Agents, the tools service Tools, the router ModelRoutes) under its own
//! hash-tagged key, so one apply is one MULTI and works on Redis Cluster.

use crate::redis_util::RedisConn;
use redis::AsyncCommands;

use crate::Error;
use crate::manifest::{self, Manifest, Owner};
use crate::redis_util::Keys;

#[derive(Clone)]
pub struct ManifestStore {
    conn: RedisConn,
    data_key: String,
    gen_key: String,
}

/// What an apply did to one manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Unchanged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
        }
    }
}

fn field(kind: &str, tenant: &str, name: &str) -> String {
    format!("{kind}/{tenant}/{name}")
}

impl ManifestStore {
    pub fn new(conn: RedisConn, keys: &Keys, owner: Owner) -> Self {
        let base = keys.key(&format!("manifests:{{{}}}", owner.as_str()));
        Self {
            conn,
            data_key: base.clone(),
            gen_key: format!("{base}:gen"),
        }
    }

    /// What `put_all` would do, without doing it.
    pub async fn plan(&self, manifests: &[Manifest]) -> Result<Vec<Action>, Error> {
        if manifests.is_empty() {
            return Ok(vec![]);
        }
        let fields: Vec<String> = manifests
            .iter()
            .map(|m| field(m.kind(), m.tenant(), m.name()))
            .collect();
        let mut conn = self.conn.clone();
        let existing: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&self.data_key)
            .arg(&fields)
            .query_async(&mut conn)
            .await?;
        manifests
            .iter()
            .zip(existing)
            .map(|(m, old)| {
                let new = m.to_json().map_err(Error::internal)?;
                Ok(match old {
                    None => Action::Created,
                    Some(o) if o == new => Action::Unchanged,
                    Some(_) => Action::Updated,
                })
            })
            .collect()
    }

    /// Stores every manifest in one transaction.
    pub async fn put_all(&self, manifests: &[Manifest]) -> Result<Vec<Action>, Error> {
        let actions = self.plan(manifests).await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (m, a) in manifests.iter().zip(&actions) {
            if *a == Action::Unchanged {
                continue;
            }
            let f = field(m.kind(), m.tenant(), m.name());
            pipe.hset(&self.data_key, &f, m.to_json().map_err(Error::internal)?)
                .ignore();
            pipe.hincr(&self.gen_key, &f, 1).ignore();
        }
        let mut conn = self.conn.clone();
        let () = pipe.query_async(&mut conn).await?;
        Ok(actions)
    }

    pub async fn get(
        &self,
        kind: &str,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Manifest>, Error> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.hget(&self.data_key, field(kind, tenant, name)).await?;
        json.map(|j| manifest::from_json(kind, &j).map_err(Error::internal))
            .transpose()
    }

    /// Every stored manifest of `tenant` (and `kind`, when given), sorted by kind and name.
    pub async fn list(
        &self,
        tenant: &str,
        kind: Option<&str>,
    ) -> Result<Vec<(Manifest, u64)>, Error> {
        let mut conn = self.conn.clone();
        let all: Vec<(String, String)> = conn.hgetall(&self.data_key).await?;
        let gens: std::collections::HashMap<String, u64> = conn.hgetall(&self.gen_key).await?;
        let mut out = Vec::new();
        for (f, json) in all {
            let mut parts = f.splitn(3, '/');
            let (Some(k), Some(t), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if t != tenant || kind.is_some_and(|want| want != k) {
                continue;
            }
            let m = manifest::from_json(k, &json).map_err(Error::internal)?;
            out.push((m, gens.get(&f).copied().unwrap_or(1)));
        }
        out.sort_by(|a, b| (a.0.kind(), a.0.name()).cmp(&(b.0.kind(), b.0.name())));
        Ok(out)
    }

    pub async fn delete(&self, kind: &str, tenant: &str, name: &str) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let f = field(kind, tenant, name);
        let (n, _): (u32, u32) = redis::pipe()
            .atomic()
            .hdel(&self.data_key, &f)
            .hdel(&self.gen_key, &f)
            .query_async(&mut conn)
            .await?;
        Ok(n > 0)
    }
}
