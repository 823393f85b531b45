//! `bridle.v1.Manifests` of the router: the shared manifest service, plus what only the router
//! knows about a route — which of its targets have no known price — so that the orchestrator
//! can refuse an agent whose cost budget could not be kept on them.

use bridle_core::manifest::{Manifest, ModelRoute};
use bridle_core::manifest_service::{ManifestsService, parse_request};
use bridle_proto::manifests_server::Manifests;
use bridle_proto::{
    ApplyRequest, ApplyResponse, DeleteManifestRequest, DeleteManifestResponse,
    ListManifestsRequest, ListManifestsResponse,
};
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::prices::Prices;
use crate::provider::model_of;

pub struct RouteManifests {
    inner: ManifestsService,
    prices: Arc<Prices>,
}

impl RouteManifests {
    pub fn new(inner: ManifestsService, prices: Arc<Prices>) -> Self {
        Self { inner, prices }
    }
}

/// Names of the route's targets whose calls could not be priced.
pub fn unpriced_targets(prices: &Prices, route: &ModelRoute) -> Vec<String> {
    route
        .spec
        .targets
        .iter()
        .filter(|t| !prices.known_for(t, model_of(t)))
        .map(|t| t.name.clone())
        .collect()
}

#[tonic::async_trait]
impl Manifests for RouteManifests {
    async fn apply(
        &self,
        mut req: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        // The tenants the shared service will store under, before the documents are read here.
        bridle_core::manifest_service::bind_tenant(&mut req)?;
        // Parsed once more here (the inner service parses too): cheap next to the Redis
        // transaction, and it keeps the shared service free of router knowledge.
        let manifests = parse_request(&req.get_ref().documents, &req.get_ref().tenant, None)?;
        let mut resp = self.inner.apply(req).await?;
        for a in &mut resp.get_mut().applied {
            if let Some(Manifest::ModelRoute(r)) = manifests.iter().find(|m| {
                bridle_core::manifest::kind_value(m.kind()) as i32 == a.kind
                    && m.name() == a.name
                    && m.tenant() == a.tenant
            }) {
                a.unpriced_targets = unpriced_targets(&self.prices, r);
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
