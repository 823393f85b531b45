//! One call through a route: the targets in the strategy's order, skipping those whose
//! circuit breaker is open, retries of the same target on transient failures, one key refetch
//! on a 401, failover on anything else, every try recorded, and the answer's usage and cost.
//!
//! Streaming goes through the same loop with a [`DeltaSink`]; once a delta has been sent the
//! call can no longer retry or fail over, because the caller has already shown the text.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bridle_core::manifest::{DEFAULT_TENANT, ModelRoute, ProviderKind, Target};
use bridle_core::timeutil::{pb_duration, std_duration};
use bridle_proto::{Attempt, CompleteRequest, CompleteResponse, Cost, Scope};

use crate::error::{Error, FailureCode};
use crate::health::{Admit, Health, Outcome};
use crate::keys::KeyResolver;
use crate::prices;
use crate::provider::anthropic::Anthropic;
use crate::provider::openai::OpenAi;
use crate::provider::{DeltaSink, FailureKind, ProviderReply, TryError, model_of, scripted};
use crate::{retry, select};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub try_timeout: Duration,
    pub call_timeout: Duration,
    pub max_retries: u32,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
}

pub struct Engine {
    openai: OpenAi,
    anthropic: Anthropic,
    keys: KeyResolver,
    health: Health,
    cfg: EngineConfig,
    prices: Arc<prices::Prices>,
}

/// How one target ended, for the error that lists them.
struct Failure {
    target: String,
    message: String,
    code: FailureCode,
    tries: u32,
}

/// The scope a call is made for; the tenant defaulted.
pub fn scope_of(req: &CompleteRequest) -> Scope {
    let mut scope = req.scope.clone().unwrap_or_default();
    if scope.tenant.is_empty() {
        scope.tenant = DEFAULT_TENANT.into();
    }
    scope
}

impl Engine {
    pub fn new(
        http: reqwest::Client,
        keys: KeyResolver,
        health: Health,
        cfg: EngineConfig,
        prices: Arc<prices::Prices>,
    ) -> Self {
        Self {
            openai: OpenAi::new(http.clone()),
            anthropic: Anthropic::new(http),
            keys,
            health,
            cfg,
            prices,
        }
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn prices(&self) -> &prices::Prices {
        &self.prices
    }

    /// Runs the call. With a sink it streams, and the caller sends the final chunk.
    pub async fn complete(
        &self,
        route: &ModelRoute,
        req: &CompleteRequest,
        sink: Option<&DeltaSink>,
    ) -> Result<CompleteResponse, Error> {
        let started = Instant::now();
        let budget = std_duration(req.timeout.as_ref())
            .or(route.spec.timeout)
            .unwrap_or(self.cfg.call_timeout);
        let deadline = started + budget;
        let name = route.metadata.name.as_str();
        let tenant = req
            .scope
            .as_ref()
            .map(|s| s.tenant.as_str())
            .filter(|t| !t.is_empty())
            .unwrap_or(DEFAULT_TENANT);
        let mut attempts = Vec::new();
        let mut failures = Vec::new();
        let mut skipped = Vec::new();
        'targets: for target in select::order(route, tenant, &self.health, &self.prices) {
            if req.require_price && !self.prices.known_for(target, model_of(target)) {
                failures.push(Failure {
                    target: target.name.clone(),
                    message: format!(
                        "target '{}' (model '{}') has no known price, and this call counts against a cost budget; declare `price` on the target in route '{name}'",
                        target.name,
                        model_of(target)
                    ),
                    code: FailureCode::FailedPrecondition,
                    tries: 0,
                });
                continue;
            }
            let admitted = self
                .health
                .admit(tenant, name, &target.name, Instant::now());
            if let Admit::No(reopens) = admitted {
                skipped.push((target.name.as_str(), reopens));
                continue;
            }
            // A probe whose call is dropped (the caller went away) must not leave the breaker
            // waiting for a verdict forever.
            let _probe = (admitted == Admit::Probe).then(|| ProbeGuard {
                health: &self.health,
                key: (tenant, name, &target.name),
            });
            let (mut retries, mut tries, mut refetched, mut refresh) = (0u32, 0u32, false, false);
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    failures.push(Failure {
                        target: target.name.clone(),
                        message: format!(
                            "the call's deadline of {} passed",
                            bridle_core::timeutil::short_duration(budget)
                        ),
                        code: FailureCode::DeadlineExceeded,
                        tries,
                    });
                    break 'targets;
                }
                let timeout = target
                    .timeout
                    .unwrap_or(self.cfg.try_timeout)
                    .min(remaining);
                let t0 = Instant::now();
                // Each try is a span of its own under the call's: retries and failover to the
                // next target show as siblings, each with its target and outcome.
                let span = attempt_span(name, target, tries + 1);
                let result = tracing::Instrument::instrument(
                    self.try_once(name, target, req, refresh, timeout, sink),
                    span.clone(),
                )
                .await;
                attempt_done(&span, &result);
                drop(span);
                let took = t0.elapsed();
                tries += 1;
                refresh = false;
                attempts.push(record(name, target, &result, took));
                let outcome = match &result {
                    Ok(_) => Outcome::Success(took),
                    Err(e) if e.unhealthy => Outcome::Unhealthy,
                    Err(_) => Outcome::Neutral,
                };
                let open = self
                    .health
                    .record(tenant, name, &target.name, outcome, Instant::now());
                let err = match result {
                    Ok(reply) => {
                        return Ok(response(&self.prices, target, reply, attempts, started));
                    }
                    Err(e) => e,
                };
                if err.kind == FailureKind::ClientGone || sink.is_some_and(DeltaSink::started) {
                    return Err(Error::StreamBroken {
                        route: name.into(),
                        target: target.name.clone(),
                        code: err.code,
                        message: err.message,
                    });
                }
                match err.kind {
                    FailureKind::Unauthorized if !refetched && target.api_key.is_some() => {
                        refetched = true;
                        refresh = true;
                        continue;
                    }
                    // An open breaker ends the retries: the target is down for now.
                    FailureKind::Retryable if retries < self.cfg.max_retries && !open => {
                        let backoff = retry::backoff(
                            self.cfg.retry_base_delay,
                            self.cfg.retry_max_delay,
                            retries,
                        );
                        let left = deadline.saturating_duration_since(Instant::now());
                        if let Some(wait) = retry::next_wait(
                            backoff,
                            err.retry_after,
                            self.cfg.retry_max_delay,
                            left,
                        ) {
                            tokio::time::sleep(wait).await;
                            retries += 1;
                            continue;
                        }
                    }
                    _ => {}
                }
                failures.push(Failure {
                    target: target.name.clone(),
                    message: err.message,
                    code: err.code,
                    tries,
                });
                break;
            }
        }
        if failures.is_empty() && !skipped.is_empty() {
            let each: Vec<String> = skipped
                .iter()
                .map(|(t, d)| match d.is_zero() {
                    true => format!("'{t}' (being probed)"),
                    false => format!(
                        "'{t}' (retried in {})",
                        bridle_core::timeutil::short_duration(*d)
                    ),
                })
                .collect();
            return Err(Error::TargetsFailed {
                route: name.into(),
                code: FailureCode::Unavailable,
                message: format!(
                    "every target of route '{name}' has its circuit breaker open: {}",
                    each.join(", ")
                ),
                // The first breaker to let a call through; one being probed may close any
                // moment, so a second.
                retry_after: skipped
                    .iter()
                    .map(|(_, d)| *d)
                    .min()
                    .map(|d| d.max(Duration::from_secs(1))),
            });
        }
        Err(all_failed(name, failures))
    }

    async fn try_once(
        &self,
        route: &str,
        target: &Target,
        req: &CompleteRequest,
        refresh: bool,
        timeout: Duration,
        sink: Option<&DeltaSink>,
    ) -> Result<ProviderReply, TryError> {
        let attempt = self.provider_try(route, target, req, refresh, timeout, sink);
        match sink {
            // A caller that dropped its stream should not keep a provider busy.
            Some(s) => tokio::select! {
                r = attempt => r,
                () = s.gone() => Err(TryError::client_gone()),
            },
            None => attempt.await,
        }
    }

    async fn creds(
        &self,
        route: &str,
        target: &Target,
        req: &CompleteRequest,
        refresh: bool,
    ) -> Result<crate::provider::http::Creds, TryError> {
        let mut scope = scope_of(req);
        scope.provider = format!("{route}/{}", target.name);
        self.keys.creds(&scope, target, refresh).await
    }

    async fn provider_try(
        &self,
        route: &str,
        target: &Target,
        req: &CompleteRequest,
        refresh: bool,
        timeout: Duration,
        sink: Option<&DeltaSink>,
    ) -> Result<ProviderReply, TryError> {
        match target.provider {
            ProviderKind::Scripted => {
                let reply = scripted::reply(route, target, &req.messages)?;
                if let Some(s) = sink {
                    scripted::stream(&reply, s).await?;
                }
                Ok(reply)
            }
            ProviderKind::Openai => {
                let creds = self.creds(route, target, req, refresh).await?;
                self.openai.call(target, req, &creds, timeout, sink).await
            }
            ProviderKind::Anthropic => {
                let creds = self.creds(route, target, req, refresh).await?;
                self.anthropic
                    .call(target, req, &creds, timeout, sink)
                    .await
            }
        }
    }
}

struct ProbeGuard<'a> {
    health: &'a Health,
    key: (&'a str, &'a str, &'a str),
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        let (tenant, route, target) = self.key;
        self.health.end_probe(tenant, route, target);
    }
}

/// The span of one try of one target: the GenAI conventions' client span for the provider
/// call (`chat {model}`), with the route, target and try number.
fn attempt_span(route: &str, target: &Target, attempt: u32) -> tracing::Span {
    let model = model_of(target);
    tracing::info_span!(
        "attempt",
        "otel.name" = %format!("chat {model}"),
        "otel.kind" = "client",
        "otel.status_code" = tracing::field::Empty,
        "gen_ai.operation.name" = "chat",
        "gen_ai.provider.name" = target.provider.as_str(),
        "gen_ai.request.model" = model,
        "gen_ai.response.model" = tracing::field::Empty,
        "error.type" = tracing::field::Empty,
        "bridle.route" = route,
        "bridle.target" = %target.name,
        "bridle.attempt" = attempt,
    )
}

fn attempt_done(span: &tracing::Span, result: &Result<ProviderReply, TryError>) {
    match result {
        Ok(r) => {
            span.record("gen_ai.response.model", r.model.as_str());
        }
        Err(e) => {
            // Low cardinality: the HTTP status when there was one, else the failure's code.
            let kind = match e.http_status {
                Some(s) => s.to_string(),
                None => format!("{:?}", e.code).to_lowercase(),
            };
            span.record("error.type", kind.as_str());
            span.record("otel.status_code", "ERROR");
        }
    }
}

fn record(
    route: &str,
    target: &Target,
    result: &Result<ProviderReply, TryError>,
    took: Duration,
) -> Attempt {
    let (error, status) = match result {
        Ok(r) => (String::new(), r.http_status),
        Err(e) => (e.message.clone(), e.http_status),
    };
    let status = status.map(u32::from).unwrap_or(0);
    // A success per call would be a log line per call at thousands a second: debug level; a
    // failure is worth a warning.
    if error.is_empty() {
        tracing::debug!(route, target = %target.name, provider = target.provider.as_str(), http_status = status, took_ms = took.as_millis() as u64, "model call succeeded");
    } else {
        tracing::warn!(route, target = %target.name, provider = target.provider.as_str(), http_status = status, took_ms = took.as_millis() as u64, error = %error, "model call failed");
    }
    Attempt {
        target: target.name.clone(),
        provider: target.provider.as_str().into(),
        model: model_of(target).into(),
        duration: Some(pb_duration(took)),
        error,
        http_status: status,
    }
}

fn response(
    prices: &prices::Prices,
    target: &Target,
    reply: ProviderReply,
    attempts: Vec<Attempt>,
    started: Instant,
) -> CompleteResponse {
    let scripted = target.provider == ProviderKind::Scripted;
    let cost = if scripted {
        Cost {
            known: true,
            nano_usd: 0,
        }
    } else {
        prices::cost(
            prices.for_target(target, &reply.model).as_ref(),
            &reply.usage,
        )
    };
    CompleteResponse {
        message: Some(reply.message),
        finish_reason: reply.finish_reason as i32,
        provider: target.provider.as_str().into(),
        model: reply.model,
        target: target.name.clone(),
        scripted,
        usage: Some(reply.usage),
        cost: Some(cost),
        latency: Some(pb_duration(started.elapsed())),
        attempts,
        response_id: reply.response_id,
    }
}

fn all_failed(route: &str, failures: Vec<Failure>) -> Error {
    let tries = |f: &Failure| {
        if f.tries > 1 {
            format!(" (after {} tries)", f.tries)
        } else {
            String::new()
        }
    };
    let code = failures
        .last()
        .map(|f| f.code)
        .unwrap_or(FailureCode::FailedPrecondition);
    let message = match failures.as_slice() {
        [] => format!("route '{route}' has no target to try"),
        [one] => format!("{}{}", one.message, tries(one)),
        many => {
            let parts: Vec<String> = many
                .iter()
                .map(|f| format!("target '{}': {}{}", f.target, f.message, tries(f)))
                .collect();
            format!(
                "every target of route '{route}' failed: {}",
                parts.join("; ")
            )
        }
    };
    Error::TargetsFailed {
        route: route.into(),
        code,
        message,
        retry_after: None,
    }
}
