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
use crate::error::{bounded_status, quote};
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
    p.require(Role::Operator).map_err(refused)?;
    let mut req = req.into_inner();
    let mut scope = req.scope.take().unwrap_or_default();
    scope.tenant = p
        .tenant_in("scope.tenant", &scope.tenant)
        .map_err(|e| refused_tenant(e, &scope.tenant))?
        .into();
    req.scope = Some(scope);
    // Only a service (the orchestrator) says whom a call is for; anyone else is counted as
    // themself by spend budgets and the ledger.
    req.caller = Some(p.acting_for(req.caller.as_ref()));
    Ok(req)
}

fn refused(e: bridle_core::Error) -> Status {
    bounded_status(e.into())
}

/// The refusal to act for `requested` quotes that tenant whole, and it may be any length:
/// quoted bounded instead.
fn refused_tenant(e: bridle_core::Error, requested: &str) -> Status {
    let s = Status::from(e);
    if requested.is_empty() {
        return bounded_status(s);
    }
    let message = s.message().replace(requested, &quote(requested));
    bounded_status(Status::with_details_and_metadata(
        s.code(),
        message,
        s.details().to_vec().into(),
        s.metadata().clone(),
    ))
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
        p.require(Role::Viewer).map_err(refused)?;
        let req = req.into_inner();
        let tenant = p
            .tenant_for(&req.tenant)
            .map_err(|e| refused_tenant(e, &req.tenant))?;
        let page = bridle_core::paging::Page::parse(
            req.page_size,
            &req.page_token,
            None,
            bridle_core::paging::MAX_PAGE_SIZE,
        )
        .map_err(refused)?;
        let mut routes = self.dispatch.list_models(&tenant).await?;
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        let (routes, next_page_token) = page.of_sorted(routes, |r| r.name.clone());
        Ok(Response::new(ListModelsResponse {
            routes,
            next_page_token,
        }))
    }

    async fn spend(
        &self,
        req: Request<bridle_proto::SpendRequest>,
    ) -> Result<Response<bridle_proto::SpendResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Viewer).map_err(refused)?;
        let req = req.into_inner();
        let tenant = p
            .tenant_for(&req.tenant)
            .map_err(|e| refused_tenant(e, &req.tenant))?;
        Ok(Response::new(
            self.dispatch.spend_report(&tenant, &req).await?,
        ))
    }
}
