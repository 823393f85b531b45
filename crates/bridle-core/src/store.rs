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
    /// `<data_key>:history:<kind>/<tenant>/<name>`: a stream of the manifest's changes.
    history_base: String,
}

/// Changes kept per manifest in its history.
pub const HISTORY_KEPT: usize = 100;

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

    /// As the contracts carry it (`AppliedManifest.action`).
    pub fn to_pb(self) -> bridle_proto::ManifestAction {
        match self {
            Action::Created => bridle_proto::ManifestAction::Created,
            Action::Updated => bridle_proto::ManifestAction::Updated,
            Action::Unchanged => bridle_proto::ManifestAction::Unchanged,
        }
    }
}

/// A history entry's stored action word ("created", "updated", "deleted") as the contracts
/// carry it (`ManifestChange.action`).
fn change_action(word: &str) -> bridle_proto::ManifestAction {
    match word {
        "created" => bridle_proto::ManifestAction::Created,
        "updated" => bridle_proto::ManifestAction::Updated,
        "deleted" => bridle_proto::ManifestAction::Deleted,
        _ => bridle_proto::ManifestAction::Unspecified,
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
            history_base: format!("{base}:history"),
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

    /// Stores every manifest in one transaction, with an entry in the history of each one
    /// that changed saying who changed it (`actor`).
    pub async fn put_all(
        &self,
        manifests: &[Manifest],
        actor: &bridle_proto::Actor,
    ) -> Result<Vec<Action>, Error> {
        let actions = self.plan(manifests).await?;
        let fields: Vec<String> = manifests
            .iter()
            .map(|m| field(m.kind(), m.tenant(), m.name()))
            .collect();
        if fields.is_empty() {
            return Ok(actions);
        }
        let mut conn = self.conn.clone();
        let gens: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg(&self.gen_key)
            .arg(&fields)
            .query_async(&mut conn)
            .await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (((m, a), f), gen_before) in manifests.iter().zip(&actions).zip(&fields).zip(gens) {
            if *a == Action::Unchanged {
                continue;
            }
            pipe.hset(&self.data_key, f, m.to_json().map_err(Error::internal)?)
                .ignore();
            pipe.hincr(&self.gen_key, f, 1).ignore();
            self.record(
                &mut pipe,
                f,
                a.as_str(),
                gen_before.unwrap_or(0) + 1,
                actor,
                &m.to_yaml(),
            );
        }
        let () = pipe.query_async(&mut conn).await?;
        Ok(actions)
    }

    /// Appends a change to a manifest's history (in the caller's transaction).
    fn record(
        &self,
        pipe: &mut redis::Pipeline,
        f: &str,
        action: &str,
        generation: u64,
        actor: &bridle_proto::Actor,
        yaml: &str,
    ) {
        pipe.cmd("XADD")
            .arg(format!("{}:{f}", self.history_base))
            .arg("MAXLEN")
            .arg("~")
            .arg(HISTORY_KEPT)
            .arg("*")
            .arg("action")
            .arg(action)
            .arg("generation")
            .arg(generation)
            .arg("actor_id")
            .arg(&actor.id)
            .arg("actor_name")
            .arg(&actor.name)
            .arg("actor_kind")
            .arg(crate::auth::actor_kind_word(actor.kind))
            .arg("yaml")
            .arg(yaml)
            .ignore();
    }

    /// The newest `limit` changes of one manifest (deleted ones too), newest first.
    pub async fn history(
        &self,
        kind: &str,
        tenant: &str,
        name: &str,
        limit: usize,
    ) -> Result<Vec<bridle_proto::ManifestChange>, Error> {
        let mut conn = self.conn.clone();
        let key = format!("{}:{}", self.history_base, field(kind, tenant, name));
        let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|e| {
                let text = |k: &str| e.get::<String>(k).unwrap_or_default();
                bridle_proto::ManifestChange {
                    action: change_action(&text("action")) as i32,
                    generation: e.get::<u64>("generation").unwrap_or(0),
                    actor: Some(bridle_proto::Actor {
                        id: text("actor_id"),
                        name: text("actor_name"),
                        kind: crate::auth::actor_kind(&text("actor_kind")) as i32,
                    }),
                    at_ms: e
                        .id
                        .split_once('-')
                        .and_then(|(ms, _)| ms.parse().ok())
                        .unwrap_or(0),
                    yaml: text("yaml"),
                }
            })
            .collect())
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

    /// Deletes a manifest; its history records who deleted it.
    pub async fn delete(
        &self,
        kind: &str,
        tenant: &str,
        name: &str,
        actor: &bridle_proto::Actor,
    ) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let f = field(kind, tenant, name);
        // Checked first, so that deleting nothing records nothing; a delete racing another
        // records both, which is what happened.
        let exists: bool = conn.hexists(&self.data_key, &f).await?;
        if !exists {
            return Ok(false);
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(&self.data_key, &f)
            .hdel(&self.gen_key, &f)
            .ignore();
        self.record(&mut pipe, &f, "deleted", 0, actor, "");
        let (n,): (u32,) = pipe.query_async(&mut conn).await?;
        Ok(n > 0)
    }
}
