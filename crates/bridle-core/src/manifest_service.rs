//! The `bridle.v1.Manifests` service for one owning service: validates the documents with the
//! shared manifest code, refuses kinds the service does not own, and stores the rest in its
//! [`ManifestStore`] in one transaction (or only plans, for a dry run).

use bridle_proto::manifests_server::Manifests;
use bridle_proto::{
    AppliedManifest, ApplyRequest, ApplyResponse, DeleteManifestRequest, DeleteManifestResponse,
    HistoryRequest, HistoryResponse, ListManifestsRequest, ListManifestsResponse, StoredManifest,
};
use tonic::{Request, Response, Status};

use crate::Error;
use crate::manifest::{self, Document, ManifestError, Owner, ParseOptions, ValidationErrors};
use crate::store::ManifestStore;

#[derive(Clone)]
pub struct ManifestsService {
    store: ManifestStore,
    owner: Owner,
}

impl ManifestsService {
    pub fn new(store: ManifestStore, owner: Owner) -> Self {
        Self { store, owner }
    }
}

fn tenant_or_default(t: &str) -> &str {
    if t.is_empty() {
        manifest::DEFAULT_TENANT
    } else {
        t
    }
}

/// Parses request documents into validated manifests, all owned by `owner`.
pub fn parse_request(
    docs: &[bridle_proto::ManifestDocument],
    tenant: &str,
    owner: Option<Owner>,
) -> Result<Vec<manifest::Manifest>, Error> {
    if docs.is_empty() {
        // An apply of nothing that answers OK would hide a caller's mistake (an empty file,
        // a wrong glob).
        return Err(Error::InvalidArgument(
            "documents: no manifests in the request; send at least one".into(),
        ));
    }
    let docs: Vec<Document> = docs
        .iter()
        .map(|d| Document {
            source: if d.source.is_empty() {
                "<request>".into()
            } else {
                d.source.clone()
            },
            first_line: d.first_line,
            yaml: d.yaml.clone(),
        })
        .collect();
    let opts = ParseOptions {
        default_tenant: tenant_or_default(tenant),
        base_dir: None,
    };
    let manifests = manifest::parse_all(&docs, &opts)?;
    if let Some(owner) = owner {
        let wrong: Vec<ManifestError> = manifests
            .iter()
            .zip(&docs)
            .filter(|(m, _)| m.owner() != owner)
            .map(|(m, d)| ManifestError {
                source: d.source.clone(),
                line: None,
                subject: Some(format!("{} '{}'", m.kind(), m.name())),
                field: "kind".into(),
                message: format!(
                    "{} manifests belong to the {} service, not the {} service",
                    m.kind(),
                    m.owner().as_str(),
                    owner.as_str()
                ),
            })
            .collect();
        if !wrong.is_empty() {
            return Err(ValidationErrors(wrong).into());
        }
    }
    Ok(manifests)
}

/// Where a stored manifest sits in ListManifests' order (by kind, then name), and so in its
/// page tokens.
pub fn list_key(m: &StoredManifest) -> String {
    format!(
        "{}/{}",
        manifest::kind_name(m.kind).unwrap_or_default(),
        m.name
    )
}

/// The one tenant rule ([`crate::auth::Principal::tenant_for`]) applied to an apply request in
/// place: its `tenant` becomes the one the caller acts for, so a service that reads the
/// documents before the shared service stores them sees the tenants that will be stored.
pub fn bind_tenant(req: &mut Request<ApplyRequest>) -> Result<(), Error> {
    let tenant = crate::auth::principal(req).tenant_for(&req.get_ref().tenant)?;
    req.get_mut().tenant = tenant.into();
    Ok(())
}

/// Refuses manifests whose `metadata.tenant` names a tenant the caller cannot act for.
pub fn check_tenants(
    p: &crate::auth::Principal,
    manifests: &[manifest::Manifest],
) -> Result<(), Error> {
    match manifests.iter().find(|m| !p.sees(m.tenant())) {
        None => Ok(()),
        Some(m) => Err(Error::PermissionDenied(format!(
            "{} '{}' is for tenant '{}', which {} '{}' cannot act for",
            m.kind(),
            m.name(),
            m.tenant(),
            crate::auth::kind_word(p.kind()),
            p.name
        ))),
    }
}

/// How many changes a History request gets: 20 when it says 0, at most what is kept.
pub fn history_limit(asked: u32) -> usize {
    match asked {
        0 => 20,
        n => (n as usize).min(crate::store::HISTORY_KEPT),
    }
}

#[tonic::async_trait]
impl Manifests for ManifestsService {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let p = crate::auth::principal(&req);
        p.require(crate::auth::Role::Operator)?;
        let req = req.into_inner();
        let tenant = p.tenant_for(&req.tenant)?;
        let actor = p.acting_for(req.actor.as_ref());
        let manifests = parse_request(&req.documents, &tenant, Some(self.owner))?;
        check_tenants(&p, &manifests)?;
        let actions = if req.dry_run {
            self.store.plan(&manifests).await?
        } else {
            self.store.put_all(&manifests, &actor).await?
        };
        let applied = manifests
            .iter()
            .zip(actions)
            .map(|(m, a)| AppliedManifest {
                kind: manifest::kind_value(m.kind()) as i32,
                name: m.name().into(),
                tenant: m.tenant().into(),
                action: a.to_pb() as i32,
                service: self.owner.as_str().into(),
                unpriced_targets: Vec::new(),
            })
            .collect();
        if !req.dry_run {
            tracing::info!(
                owner = self.owner.as_str(),
                count = manifests.len(),
                "manifests applied"
            );
        }
        Ok(Response::new(ApplyResponse {
            applied,
            dry_run: req.dry_run,
        }))
    }

    async fn list_manifests(
        &self,
        req: Request<ListManifestsRequest>,
    ) -> Result<Response<ListManifestsResponse>, Status> {
        let p = crate::auth::principal(&req);
        p.require(crate::auth::Role::Viewer)?;
        let req = req.into_inner();
        let tenant = p.tenant_for(&req.tenant)?;
        let page = crate::paging::Page::parse(
            req.page_size,
            &req.page_token,
            None,
            crate::paging::MAX_PAGE_SIZE,
        )?;
        let kind = match req.kind {
            0 => None,
            k => Some(manifest::kind_in("kind", k)?),
        };
        let list = self.store.list(&tenant, kind).await?;
        let mut manifests: Vec<StoredManifest> = list
            .into_iter()
            .map(|(m, generation)| StoredManifest {
                kind: manifest::kind_value(m.kind()) as i32,
                name: m.name().into(),
                tenant: m.tenant().into(),
                yaml: m.to_yaml(),
                generation,
            })
            .collect();
        manifests.sort_by_key(list_key);
        let (manifests, next_page_token) = page.of_sorted(manifests, list_key);
        Ok(Response::new(ListManifestsResponse {
            manifests,
            next_page_token,
        }))
    }

    async fn delete_manifest(
        &self,
        req: Request<DeleteManifestRequest>,
    ) -> Result<Response<DeleteManifestResponse>, Status> {
        let p = crate::auth::principal(&req);
        p.require(crate::auth::Role::Operator)?;
        let req = req.into_inner();
        let tenant = p.tenant_for(&req.tenant)?;
        let actor = p.acting_for(req.actor.as_ref());
        let kind = manifest::kind_in("kind", req.kind)?;
        let deleted = self.store.delete(kind, &tenant, &req.name, &actor).await?;
        Ok(Response::new(DeleteManifestResponse { deleted }))
    }

    async fn history(
        &self,
        req: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let p = crate::auth::principal(&req);
        p.require(crate::auth::Role::Viewer)?;
        let req = req.into_inner();
        let tenant = p.tenant_for(&req.tenant)?;
        let changes = self
            .store
            .history(
                manifest::kind_in("kind", req.kind)?,
                &tenant,
                &req.name,
                history_limit(req.limit),
            )
            .await?;
        Ok(Response::new(HistoryResponse { changes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_documents_is_refused_not_applied_as_nothing() {
        let e = parse_request(&[], "default", None).unwrap_err();
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
    }
}
