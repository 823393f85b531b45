//! The `bridle.v1.Router` gRPC service: a thin front over the [`Dispatcher`] that checks who
//! is calling. Services (the orchestrator) may call for any tenant; an API key only for its
//! own, with the operator role to make calls and the viewer role to list routes.

use std::sync::Arc;

use bridle_core::auth::{Role, principal};
use bridle_proto::router_server::Router;
use bridle_proto::{CompleteRequest, CompleteResponse, ListModelsRequest, ListModelsResponse};
use tokio_stream::Iter;
use tokio_stream::StreamExt as _;
use tokio_stream::adapters::Chain;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::dispatch::Dispatcher;
use crate::provider::StreamItem;

pub struct RouterService {
    dispatch: Arc<Dispatcher>,
}

impl RouterService {
    pub fn new(dispatch: Arc<Dispatcher>) -> Self {
        Self { dispatch }
    }
}

/// The request with its tenant set to the one the caller may act for.
fn authorized(req: Request<CompleteRequest>) -> Result<CompleteRequest, Status> {
    let p = principal(&req);
    p.require(Role::Operator)?;
    let mut req = req.into_inner();
    let mut scope = req.scope.take().unwrap_or_default();
    scope.tenant = p.tenant_for(&scope.tenant)?;
    req.scope = Some(scope);
    Ok(req)
}

#[tonic::async_trait]
impl Router for RouterService {
    async fn complete(
        &self,
        req: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        let resp = self.dispatch.complete(authorized(req)?).await?;
        Ok(Response::new(resp))
    }

    type CompleteStreamStream =
        Chain<Iter<std::option::IntoIter<StreamItem>>, ReceiverStream<StreamItem>>;

    /// The response starts with the stream's first item: a call that fails before any delta
    /// gets its error as the call's status, and the response headers leave together with the
    /// first chunk instead of in a write (and a wake-up of the caller) of their own.
    async fn complete_stream(
        &self,
        req: Request<CompleteRequest>,
    ) -> Result<Response<Self::CompleteStreamStream>, Status> {
        let admitted = self.dispatch.admit(authorized(req)?).await?;
        let mut rx = self.dispatch.stream(admitted);
        let first = match rx.recv().await {
            Some(Err(status)) => return Err(status),
            first => first,
        };
        Ok(Response::new(
            tokio_stream::iter(first).chain(ReceiverStream::new(rx)),
        ))
    }

    async fn list_models(
        &self,
        req: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Viewer)?;
        let tenant = p.tenant_for(&req.into_inner().tenant)?;
        let routes = self.dispatch.list_models(&tenant).await?;
        Ok(Response::new(ListModelsResponse { routes }))
    }
}
