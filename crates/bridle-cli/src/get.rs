//! `bridle get KIND [NAME]`: objects of a kind as a table (`-o wide` for more columns) or in a
//! machine format (`-o json|yaml|name`, see output.rs).

#![allow(
    clippy::needless_update,
    reason = "requests end in ..Default::default(), so a field added to a request (a page token) needs no change here"
)]

use std::process::ExitCode;

use bridle_core::redact::preview;
use bridle_proto as pb;
use serde_json::Value;

use crate::conn::{ConnArgs, status};
use crate::kind::Kind;
use crate::output::{self, Format, Item, cell, when};
use crate::{out, render};

#[derive(clap::Args)]
pub struct GetArgs {
    /// What to list: agent, tool, modelroute, policy, secretbinding, budget (manifests), run,
    /// approval, key, model; singular or plural. `KIND/NAME` names one object.
    pub kind: String,
    /// One object by name (manifests, models) or id (runs, approvals, keys).
    pub name: Option<String>,
}

/// One object read: what the machine formats print, and its table cells.
pub struct Row {
    pub item: Item,
    pub cells: Vec<String>,
    /// Cells `-o wide` adds after `cells`.
    pub wide: Vec<String>,
}

/// A kind's objects (or the one named), and the table headers.
pub struct Listing {
    pub headers: Vec<&'static str>,
    pub wide_headers: Vec<&'static str>,
    pub rows: Vec<Row>,
}

pub async fn get(conn: &ConnArgs, format: Format, a: GetArgs) -> anyhow::Result<ExitCode> {
    let (kind, name) = crate::kind::target(&a.kind, a.name)?;
    let listing = fetch(conn, kind, name.as_deref()).await?;
    print(format, listing, name.is_some(), kind)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints a listing in `format`.
pub fn print(format: Format, l: Listing, single: bool, kind: Kind) -> anyhow::Result<()> {
    match format {
        Format::Table | Format::Wide => {
            if l.rows.is_empty() {
                // On stderr: a script reading the table sees no rows, a person sees why.
                out::err(&format!("no {}", kind.plural()));
                return Ok(());
            }
            let wide = format == Format::Wide;
            let mut head: Vec<String> = l.headers.iter().map(|h| h.to_string()).collect();
            if wide {
                head.extend(l.wide_headers.iter().map(|h| h.to_string()));
            }
            let mut rows = vec![head];
            for r in l.rows {
                let mut c = r.cells;
                if wide {
                    c.extend(r.wide);
                }
                rows.push(c);
            }
            for line in output::table(&rows) {
                out::line(&line);
            }
            Ok(())
        }
        _ => {
            let items: Vec<Item> = l.rows.into_iter().map(|r| r.item).collect();
            output::print_items(format, &items, single)
        }
    }
}

pub async fn fetch(conn: &ConnArgs, kind: Kind, name: Option<&str>) -> anyhow::Result<Listing> {
    let listing = match kind {
        Kind::Manifest(k) => manifests(conn, k, name).await?,
        Kind::Run => runs(conn, name).await?,
        Kind::Approval => approvals(conn, name).await?,
        Kind::Key => keys(conn, name).await?,
        Kind::Model => models(conn, name).await?,
    };
    if let (Some(n), true) = (name, listing.rows.is_empty()) {
        anyhow::bail!(
            "{} '{n}' not found{}; `bridle get {}` lists them",
            kind.word(),
            tenant_note(conn),
            kind.listed()
        );
    }
    Ok(listing)
}

fn tenant_note(conn: &ConnArgs) -> String {
    if conn.tenant.is_empty() {
        String::new()
    } else {
        format!(" in tenant {}", conn.tenant)
    }
}

/// The stored manifests of `kind` (every one, or the one named), sorted by name.
pub async fn stored(
    conn: &ConnArgs,
    kind: &str,
    name: Option<&str>,
) -> anyhow::Result<Vec<pb::StoredManifest>> {
    let mut v = conn
        .manifests()
        .await?
        .list_manifests(pb::ListManifestsRequest {
            tenant: conn.tenant.clone(),
            kind: bridle_core::manifest::kind_value(kind) as i32,
            ..Default::default()
        })
        .await
        .map_err(|s| status(&format!("listing {kind} manifests"), s))?
        .into_inner()
        .manifests;
    v.retain(|m| name.is_none_or(|n| m.name == n));
    v.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
    Ok(v)
}

/// A field of a manifest as a cell: strings as they are, lists joined with ",", an object of
/// a list by its `name`.
fn field(v: &Value, pointer: &str) -> String {
    fn one(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            Value::Object(o) => o.get("name").map(one).unwrap_or_default(),
            other => other.to_string(),
        }
    }
    match v.pointer(pointer) {
        Some(Value::Array(a)) => a.iter().map(one).collect::<Vec<_>>().join(","),
        Some(x) => one(x),
        None => String::new(),
    }
}

/// The columns a manifest kind shows besides NAME and GENERATION: (header, JSON pointer).
fn manifest_columns(kind: &str) -> &'static [(&'static str, &'static str)] {
    match kind {
        "Agent" => &[("ROUTE", "/spec/route"), ("TOOLS", "/spec/tools")],
        "Tool" => &[("RISK", "/spec/risk")],
        "ModelRoute" => &[("TARGETS", "/spec/targets")],
        "SecretBinding" => &[("ENGINE", "/spec/engine"), ("PATH", "/spec/path")],
        _ => &[],
    }
}

async fn manifests(conn: &ConnArgs, kind: &str, name: Option<&str>) -> anyhow::Result<Listing> {
    let cols = manifest_columns(kind);
    let mut headers = vec!["NAME"];
    headers.extend(cols.iter().map(|(h, _)| *h));
    headers.push("GENERATION");
    let mut rows = Vec::new();
    for m in stored(conn, kind, name).await? {
        let value = output::yaml_to_json(&m.yaml)?;
        let mut cells = vec![m.name.clone()];
        cells.extend(cols.iter().map(|(_, p)| cell(&field(&value, p))));
        cells.push(m.generation.to_string());
        let wide = vec![
            m.tenant.clone(),
            cell(&preview(&field(&value, "/spec/description"), 60)),
        ];
        rows.push(Row {
            item: Item {
                name: format!("{}/{}", crate::words::manifest_kind(m.kind), m.name),
                value,
                yaml: Some(m.yaml),
            },
            cells,
            wide,
        });
    }
    Ok(Listing {
        headers,
        wide_headers: vec!["TENANT", "DESCRIPTION"],
        rows,
    })
}

pub fn run_row(r: pb::Run) -> anyhow::Result<Row> {
    let value = output::proto_json("Run", &r)?;
    Ok(Row {
        cells: vec![
            r.id.clone(),
            r.agent.clone(),
            render::status(r.status).to_string(),
            r.step.to_string(),
            when(r.created_at.as_ref()),
        ],
        wide: vec![
            r.tenant.clone(),
            cell(render::reason(r.end_reason)),
            render::tokens(r.usage.as_ref()),
            render::cost(r.cost.as_ref()),
            if r.scripted { "yes" } else { "no" }.into(),
        ],
        item: Item {
            name: format!("Run/{}", r.id),
            value,
            yaml: None,
        },
    })
}

const RUN_HEADERS: [&str; 5] = ["ID", "AGENT", "STATUS", "STEPS", "CREATED"];
const RUN_WIDE: [&str; 5] = ["TENANT", "ENDED BY", "TOKENS", "COST", "SCRIPTED"];

/// Recent runs (newest first, `limit` of them, of `agent` if given), as a listing.
pub async fn list_runs(
    conn: &ConnArgs,
    agent: Option<String>,
    limit: u32,
) -> anyhow::Result<Listing> {
    let resp = conn
        .orchestrator()
        .await?
        .list_runs(pb::ListRunsRequest {
            tenant: conn.tenant.clone(),
            agent: agent.unwrap_or_default(),
            page_size: limit,
            ..Default::default()
        })
        .await
        .map_err(|s| status("listing runs", s))?
        .into_inner();
    Ok(Listing {
        headers: RUN_HEADERS.to_vec(),
        wide_headers: RUN_WIDE.to_vec(),
        rows: resp
            .runs
            .into_iter()
            .map(run_row)
            .collect::<anyhow::Result<_>>()?,
    })
}

async fn runs(conn: &ConnArgs, id: Option<&str>) -> anyhow::Result<Listing> {
    let Some(id) = id else {
        return list_runs(conn, None, 50).await;
    };
    let r = conn
        .orchestrator()
        .await?
        .get_run(pb::GetRunRequest {
            run_id: id.to_string(),
        })
        .await
        .map_err(|s| status(&format!("reading run {id}"), s))?
        .into_inner();
    Ok(Listing {
        headers: RUN_HEADERS.to_vec(),
        wide_headers: RUN_WIDE.to_vec(),
        rows: vec![run_row(r)?],
    })
}

fn approval_row(a: pb::Approval) -> anyhow::Result<Row> {
    let value = output::proto_json("Approval", &a)?;
    Ok(Row {
        cells: vec![
            a.id.clone(),
            a.run_id.clone(),
            a.agent.clone(),
            a.tool.clone(),
            crate::words::approval_state(a.state),
        ],
        wide: vec![
            a.tenant.clone(),
            when(a.created_at.as_ref()),
            format!("{}/{}", a.approved_by.len(), a.approvals_required.max(1)),
            preview(&a.arguments_json, 60),
        ],
        item: Item {
            name: format!("Approval/{}", a.id),
            value,
            yaml: None,
        },
    })
}

/// The approvals waiting for a decision (of `run` if given), as the service answers them.
pub async fn pending_approvals(
    conn: &ConnArgs,
    run: Option<String>,
) -> anyhow::Result<Vec<pb::Approval>> {
    Ok(conn
        .approvals()
        .await?
        .list(pb::ListApprovalsRequest {
            // With an API key the service uses the key's tenant.
            tenant: if conn.tenant.is_empty() && conn.api_key.is_none() {
                bridle_core::manifest::DEFAULT_TENANT.to_string()
            } else {
                conn.tenant.clone()
            },
            state: pb::ApprovalState::Pending as i32,
            run_id: run.unwrap_or_default(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .map_err(|s| status("listing approvals", s))?
        .into_inner()
        .approvals)
}

/// The approvals waiting for a decision (of `run` if given), as a listing.
pub async fn list_approvals(conn: &ConnArgs, run: Option<String>) -> anyhow::Result<Listing> {
    Ok(approval_listing(
        pending_approvals(conn, run)
            .await?
            .into_iter()
            .map(approval_row)
            .collect::<anyhow::Result<_>>()?,
    ))
}

fn approval_listing(rows: Vec<Row>) -> Listing {
    Listing {
        headers: vec!["ID", "RUN", "AGENT", "TOOL", "STATE"],
        wide_headers: vec!["TENANT", "CREATED", "APPROVALS", "ARGUMENTS"],
        rows,
    }
}

pub async fn get_approval(conn: &ConnArgs, id: &str) -> anyhow::Result<pb::Approval> {
    conn.approvals()
        .await?
        .get(pb::GetApprovalRequest { id: id.to_string() })
        .await
        .map_err(|s| status(&format!("reading approval {id}"), s))
        .map(tonic::Response::into_inner)
}

async fn approvals(conn: &ConnArgs, id: Option<&str>) -> anyhow::Result<Listing> {
    match id {
        None => list_approvals(conn, None).await,
        Some(id) => Ok(approval_listing(vec![approval_row(
            get_approval(conn, id).await?,
        )?])),
    }
}

/// "active", "revoked", "expired".
pub fn key_state(k: &pb::ApiKey) -> &'static str {
    let expired = k.expires_at.as_ref().is_some_and(|t| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        t.seconds <= now
    });
    if k.revoked {
        "revoked"
    } else if expired {
        "expired"
    } else {
        "active"
    }
}

pub async fn list_keys(conn: &ConnArgs) -> anyhow::Result<Vec<pb::ApiKey>> {
    Ok(conn
        .admin()
        .await?
        .list_api_keys(pb::ListApiKeysRequest {
            tenant: conn.tenant.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| status("listing keys", s))?
        .into_inner()
        .keys)
}

pub async fn keys(conn: &ConnArgs, id: Option<&str>) -> anyhow::Result<Listing> {
    let mut rows = Vec::new();
    for k in list_keys(conn).await? {
        if id.is_some_and(|id| id != k.id) {
            continue;
        }
        let value = output::proto_json("ApiKey", &k)?;
        rows.push(Row {
            cells: vec![
                k.id.clone(),
                k.name.clone(),
                k.tenant.clone(),
                k.roles.join(","),
                key_state(&k).into(),
            ],
            wide: vec![
                when(k.created_at.as_ref()),
                when(k.expires_at.as_ref()),
                cell(&k.created_by),
                cell(&k.rotated_from),
            ],
            item: Item {
                name: format!("Key/{}", k.id),
                value,
                yaml: None,
            },
        });
    }
    Ok(Listing {
        headers: vec!["ID", "NAME", "TENANT", "ROLES", "STATE"],
        wide_headers: vec!["CREATED", "EXPIRES", "CREATED BY", "ROTATED FROM"],
        rows,
    })
}

pub async fn list_models(conn: &ConnArgs) -> anyhow::Result<Vec<pb::ModelRouteInfo>> {
    Ok(conn
        .orchestrator()
        .await?
        .list_models(pb::OrchestratorListModelsRequest {
            tenant: conn.tenant.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| status("listing model routes", s))?
        .into_inner()
        .routes)
}

pub async fn models(conn: &ConnArgs, name: Option<&str>) -> anyhow::Result<Listing> {
    let mut routes = list_models(conn).await?;
    routes.retain(|r| name.is_none_or(|n| r.name == n));
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    model_listing(routes)
}

pub fn model_listing(routes: Vec<pb::ModelRouteInfo>) -> anyhow::Result<Listing> {
    let mut rows = Vec::new();
    for r in routes {
        let value = output::proto_json("ModelRouteInfo", &r)?;
        let unpriced = r.targets.iter().filter(|t| t.price.is_none()).count();
        rows.push(Row {
            cells: vec![
                r.name.clone(),
                crate::words::strategy(r.strategy),
                field(&value, "/targets"),
            ],
            wide: vec![
                r.tenant.clone(),
                r.targets
                    .iter()
                    .map(|t| {
                        if t.model.is_empty() {
                            t.provider.clone()
                        } else {
                            format!("{}/{}", t.provider, t.model)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                unpriced.to_string(),
            ],
            item: Item {
                name: format!("Model/{}", r.name),
                value,
                yaml: None,
            },
        });
    }
    Ok(Listing {
        headers: vec!["NAME", "STRATEGY", "TARGETS"],
        wide_headers: vec!["TENANT", "MODELS", "UNPRICED"],
        rows,
    })
}
