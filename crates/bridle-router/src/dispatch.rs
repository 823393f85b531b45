//! What every front does with a call, whether it came over gRPC or HTTP: check it, find its
//! route, admit it past the rate limits, run it through the engine, and count its tokens.

use std::sync::Arc;
use std::time::Instant;

use bridle_core::Shutdown;
use bridle_core::manifest::{DEFAULT_TENANT, ModelRoute};
use bridle_proto::complete_chunk::Chunk;
use bridle_proto::{CompleteChunk, CompleteRequest, CompleteResponse, ModelRouteInfo, ModelTarget};
use tokio::sync::mpsc;

use crate::Error;
use crate::budgets::{Budgets, Reservation};
use crate::engine::{Engine, scope_of};
use crate::limits::{Limiter, Plan};
use crate::provider::{DeltaSink, StreamItem, model_of};
use crate::routes::Routes;
use crate::{prices, request};

pub struct Dispatcher {
    routes: Routes,
    engine: Engine,
    limiter: Limiter,
    budgets: Budgets,
    shutdown: Shutdown,
    max_request_bytes: usize,
}

/// A call that passed every check, with its route, scope and limit buckets.
pub struct Admitted {
    route: Arc<ModelRoute>,
    req: CompleteRequest,
    plan: Plan,
    /// What the call reserved on its spend budgets, settled when it ends.
    held: Reservation,
}

impl Dispatcher {
    pub fn new(
        routes: Routes,
        engine: Engine,
        limiter: Limiter,
        budgets: Budgets,
        shutdown: Shutdown,
        max_request_bytes: usize,
    ) -> Self {
        Self {
            routes,
            engine,
            limiter,
            budgets,
            shutdown,
            max_request_bytes,
        }
    }

    /// Every route of `tenant`, sorted by name.
    pub async fn routes(&self, tenant: &str) -> Result<Vec<ModelRoute>, Error> {
        self.routes.list(tenant).await
    }

    /// Checks the request, finds its route and takes it past the limits. Nothing reaches a
    /// provider before this succeeds.
    pub async fn admit(&self, mut req: CompleteRequest) -> Result<Admitted, Error> {
        request::validate(&req, self.max_request_bytes)?;
        let scope = scope_of(&req);
        let route = self.routes.get(&scope.tenant, &req.route).await?;
        let plan = self.limiter.plan(&scope.tenant, &scope.agent, &route);
        self.limiter.admit(&plan).await?;
        req.scope = Some(scope);
        // Last: a call refused by a rate limit reserves nothing.
        let held = self
            .budgets
            .reserve(&mut req, &route, self.engine.prices())
            .await?;
        Ok(Admitted {
            route,
            req,
            plan,
            held,
        })
    }

    /// Counts a finished call: its cost on its budgets and the ledger, its tokens on its rate
    /// limits. The answer is already paid for: a failure here is
    /// logged, and the caller still gets it.
    async fn count(&self, a: &Admitted, resp: &CompleteResponse) {
        self.budgets.settle(&a.held, &a.route, Some(resp)).await;
        let tokens = resp
            .usage
            .as_ref()
            .map(|u| u.input_tokens.saturating_add(u.output_tokens))
            .unwrap_or(0);
        if let Err(e) = self.limiter.spend(&a.plan, tokens).await {
            tracing::warn!(route = %a.route.metadata.name, error = %e, "cannot count the call's tokens against its limits");
        }
    }

    pub async fn complete(
        self: &Arc<Self>,
        req: CompleteRequest,
    ) -> Result<CompleteResponse, Error> {
        let a = self.admit(req).await?;
        if a.held.is_empty() {
            return self.finish(a).await;
        }
        // A call holding a reservation is seen to its end even when its caller goes away, so
        // that the reservation is settled to what the provider billed, never left standing.
        let this = self.clone();
        self.shutdown
            .spawn(async move { this.finish(a).await })
            .await
            .map_err(|e| bridle_core::Error::internal(format!("a model call's task failed: {e}")))?
    }

    async fn finish(&self, a: Admitted) -> Result<CompleteResponse, Error> {
        match self.engine.complete(&a.route, &a.req, None).await {
            Ok(resp) => {
                self.count(&a, &resp).await;
                Ok(resp)
            }
            Err(e) => {
                self.budgets.settle(&a.held, &a.route, None).await;
                Err(e)
            }
        }
    }

    /// The process's shutdown, for tasks that must drain with it.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Runs an admitted call as a stream on a task that shutdown drains: deltas, then the
    /// final response or the error.
    pub fn stream(self: &Arc<Self>, a: Admitted) -> mpsc::Receiver<StreamItem> {
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        self.shutdown.spawn(async move {
            let sink = DeltaSink::new(tx);
            let last = match this.engine.complete(&a.route, &a.req, Some(&sink)).await {
                Ok(resp) => {
                    this.count(&a, &resp).await;
                    Ok(CompleteChunk {
                        chunk: Some(Chunk::Done(resp)),
                    })
                }
                Err(e) => {
                    this.budgets.settle(&a.held, &a.route, None).await;
                    Err(tonic::Status::from(e))
                }
            };
            sink.finish(last).await;
        });
        rx
    }

    /// What `tenant` spent, from the ledger, grouped as asked.
    pub async fn spend_report(
        &self,
        tenant: &str,
        req: &bridle_proto::SpendRequest,
    ) -> Result<bridle_proto::SpendResponse, Error> {
        let by = crate::budgets::dimensions(&req.by)?;
        let since = match &req.since {
            None => std::time::Duration::from_secs(86_400),
            Some(d) => bridle_core::timeutil::std_duration(Some(d)).ok_or_else(|| {
                Error::InvalidRequest("since: must be a positive duration".into())
            })?,
        };
        let from = bridle_core::timeutil::now_ms() / 1000
            - i64::try_from(since.as_secs()).unwrap_or(i64::MAX / 2);
        let tenant = if tenant.is_empty() {
            DEFAULT_TENANT
        } else {
            tenant
        };
        let entries = self.budgets.ledger(tenant, from).await?;
        Ok(crate::budgets::report(&entries, &by, from))
    }

    /// The routes of `tenant` with their targets, prices and breaker states.
    pub async fn list_models(&self, tenant: &str) -> Result<Vec<ModelRouteInfo>, Error> {
        let tenant = if tenant.is_empty() {
            DEFAULT_TENANT
        } else {
            tenant
        };
        let now = Instant::now();
        let health = self.engine.health();
        Ok(self
            .routes(tenant)
            .await?
            .into_iter()
            .map(|r| ModelRouteInfo {
                tenant: tenant.to_string(),
                strategy: r.spec.strategy.to_pb() as i32,
                targets: r
                    .spec
                    .targets
                    .iter()
                    .map(|t| {
                        let model = model_of(t).to_string();
                        let price = self.engine.prices().for_target(t, &model);
                        ModelTarget {
                            name: t.name.clone(),
                            provider: t.provider.as_str().into(),
                            price: price.as_ref().map(prices::to_proto),
                            breaker: health.state(tenant, &r.metadata.name, &t.name, now) as i32,
                            model,
                        }
                    })
                    .collect(),
                name: r.metadata.name,
            })
            .collect())
    }
}
