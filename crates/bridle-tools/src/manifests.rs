//! The tools service's `bridle.v1.Manifests`: the shared service (validation, storage) with
//! one check of this service's own before anything is planned or stored: a Tool's workspace
//! quota above this service's ceiling is refused, at the dry run as at the commit.

use bridle_core::manifest::{Manifest, Owner, ValidationErrors, model_writes_program};
use bridle_core::manifest_service::{ManifestsService, parse_request};
use bridle_proto::manifests_server::Manifests;
use bridle_proto::{
    ApplyRequest, ApplyResponse, DeleteManifestRequest, DeleteManifestResponse,
    ListManifestsRequest, ListManifestsResponse,
};
use tonic::{Request, Response, Status};

use crate::quota::{Quotas, check_manifests};

pub struct ToolManifests {
    pub inner: ManifestsService,
    pub quotas: Quotas,
}

#[tonic::async_trait]
impl Manifests for ToolManifests {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let r = req.get_ref();
        let manifests = parse_request(&r.documents, &r.tenant, Some(Owner::Tools))?;
        let problems = check_manifests(&self.quotas, &manifests, &r.documents);
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
}
