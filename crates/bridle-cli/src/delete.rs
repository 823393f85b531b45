//! `bridle delete KIND NAME [--dry-run]`: a manifest (through the orchestrator, which passes it
//! to the service that keeps its kind) or an API key (revoked: a key's record stays for the
//! audit trail, but the key stops working).

use std::process::ExitCode;

use bridle_proto as pb;

use crate::conn::{ConnArgs, status};
use crate::kind::Kind;
use crate::out;
use crate::output::usage;

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// A manifest kind (agent, tool, modelroute, policy, secretbinding, budget) or key;
    /// `KIND/NAME` in one word works too.
    pub kind: String,
    /// The manifest's name, or the key's id.
    pub name: Option<String>,
    /// Say what would be deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn delete(conn: &ConnArgs, a: DeleteArgs) -> anyhow::Result<ExitCode> {
    let (kind, name) = crate::kind::target(&a.kind, a.name)?;
    let Some(name) = name else {
        return Err(usage(format!(
            "delete needs a name: bridle delete {} NAME",
            a.kind
        )));
    };
    let what = format!("{}/{name}", kind.title());
    match kind {
        Kind::Manifest(k) => {
            // Whether it exists, so a dry run can say, and a delete of nothing is an error
            // before anything is asked to change.
            crate::get::fetch(conn, kind, Some(&name)).await?;
            if a.dry_run {
                out::line(&format!("{what} would be deleted (dry run)"));
                return Ok(ExitCode::SUCCESS);
            }
            let r = conn
                .manifests()
                .await?
                .delete_manifest(pb::DeleteManifestRequest {
                    tenant: conn.tenant.clone(),
                    kind: bridle_core::manifest::kind_value(k) as i32,
                    name: name.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|s| status(&format!("deleting {what}"), s))?
                .into_inner();
            if !r.deleted {
                anyhow::bail!("{what} was not deleted: it is gone already");
            }
            out::line(&format!("{what} deleted"));
        }
        Kind::Key => {
            let keys = crate::get::list_keys(conn).await?;
            let Some(k) = keys.iter().find(|k| k.id == name) else {
                anyhow::bail!("API key '{name}' not found; `bridle get keys` lists them");
            };
            if k.revoked {
                anyhow::bail!("{what} is revoked already");
            }
            if a.dry_run {
                out::line(&format!("{what} ({}) would be revoked (dry run)", k.name));
                return Ok(ExitCode::SUCCESS);
            }
            conn.admin()
                .await?
                .revoke_api_key(pb::RevokeApiKeyRequest { id: name.clone() })
                .await
                .map_err(|s| status(&format!("revoking {what}"), s))?;
            out::line(&format!("{what} revoked"));
        }
        Kind::Run => {
            return Err(usage(
                "runs are kept, not deleted: `bridle runs cancel RUN` stops one",
            ));
        }
        Kind::Approval => {
            return Err(usage(
                "approvals are decided, not deleted: `bridle approvals deny ID --reason ...`",
            ));
        }
        Kind::Model => {
            return Err(usage(
                "models come from ModelRoute manifests: `bridle delete modelroute NAME`",
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}
