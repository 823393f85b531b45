//! The tools service's `bridle.v1.Manifests`: the shared service (validation, storage) with
//! checks of this service's own before anything is planned or stored, at the dry run as at
//! the commit: a Tool's workspace quota above this service's ceiling is refused, and so is an
//! egress rule (or an http/MCP URL) naming a non-public address the platform does not let the
//! tenant reach.

use std::sync::Arc;

use bridle_core::manifest::{
    EgressRule, Manifest, ManifestError, Owner, Tool, ValidationErrors, locate_field,
    model_writes_program,
};
use bridle_core::manifest_service::{ManifestsService, parse_request};
use bridle_proto::manifests_server::Manifests;
use bridle_proto::{
    ApplyRequest, ApplyResponse, DeleteManifestRequest, DeleteManifestResponse,
    ListManifestsRequest, ListManifestsResponse,
};
use tonic::{Request, Response, Status};

use crate::egress::Platform;
use crate::quota::{Quotas, check_manifests};
use crate::sandbox::{Backend, Runtimes};

pub struct ToolManifests {
    pub inner: ManifestsService,
    pub quotas: Quotas,
    pub egress: Arc<Platform>,
    pub runtimes: Arc<Runtimes>,
    pub backend: Arc<dyn Backend>,
    /// Whether sandboxes can be started ahead of their run (not with workspace folders).
    pub warm_pools: bool,
}

#[tonic::async_trait]
impl Manifests for ToolManifests {
    async fn apply(
        &self,
        mut req: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        // The tenants the shared service will store under, before the documents are read here.
        bridle_core::manifest_service::bind_tenant(&mut req)?;
        let r = req.get_ref();
        let manifests = parse_request(&r.documents, &r.tenant, Some(Owner::Tools))?;
        let mut problems = check_manifests(&self.quotas, &manifests, &r.documents);
        for (m, d) in manifests.iter().zip(&r.documents) {
            if let Manifest::Tool(t) = m {
                problems.extend(check_egress(&self.egress, &r.tenant, t, d));
                problems
                    .extend(check_runtime(&self.runtimes, &*self.backend, m.tenant(), t, d).await);
                if !self.warm_pools {
                    problems.extend(check_no_warm_pool(t, d));
                }
            }
        }
        if !problems.is_empty() {
            return Err(bridle_core::Error::from(ValidationErrors(problems)).into());
        }
        let dry_run = r.dry_run;
        let resp = self.inner.apply(req).await?;
        if !dry_run {
            // The audit of an opt-in: who gives secrets to model-written code, and why.
            for m in &manifests {
                if let Manifest::Tool(t) = m
                    && let Some(o) = &t.spec.allow_secrets_with_model_code
                    && let Some(why) = model_writes_program(&t.spec)
                {
                    tracing::warn!(
                        tenant = m.tenant(),
                        tool = m.name(),
                        reason = %o.reason,
                        "a tool gives secrets to code the model writes ({why})"
                    );
                }
            }
        }
        Ok(resp)
    }

    async fn list_manifests(
        &self,
        req: Request<ListManifestsRequest>,
    ) -> Result<Response<ListManifestsResponse>, Status> {
        self.inner.list_manifests(req).await
    }

    async fn delete_manifest(
        &self,
        req: Request<DeleteManifestRequest>,
    ) -> Result<Response<DeleteManifestResponse>, Status> {
        self.inner.delete_manifest(req).await
    }

    async fn history(
        &self,
        req: Request<bridle_proto::HistoryRequest>,
    ) -> Result<Response<bridle_proto::HistoryResponse>, Status> {
        self.inner.history(req).await
    }
}

/// Where a sandboxed Tool's settings are, its runtime and its warm pool size.
fn sandbox_settings(t: &Tool) -> Option<(&'static str, Option<&str>, u32)> {
    let s = &t.spec;
    if let Some(c) = &s.container {
        Some(("spec.container", c.runtime.as_deref(), c.pool.warm))
    } else if let Some(c) = &s.code {
        Some(("spec.code", c.runtime.as_deref(), c.pool.warm))
    } else {
        let m = s.mcp.as_ref()?.stdio.as_ref()?;
        Some(("spec.mcp.stdio", m.runtime.as_deref(), m.pool.warm))
    }
}

/// The runtime of a Tool's sandbox: one its tenant is not bound to, or one the engine does not
/// have (when the engine answers within a few seconds; otherwise the call will tell).
pub async fn check_runtime(
    runtimes: &Runtimes,
    backend: &dyn Backend,
    tenant: &str,
    t: &Tool,
    doc: &bridle_proto::ManifestDocument,
) -> Option<ManifestError> {
    let (field, asked, warm) = sandbox_settings(t)?;
    let problem = |sub: &str, message: String| ManifestError {
        source: doc.source.clone(),
        line: locate_field(doc.first_line, &doc.yaml, &format!("{field}.{sub}")),
        subject: Some(format!("Tool '{}'", t.metadata.name)),
        message,
        field: format!("{field}.{sub}"),
    };
    match runtimes.resolve(tenant, asked) {
        Err(why) => Some(problem(
            "runtime",
            why.strip_prefix("runtime: ").unwrap_or(&why).to_string(),
        )),
        Ok(Some(rt)) => match backend.has_runtime(&rt).await {
            Some(Err(e)) => Some(problem("runtime", e.to_string())),
            _ if warm > 0 && !crate::sandbox::runtime::shares_host_mounts(Some(&rt)) => {
                Some(problem(
                    "pool.warm",
                    format!(
                        "a sandbox under runtime '{rt}' cannot be started ahead of its run: it does not see the run's workspace mounted after it starts (only runtimes on the host's kernel, such as runc, do); set pool.warm to 0"
                    ),
                ))
            }
            _ => None,
        },
        Ok(None) => None,
    }
}

/// A Tool asking for warm sandboxes from a service whose workspaces are folders
/// (`workspace_mode: folder`): a sandbox only sees its run's folder when it is made for it.
pub fn check_no_warm_pool(t: &Tool, doc: &bridle_proto::ManifestDocument) -> Option<ManifestError> {
    let (field, _, warm) = sandbox_settings(t)?;
    (warm > 0).then(|| ManifestError {
        source: doc.source.clone(),
        line: locate_field(doc.first_line, &doc.yaml, &format!("{field}.pool.warm")),
        subject: Some(format!("Tool '{}'", t.metadata.name)),
        message: "this tools service keeps no warm sandboxes: its run workspaces are folders (workspace_mode: folder), which a sandbox only sees when it is made for its run; set pool.warm to 0".into(),
        field: format!("{field}.pool.warm"),
    })
}

/// The egress rules of a Tool, and the URL hosts of its http and MCP kinds, against what the
/// platform lets `tenant` reach (the part that can be told before anything resolves).
pub fn check_egress(
    platform: &Platform,
    tenant: &str,
    t: &Tool,
    doc: &bridle_proto::ManifestDocument,
) -> Vec<ManifestError> {
    let s = &t.spec;
    let mut rules: Vec<(String, &str)> = Vec::new();
    let mut lists = vec![
        (
            "spec.container.egress",
            s.container.as_ref().map(|c| &c.egress),
        ),
        ("spec.code.egress", s.code.as_ref().map(|c| &c.egress)),
        ("spec.http.egress", s.http.as_ref().map(|h| &h.egress)),
    ];
    lists.push((
        "spec.mcp.stdio.egress",
        s.mcp
            .as_ref()
            .and_then(|m| m.stdio.as_ref())
            .map(|m| &m.egress),
    ));
    for (field, list) in lists {
        for (i, e) in list.into_iter().flatten().enumerate() {
            rules.push((format!("{field}[{i}]"), e.as_str()));
        }
    }
    // A URL whose host is fixed (no `{{argument}}` in it) is a rule of its own.
    let urls = [
        (
            "spec.http.url",
            s.http
                .as_ref()
                .filter(|h| h.egress.is_empty())
                .map(|h| &h.url),
        ),
        ("spec.mcp.url", s.mcp.as_ref().and_then(|m| m.url.as_ref())),
    ];
    let url_rules: Vec<(String, String)> = urls
        .into_iter()
        .filter_map(|(field, url)| {
            let u = url::Url::parse(url?).ok()?;
            let host = u.host_str()?;
            let port = u.port_or_known_default()?;
            (!host.contains("{{") && !host.contains("%7B"))
                .then(|| (field.to_string(), format!("{host}:{port}")))
        })
        .collect();
    let all = rules
        .into_iter()
        .map(|(f, r)| (f, r.to_string()))
        .chain(url_rules);
    all.filter_map(|(field, rule)| {
        let why = platform.check_rule(tenant, &EgressRule::parse(&rule).ok()?)?;
        Some(ManifestError {
            source: doc.source.clone(),
            line: locate_field(doc.first_line, &doc.yaml, &field),
            subject: Some(format!("Tool '{}'", t.metadata.name)),
            message: format!(
                "{why} (the platform decides which non-public addresses tools may reach: the tools service's egress_private_allow options)"
            ),
            field,
        })
    })
    .collect()
}
