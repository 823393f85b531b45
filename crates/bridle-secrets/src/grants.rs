//! OAuth grants of remote MCP servers: what a person's authorization gave a tenant for one
//! tool (the client it was issued to and its tokens), kept in Vault's KV v2 mount at
//! `<kv_mount>/<grants_prefix>/<tenant>/<tool>`, field `grant`. The broker stores the tools
//! service's JSON as it is and never reads into it; only the tools service may ask.

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};

use crate::Error;
use crate::vault::{Vault, VaultError};

/// The KV field that holds a grant.
const FIELD: &str = "grant";

/// Largest grant kept (a token response with a JWT access token is a few KiB).
pub const MAX_GRANT_BYTES: usize = 64 * 1024;

pub struct Grants {
    vault: Arc<Vault>,
    mount: String,
    prefix: String,
}

impl Grants {
    pub fn new(vault: Arc<Vault>, mount: &str, prefix: &str) -> Self {
        Self {
            vault,
            mount: mount.to_string(),
            prefix: prefix.to_string(),
        }
    }

    fn path(&self, tenant: &str, tool: &str) -> String {
        format!("{}/{tenant}/{tool}", self.prefix)
    }

    fn error(&self, e: VaultError, tenant: &str, tool: &str) -> Error {
        match e {
            VaultError::Denied => Error::GrantsDenied(format!(
                "tool '{tool}' of tenant '{tenant}': vault refused the broker access to OAuth grants; its policy needs create, read, update and delete on the grants folder (grants_prefix '{}' of mount '{}', data and metadata)",
                self.prefix, self.mount
            )),
            other => other.for_secret(&format!("oauth grant of tool '{tool}'"), self.vault.addr()),
        }
    }

    /// The grant, or None when the tenant has none for the tool.
    pub async fn get(&self, tenant: &str, tool: &str) -> Result<Option<SecretString>, Error> {
        match self
            .vault
            .kv_read(&self.mount, &self.path(tenant, tool))
            .await
        {
            Ok(mut fields) => Ok(fields.remove(FIELD)),
            Err(VaultError::NotFound) => Ok(None),
            Err(e) => Err(self.error(e, tenant, tool)),
        }
    }

    pub async fn put(&self, tenant: &str, tool: &str, value: &SecretString) -> Result<(), Error> {
        let data = BTreeMap::from([(FIELD.to_string(), value.expose_secret().to_string())]);
        self.vault
            .kv_write(&self.mount, &self.path(tenant, tool), &data)
            .await
            .map_err(|e| self.error(e, tenant, tool))
    }

    /// False when there was none.
    pub async fn delete(&self, tenant: &str, tool: &str) -> Result<bool, Error> {
        match self
            .vault
            .kv_delete(&self.mount, &self.path(tenant, tool))
            .await
        {
            Ok(()) => Ok(true),
            Err(VaultError::NotFound) => Ok(false),
            Err(e) => Err(self.error(e, tenant, tool)),
        }
    }
}
