//! `bridle keys`: API keys. `bootstrap` writes the first admin key straight into Redis (for a
//! new deployment, run where Redis is reachable); the rest go through the orchestrator.

use std::process::ExitCode;

use bridle_core::auth::{ApiKeyStore, Role};
use bridle_core::redis_util::Keys;
use bridle_proto as pb;

use crate::conn::{ConnArgs, status};
use crate::kind::Kind;
use crate::out;
use crate::output::Format;

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key (needs an admin key). Prints the key once.
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// Roles: admin, operator, approver, viewer (repeat or comma-separate).
        #[arg(long = "role", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// How long the key works (e.g. 90d); unset: until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
    /// Replace a key without downtime: prints a new key with the same tenant, name and roles;
    /// the old one keeps working for --overlap, then expires.
    Rotate {
        id: String,
        /// How long the old key keeps working (0s: it stops now).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        overlap: std::time::Duration,
        /// How long the new key works; unset: until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// Create the first admin key of a tenant directly in Redis.
    Bootstrap {
        #[arg(long, env = "BRIDLE_REDIS_URL")]
        redis_url: String,
        #[arg(long, env = "BRIDLE_KEY_PREFIX", default_value = "bridle")]
        key_prefix: String,
        #[arg(long = "for-tenant", default_value = "default")]
        for_tenant: String,
        #[arg(long, default_value = "bootstrap admin")]
        name: String,
    },
    /// Who the harness thinks you are.
    Whoami,
}

pub async fn keys(conn: &ConnArgs, format: Format, c: KeysCommand) -> anyhow::Result<ExitCode> {
    match (&c, format) {
        (_, Format::Table) => {}
        (KeysCommand::List, _) => {
            let l = crate::get::keys(conn, None).await?;
            crate::get::print(format, l, false, Kind::Key)?;
            return Ok(ExitCode::SUCCESS);
        }
        (KeysCommand::Whoami, _) => {
            crate::output::check_report(format, "keys whoami")?;
            let r = conn
                .admin()
                .await?
                .who_am_i(pb::WhoAmIRequest {})
                .await
                .map_err(|s| status("asking", s))?
                .into_inner();
            crate::output::report(format, "WhoAmIResponse", &r)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {
            return Err(crate::output::usage(
                "-o/--output is for reading commands: keys list (or bridle get keys) and keys \
                 whoami",
            ));
        }
    }
    match c {
        KeysCommand::Bootstrap {
            redis_url,
            key_prefix,
            for_tenant,
            name,
        } => {
            let redis = bridle_core::redis_util::connect(&redis_url).await?;
            let store = ApiKeyStore::new(redis, &Keys::new(&key_prefix));
            let (secret, rec) = store.create(&for_tenant, &name, &[Role::Admin]).await?;
            out::err(&format!(
                "created admin key {} for tenant {} — store it now, it is not shown again:",
                rec.id, rec.tenant
            ));
            out::line(&secret);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Create {
            name,
            roles,
            expires_in,
        } => {
            let r = conn
                .admin()
                .await?
                .create_api_key(pb::CreateApiKeyRequest {
                    tenant: conn.tenant.clone(),
                    name,
                    roles,
                    expires_in: expires_in.map(bridle_core::timeutil::pb_duration),
                })
                .await
                .map_err(|s| status("creating the key", s))?
                .into_inner();
            let k = r.key.unwrap_or_default();
            out::err(&format!(
                "created key {} ({}) for tenant {} with roles {} — store it now, it is not shown again:",
                k.id,
                k.name,
                k.tenant,
                k.roles.join(", ")
            ));
            out::line(&r.secret);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List => {
            let keys = crate::get::list_keys(conn).await?;
            let now = std::time::SystemTime::now();
            for k in keys {
                let expiry = match &k.expires_at {
                    _ if k.revoked => "  (revoked)".to_string(),
                    Some(t) => {
                        let at = std::time::UNIX_EPOCH
                            + std::time::Duration::from_secs(u64::try_from(t.seconds).unwrap_or(0));
                        if at <= now {
                            "  (expired)".to_string()
                        } else {
                            format!(
                                "  (expires in {})",
                                humantime::format_duration(std::time::Duration::from_secs(
                                    at.duration_since(now).unwrap_or_default().as_secs()
                                ))
                            )
                        }
                    }
                    None => String::new(),
                };
                out::line(&format!(
                    "{}  {:<12} {:<24} {}{expiry}",
                    k.id,
                    k.tenant,
                    k.name,
                    k.roles.join(","),
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { id } => {
            conn.admin()
                .await?
                .revoke_api_key(pb::RevokeApiKeyRequest { id: id.clone() })
                .await
                .map_err(|s| status("revoking the key", s))?;
            out::line(&format!("{id} revoked"));
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rotate {
            id,
            overlap,
            expires_in,
        } => {
            let r = conn
                .admin()
                .await?
                .rotate_api_key(pb::RotateApiKeyRequest {
                    id: id.clone(),
                    overlap: Some(bridle_core::timeutil::pb_duration(overlap)),
                    expires_in: expires_in.map(bridle_core::timeutil::pb_duration),
                })
                .await
                .map_err(|s| status("rotating the key", s))?
                .into_inner();
            let k = r.key.unwrap_or_default();
            out::err(&format!(
                "created key {} ({}) to replace {id}, which {} — store the new key now, it is not shown again:",
                k.id,
                k.name,
                if overlap.is_zero() {
                    "stopped working now".to_string()
                } else {
                    format!("keeps working for {}", humantime::format_duration(overlap))
                }
            ));
            out::line(&r.secret);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Whoami => {
            let r = conn
                .admin()
                .await?
                .who_am_i(pb::WhoAmIRequest {})
                .await
                .map_err(|s| status("asking", s))?
                .into_inner();
            out::line(&format!(
                "{} ({}) tenant {} roles {}",
                r.name,
                r.id,
                if r.tenant.is_empty() {
                    "any"
                } else {
                    &r.tenant
                },
                r.roles.join(",")
            ));
            Ok(ExitCode::SUCCESS)
        }
    }
}
