//! `bridle apply` lands here: the orchestrator's `bridle.v1.Manifests` is the public entry for
//! every kind. It validates the whole set, checks that agents only reference tools and routes
//! that exist (in the set or already applied), asks each owning service for a dry run, and only
//! then commits — tools and routes first, agents last, so an agent never points at something
//! missing.
//!
//! The commit across services is not one transaction: if a service fails between the dry run
//! and its commit, the services before it keep their part. Reapplying the same set is safe
//! (unchanged manifests are reported as such), which is how such a failure is repaired.

use std::collections::{HashMap, HashSet};

use tonic::{Request, Response, Status};

use bridle_core::auth::{Role, principal};
use bridle_core::manifest::{
    Manifest, ManifestError, Owner, ValidationErrors, locate_field, show_bytes,
};
use bridle_core::manifest_service::parse_request;
use bridle_core::paging::{MAX_PAGE_SIZE, Page};
use bridle_core::store::ManifestStore;
use bridle_proto as pb;
use bridle_proto::manifests_server::Manifests;

use crate::clients::Clients;

/// Route name -> its targets with no known price.
type Routes = HashMap<String, Vec<String>>;

pub struct ApplyService {
    pub agents: ManifestStore,
    pub clients: Clients,
}

impl ApplyService {
    /// Routes (each with its unpriced targets) and tools that exist already for `tenant`.
    async fn existing(
        &self,
        tenant: &str,
        need_tools: &[String],
    ) -> Result<(Routes, HashSet<String>), Status> {
        let mut tools = HashSet::new();
        if !need_tools.is_empty() {
            let resp = self
                .clients
                .tools
                .clone()
                .list_tools(pb::ListToolsRequest {
                    tenant: tenant.to_string(),
                    names: need_tools.to_vec(),
                    ..Default::default()
                })
                .await
                .map_err(|s| Status::new(s.code(), format!("tools service: {}", s.message())))?
                .into_inner();
            // A name that is not missing exists, even when it expands to other names (an MCP
            // server's tools).
            tools.extend(
                need_tools
                    .iter()
                    .filter(|n| !resp.missing.contains(*n))
                    .cloned(),
            );
        }
        let routes = self
            .clients
            .router
            .clone()
            .list_models(pb::ListModelsRequest {
                tenant: tenant.to_string(),
                ..Default::default()
            })
            .await
            .map_err(|s| Status::new(s.code(), format!("router: {}", s.message())))?
            .into_inner()
            .routes
            .into_iter()
            .map(|r| {
                let unpriced = r
                    .targets
                    .into_iter()
                    .filter(|t| t.price.is_none())
                    .map(|t| t.name)
                    .collect();
                (r.name, unpriced)
            })
            .collect();
        Ok((routes, tools))
    }

    /// The tools service's ceiling on workspace quotas (0 from a service too old to say).
    async fn workspace_quota_max(&self, tenant: &str, tools: &[String]) -> Result<u64, Status> {
        let resp = self
            .clients
            .tools
            .clone()
            .list_tools(pb::ListToolsRequest {
                tenant: tenant.to_string(),
                names: tools.to_vec(),
                ..Default::default()
            })
            .await
            .map_err(|s| Status::new(s.code(), format!("tools service: {}", s.message())))?;
        Ok(resp.into_inner().workspace_quota_max_bytes)
    }

    /// The service that keeps `kind`'s manifests; None for Agents, kept here.
    fn owner_of(
        &self,
        kind: i32,
    ) -> Result<Option<pb::manifests_client::ManifestsClient<bridle_core::client::Traced>>, Status>
    {
        Ok(Some(match bridle_core::manifest::kind_in("kind", kind)? {
            "Tool" => self.clients.tools_manifests.clone(),
            "ModelRoute" | "Budget" => self.clients.router_manifests.clone(),
            "Policy" => self.clients.approvals_manifests.clone(),
            "SecretBinding" => self.clients.secrets_manifests.clone(),
            _ => return Ok(None),
        }))
    }

    async fn forward(
        &self,
        owner: Owner,
        documents: Vec<pb::ManifestDocument>,
        tenant: &str,
        dry_run: bool,
        actor: &pb::Actor,
    ) -> Result<pb::ApplyResponse, Status> {
        let mut client = match owner {
            Owner::Tools => self.clients.tools_manifests.clone(),
            Owner::Router => self.clients.router_manifests.clone(),
            Owner::Approvals => self.clients.approvals_manifests.clone(),
            Owner::Secrets => self.clients.secrets_manifests.clone(),
            Owner::Orchestrator => return Ok(pb::ApplyResponse::default()),
        };
        client
            .apply(pb::ApplyRequest {
                documents,
                dry_run,
                tenant: tenant.to_string(),
                actor: Some(actor.clone()),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| {
                // The owner's google.rpc details (a manifest problem's field, file and line)
                // reach the caller unchanged; only the message says whose they are.
                Status::with_details(
                    s.code(),
                    format!("{} service: {}", owner.as_str(), s.message()),
                    s.details().to_vec().into(),
                )
            })
    }
}

#[tonic::async_trait]
impl Manifests for ApplyService {
    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Operator)?;
        let req = req.into_inner();
        let tenant = p.tenant_for(&req.tenant)?;
        let actor = p.acting_for(req.actor.as_ref());
        let manifests = parse_request(&req.documents, &tenant, None)?;
        if let Some(m) = manifests.iter().find(|m| !p.sees(m.tenant())) {
            return Err(Status::permission_denied(format!(
                "{} '{}' is for tenant '{}', which API key '{}' cannot act for",
                m.kind(),
                m.name(),
                m.tenant(),
                p.name
            )));
        }
        let mut by_owner: std::collections::HashMap<Owner, Vec<pb::ManifestDocument>> =
            Default::default();
        let mut agents = Vec::new();
        for (m, d) in manifests.iter().zip(&req.documents) {
            match m {
                Manifest::Agent(_) => agents.push((m.clone(), d.clone())),
                _ => by_owner.entry(m.owner()).or_default().push(d.clone()),
            }
        }

        // References from agents.
        let mut problems = Vec::new();
        let mut known_routes: HashMap<String, Routes> = HashMap::new();
        for (m, d) in &agents {
            let Manifest::Agent(a) = m else { continue };
            let t = m.tenant();
            let in_set = |kind: &str, name: &str| {
                manifests
                    .iter()
                    .any(|x| x.kind() == kind && x.tenant() == t && x.name() == name)
            };
            let need_tools: Vec<String> = a
                .spec
                .tools
                .iter()
                .filter(|n| !in_set("Tool", n))
                .cloned()
                .collect();
            let (routes, tools) = self.existing(t, &need_tools).await?;
            known_routes.insert(t.to_string(), routes.clone());
            for (i, name) in a.spec.tools.iter().enumerate() {
                if !in_set("Tool", name) && !tools.contains(name) {
                    problems.push(error(d, m, &format!("spec.tools[{i}]"), format!("tool '{name}' is not defined for tenant '{t}' (not in this apply, not applied before)")));
                }
            }
            if !in_set("ModelRoute", &a.spec.route) && !routes.contains_key(&a.spec.route) {
                problems.push(error(d, m, "spec.route", format!("model route '{}' is not defined for tenant '{t}' (not in this apply, not applied before)", a.spec.route)));
            }
            // An agent without tools never gets a workspace: its quota needs no check.
            if let Some(q) = a.spec.workspace.quota_bytes()
                && !a.spec.tools.is_empty()
            {
                let max = self.workspace_quota_max(t, &a.spec.tools).await?;
                if max > 0 && q > max {
                    problems.push(error(d, m, "spec.workspace.quota", format!("{} is above the tools service's ceiling of {} (its workspace_quota_max option); ask for less or raise the ceiling", show_bytes(q), show_bytes(max))));
                }
            }
        }
        if !problems.is_empty() {
            return Err(bridle_core::Error::from(ValidationErrors(problems)).into());
        }

        // Dry runs: every owning service validates its part before anything changes.
        let mut applied = Vec::new();
        let mut planned = Vec::new();
        for (owner, docs) in &by_owner {
            let r = self
                .forward(*owner, docs.clone(), &tenant, true, &actor)
                .await?;
            planned.extend(r.applied);
        }
        let problems = unpriced_under_budget(&agents, &planned, &known_routes);
        if !problems.is_empty() {
            return Err(bridle_core::Error::from(ValidationErrors(problems)).into());
        }
        if req.dry_run {
            applied.extend(planned);
        }
        let agent_manifests: Vec<Manifest> = agents.iter().map(|(m, _)| m.clone()).collect();
        if req.dry_run {
            let actions = self.agents.plan(&agent_manifests).await?;
            applied.extend(summaries(&agent_manifests, &actions));
            return Ok(Response::new(pb::ApplyResponse {
                applied,
                dry_run: true,
            }));
        }
        for owner in [
            Owner::Secrets,
            Owner::Tools,
            Owner::Router,
            Owner::Approvals,
        ] {
            if let Some(docs) = by_owner.get(&owner) {
                applied.extend(
                    self.forward(owner, docs.clone(), &tenant, false, &actor)
                        .await?
                        .applied,
                );
            }
        }
        let actions = self.agents.put_all(&agent_manifests, &actor).await?;
        applied.extend(summaries(&agent_manifests, &actions));
        tracing::info!(count = applied.len(), "manifests applied");
        Ok(Response::new(pb::ApplyResponse {
            applied,
            dry_run: false,
        }))
    }

    async fn list_manifests(
        &self,
        req: Request<pb::ListManifestsRequest>,
    ) -> Result<Response<pb::ListManifestsResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Viewer)?;
        let req = req.into_inner();
        let tenant = p.tenant_for(&req.tenant)?;
        let page = Page::parse(req.page_size, &req.page_token, None, MAX_PAGE_SIZE)?;
        // UNSPECIFIED: every kind.
        let wanted = match req.kind {
            0 => None,
            k => Some(bridle_core::manifest::kind_in("kind", k)?),
        };
        let mut out = Vec::new();
        if wanted.is_none_or(|k| k == "Agent") {
            for (m, generation) in self.agents.list(&tenant, Some("Agent")).await? {
                out.push(pb::StoredManifest {
                    kind: pb::ManifestKind::Agent as i32,
                    name: m.name().into(),
                    tenant: m.tenant().into(),
                    yaml: m.to_yaml(),
                    generation,
                });
            }
        }
        for (kind, mut client) in [
            ("Tool", self.clients.tools_manifests.clone()),
            ("ModelRoute", self.clients.router_manifests.clone()),
            ("Policy", self.clients.approvals_manifests.clone()),
            ("SecretBinding", self.clients.secrets_manifests.clone()),
            ("Budget", self.clients.router_manifests.clone()),
        ] {
            if wanted.is_none_or(|k| k == kind) {
                let r = client
                    .list_manifests(pb::ListManifestsRequest {
                        tenant: tenant.to_string(),
                        kind: bridle_core::manifest::kind_value(kind) as i32,
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(r) => out.extend(r.into_inner().manifests),
                    // A service that keeps no manifests of its own has nothing to list.
                    Err(s) if s.code() == tonic::Code::Unimplemented => {}
                    Err(s) => return Err(s),
                }
            }
        }
        // One order over every owner's, so pages cut across services.
        out.sort_by_key(bridle_core::manifest_service::list_key);
        let (manifests, next_page_token) =
            page.of_sorted(out, bridle_core::manifest_service::list_key);
        Ok(Response::new(pb::ListManifestsResponse {
            manifests,
            next_page_token,
        }))
    }

    async fn delete_manifest(
        &self,
        req: Request<pb::DeleteManifestRequest>,
    ) -> Result<Response<pb::DeleteManifestResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Operator)?;
        let mut req = req.into_inner();
        let tenant = p.tenant_for(&req.tenant)?;
        req.tenant = tenant.to_string();
        req.actor = Some(p.acting_for(req.actor.as_ref()));
        let deleted = match self.owner_of(req.kind)? {
            None => {
                let actor = req.actor.unwrap_or_default();
                self.agents
                    .delete("Agent", &tenant, &req.name, &actor)
                    .await?
            }
            Some(mut client) => client.delete_manifest(req).await?.into_inner().deleted,
        };
        Ok(Response::new(pb::DeleteManifestResponse { deleted }))
    }

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Viewer)?;
        let mut req = req.into_inner();
        req.tenant = p.tenant_for(&req.tenant)?.into();
        let changes = match self.owner_of(req.kind)? {
            None => {
                self.agents
                    .history(
                        "Agent",
                        &req.tenant,
                        &req.name,
                        bridle_core::manifest_service::history_limit(req.limit),
                    )
                    .await?
            }
            Some(mut client) => client.history(req).await?.into_inner().changes,
        };
        Ok(Response::new(pb::HistoryResponse { changes }))
    }
}

/// Agents with a cost budget whose route has a target of unknown price: such a target's calls
/// would count as nothing, so the budget could not be kept. The route is the one in this apply
/// (as the router's dry run saw it) or, failing that, the one applied before.
fn unpriced_under_budget(
    agents: &[(Manifest, pb::ManifestDocument)],
    planned: &[pb::AppliedManifest],
    existing: &HashMap<String, Routes>,
) -> Vec<ManifestError> {
    let mut problems = Vec::new();
    for (m, d) in agents {
        let Manifest::Agent(a) = m else { continue };
        if a.spec.budget.max_cost_usd.is_none() {
            continue;
        }
        let route = &a.spec.route;
        let unpriced = planned
            .iter()
            .find(|p| {
                p.kind == pb::ManifestKind::ModelRoute as i32
                    && &p.name == route
                    && p.tenant == m.tenant()
            })
            .map(|p| p.unpriced_targets.clone())
            .or_else(|| existing.get(m.tenant()).and_then(|r| r.get(route)).cloned())
            .unwrap_or_default();
        if !unpriced.is_empty() {
            problems.push(error(
                d,
                m,
                "spec.budget.maxCostUsd",
                format!(
                    "route '{route}' has targets with no known price ({}), so a cost budget cannot be kept on them; declare `price` on those targets (USD per million tokens)",
                    unpriced.join(", ")
                ),
            ));
        }
    }
    problems
}

fn error(d: &pb::ManifestDocument, m: &Manifest, field: &str, message: String) -> ManifestError {
    ManifestError {
        source: d.source.clone(),
        line: locate_field(d.first_line, &d.yaml, field),
        subject: Some(format!("{} '{}'", m.kind(), m.name())),
        field: field.to_string(),
        message,
    }
}

fn summaries(ms: &[Manifest], actions: &[bridle_core::store::Action]) -> Vec<pb::AppliedManifest> {
    ms.iter()
        .zip(actions)
        .map(|(m, a)| pb::AppliedManifest {
            kind: bridle_core::manifest::kind_value(m.kind()) as i32,
            name: m.name().into(),
            tenant: m.tenant().into(),
            action: a.to_pb() as i32,
            service: Owner::Orchestrator.as_str().into(),
            unpriced_targets: Vec::new(),
        })
        .collect()
}
