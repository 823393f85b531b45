//! `bridle.v1.Manifests` of the approvals service: the shared manifest service, plus what only
//! this service can check — the Cedar text of each `Policy` parses and validates against the
//! schema — with problems reported at their line of the manifest file.

use std::sync::Arc;

use bridle_core::manifest::{Manifest, ManifestError, Owner, ValidationErrors, cedar_line};
use bridle_core::manifest_service::{ManifestsService, parse_request};
use bridle_proto::manifests_server::Manifests;
use bridle_proto::{
    ApplyRequest, ApplyResponse, DeleteManifestRequest, DeleteManifestResponse,
    ListManifestsRequest, ListManifestsResponse, ManifestDocument,
};
use tonic::{Request, Response, Status};

use crate::cedar::{CedarProblem, compile_manifest};
use crate::policies::Policies;

pub struct PolicyManifests {
    inner: ManifestsService,
    policies: Arc<Policies>,
}

impl PolicyManifests {
    pub fn new(inner: ManifestsService, policies: Arc<Policies>) -> Self {
        Self { inner, policies }
    }
}

fn tenant_or_default(t: &str) -> String {
    if t.is_empty() {
        bridle_core::manifest::DEFAULT_TENANT.to_string()
    } else {
        t.to_string()
    }
}

/// One Cedar problem as a manifest error: at its file line when the document has line
/// numbers, else with its line within the Cedar text in the message.
pub fn locate(doc: &ManifestDocument, name: &str, p: &CedarProblem) -> ManifestError {
    let file_line = p
        .line
        .and_then(|l| cedar_line(doc.first_line, &doc.yaml, l));
    let at = match (p.line, p.column) {
        (Some(l), Some(c)) => format!("line {l}, column {c} of the Cedar text"),
        (Some(l), None) => format!("line {l} of the Cedar text"),
        _ => "the Cedar text".to_string(),
    };
    let message = if file_line.is_some() {
        format!("{} ({at})", p.message)
    } else {
        format!("{at}: {}", p.message)
    };
    ManifestError {
        source: if doc.source.is_empty() {
            "<request>".into()
        } else {
            bridle_core::redact::preview(&doc.source, MAX_SOURCE)
        },
        line: file_line,
        subject: Some(format!("Policy '{name}'")),
        field: "spec.cedar".into(),
        message,
    }
}

/// Characters of a document's source (its file name) quoted in an error.
const MAX_SOURCE: usize = 200;
/// Problems reported per Policy: the rest are counted, so the answer stays short however
/// broken the text is.
const MAX_PROBLEMS: usize = 10;

/// Every problem of every Policy in the request (the first [`MAX_PROBLEMS`] of each).
pub fn check_policies(docs: &[ManifestDocument], manifests: &[Manifest]) -> Vec<ManifestError> {
    let mut out = Vec::new();
    for (m, d) in manifests.iter().zip(docs) {
        if let Manifest::Policy(p) = m
            && let Err(problems) = compile_manifest(&p.metadata.name, &p.spec.cedar)
        {
            let name = &p.metadata.name;
            out.extend(
                problems
                    .iter()
                    .take(MAX_PROBLEMS)
                    .map(|pr| locate(d, name, pr)),
            );
            if problems.len() > MAX_PROBLEMS {
                let more = CedarProblem {
                    line: None,
                    column: None,
                    message: format!(
                        "and {} more problems not listed",
                        problems.len() - MAX_PROBLEMS
                    ),
                };
                out.push(locate(d, name, &more));
            }
        }
    }
    out
}

#[tonic::async_trait]
impl Manifests for PolicyManifests {
    async fn apply(
        &self,
        mut req: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        // The tenants the shared service will store under, before the documents are read here.
        bridle_core::manifest_service::bind_tenant(&mut req)?;
        let r = req.get_ref();
        let manifests = parse_request(&r.documents, &r.tenant, Some(Owner::Approvals))?;
        let problems = check_policies(&r.documents, &manifests);
        if !problems.is_empty() {
            return Err(bridle_core::Error::from(ValidationErrors(problems)).into());
        }
        let dry_run = r.dry_run;
        let mut tenants: Vec<String> = manifests.iter().map(|m| m.tenant().to_string()).collect();
        tenants.sort();
        tenants.dedup();
        let resp = self.inner.apply(req).await?;
        if !dry_run {
            for t in &tenants {
                self.policies.changed(t).await?;
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
        let tenant = tenant_or_default(&req.get_ref().tenant);
        let resp = self.inner.delete_manifest(req).await?;
        if resp.get_ref().deleted {
            self.policies.changed(&tenant).await?;
        }
        Ok(resp)
    }

    async fn history(
        &self,
        req: Request<bridle_proto::HistoryRequest>,
    ) -> Result<Response<bridle_proto::HistoryResponse>, Status> {
        self.inner.history(req).await
    }
}
