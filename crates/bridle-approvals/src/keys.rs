//! Where the service keeps its data in Redis.
//!
//! Every key lives under one hash tag, `{approvals}`, so each Lua script (audit record + state
//! change + event + indexes) touches a single slot and stays atomic on Redis Cluster, and the
//! event counter can give the whole deployment one dense offset sequence.
//!
//! Sharding later: tag per tenant (`{approvals:<tenant>}`) for the approvals, the call map, the
//! indexes and a per-tenant audit stream and event stream. Offsets would then be per tenant,
//! so Watch without a tenant would merge shards (or a relay would copy events to a global
//! stream); that is why the tag is one place here.

use bridle_core::redis_util::Keys;

#[derive(Clone, Debug)]
pub struct ApprovalKeys {
    base: String,
}

impl ApprovalKeys {
    pub fn new(keys: &Keys) -> Self {
        Self {
            base: keys.key("approvals:{approvals}"),
        }
    }

    /// Hash: one approval's fields.
    pub fn approval(&self, id: &str) -> String {
        format!("{}:apr:{id}", self.base)
    }

    /// Hash {id, sha}: the approval of one call, for idempotent evaluation. Tenant and run id
    /// are validated names/ids (no '/'), so the last segment can hold any call id.
    pub fn call(&self, tenant: &str, run_id: &str, step: u32, call_id: &str) -> String {
        format!("{}:call:{tenant}/{run_id}/{step}/{call_id}", self.base)
    }

    /// Sorted set (score = created ms): the approvals of a tenant in one state.
    pub fn index(&self, tenant: &str, state: &str) -> String {
        format!("{}:idx:{tenant}:{state}", self.base)
    }

    /// Sorted set (score = created ms): every approval of one run, whatever its state.
    pub fn run(&self, tenant: &str, run_id: &str) -> String {
        format!("{}:run:{tenant}:{run_id}", self.base)
    }

    /// Sorted set (score = expires ms): pending approvals, for the sweeper.
    pub fn expiring(&self) -> String {
        format!("{}:expiring", self.base)
    }

    /// Stream: the append-only audit trail of every evaluation, decision and expiry.
    pub fn audit(&self) -> String {
        format!("{}:audit", self.base)
    }

    /// Stream with entry ids `0-<offset>`: approval events for Watch.
    pub fn events(&self) -> String {
        format!("{}:events", self.base)
    }

    /// Hash tenant -> version of its Policy manifests, bumped by every apply or delete, so
    /// each replica knows when to recompile its cached policy set.
    pub fn policy_versions(&self) -> String {
        format!("{}:policy:versions", self.base)
    }

    /// String: an inbox login session (key = sha256 of the session cookie), with a TTL.
    pub fn session(&self, id_sha256: &str) -> String {
        format!("{}:session:{id_sha256}", self.base)
    }

    /// String: an inbox OIDC login between the redirect to the issuer and its return (PKCE
    /// verifier, nonce), 10 minutes, taken once.
    pub fn oidc_flow(&self, state: &str) -> String {
        format!("{}:oidc:{state}", self.base)
    }

    /// Counter: the offset of the last event.
    pub fn events_seq(&self) -> String {
        format!("{}:events:seq", self.base)
    }
}
