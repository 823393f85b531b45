use std::sync::Arc;

use bridle_core::auth::{AuthMode, Principal, principal};
use bridle_core::manifest::SecretRef;
use bridle_proto::{
    DeleteGrantRequest, DeleteGrantResponse, GetGrantRequest, Grant, GrantKey, PutGrantRequest,
    PutGrantResponse, ResolveRequest, ResolveResponse, ResolvedSecret, SecretsEndRunRequest,
    SecretsEndRunResponse,
};
use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::access::{Caller, check_end_run, check_grants, check_resolve};
use crate::broker::Broker;
use crate::grants::{Grants, MAX_GRANT_BYTES};

/// Names one Resolve may ask for.
const MAX_NAMES: usize = 64;

pub struct SecretsService {
    broker: Arc<Broker>,
    grants: Grants,
    auth: AuthMode,
}

impl SecretsService {
    pub fn new(broker: Arc<Broker>, grants: Grants, auth: AuthMode) -> Self {
        Self {
            broker,
            grants,
            auth,
        }
    }
}

/// A grant's tenant and tool, checked (they become a Vault path); the tenant by the one rule
/// every service applies ([`Principal::tenant_in`]).
/// `at` is where the two fields are in the request ("" for GetGrant and DeleteGrant, "key."
/// for PutGrant), for the messages.
fn grant_key(
    p: &Principal,
    at: &str,
    tenant: &str,
    tool: String,
) -> Result<(String, String), Error> {
    let tenant = p.tenant_in(&format!("{at}tenant"), tenant)?;
    bridle_core::ids::check_name(&tool).map_err(|e| {
        Error::Core(bridle_core::Error::InvalidArgument(format!(
            "{at}tool: {e}"
        )))
    })?;
    Ok((tenant.into(), tool))
}

#[tonic::async_trait]
impl bridle_proto::secrets_server::Secrets for SecretsService {
    async fn resolve(
        &self,
        req: Request<ResolveRequest>,
    ) -> Result<Response<ResolveResponse>, Status> {
        let caller = Caller::of(&req, self.auth);
        let p = principal(&req);
        let req = req.into_inner();
        let scope = req.scope.unwrap_or_default();
        if req.names.is_empty() {
            return Err(Status::invalid_argument(
                "names: at least one secret name is required",
            ));
        }
        if req.names.len() > MAX_NAMES {
            return Err(Status::invalid_argument(format!(
                "names: at most {MAX_NAMES} per request"
            )));
        }
        check_resolve(&caller, &scope)?;
        let tenant = p.tenant_in("scope.tenant", &scope.tenant)?;
        let refresh = req.refresh;
        let mut names = Vec::with_capacity(req.names.len());
        for raw in &req.names {
            let r = SecretRef::parse(raw).map_err(|e| Error::BadReference(raw.clone(), e))?;
            if !names.iter().any(|n: &String| n == r.name()) {
                names.push(r.name().to_string());
            }
        }
        let resolved = futures::future::try_join_all(
            names
                .iter()
                .map(|n| self.broker.resolve(&tenant, &scope, n, refresh)),
        )
        .await;
        let resolved = match resolved {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(
                    tenant = %tenant,
                    agent = %scope.agent,
                    run = %scope.run_id,
                    tool = %scope.tool,
                    provider = %scope.provider,
                    error = %e,
                    "resolve refused or failed"
                );
                return Err(e.into());
            }
        };
        let mut secrets = Vec::with_capacity(names.len());
        for (name, r) in names.into_iter().zip(resolved) {
            tracing::info!(
                secret = %name,
                tenant = %tenant,
                agent = %scope.agent,
                run = %scope.run_id,
                tool = %scope.tool,
                provider = %scope.provider,
                leased = !r.lease_id.is_empty(),
                "resolved"
            );
            secrets.push(ResolvedSecret {
                name,
                value: r.value.expose_secret().to_string(),
                ttl: Some(bridle_core::timeutil::pb_duration(r.ttl)),
                lease_id: r.lease_id,
            });
        }
        Ok(Response::new(ResolveResponse { secrets }))
    }

    async fn end_run(
        &self,
        req: Request<SecretsEndRunRequest>,
    ) -> Result<Response<SecretsEndRunResponse>, Status> {
        check_end_run(&Caller::of(&req, self.auth))?;
        let scope = req.into_inner().scope.unwrap_or_default();
        if scope.run_id.is_empty() {
            return Err(Status::invalid_argument("scope.run_id: required"));
        }
        let leases_revoked = self.broker.end_run(&scope.run_id).await?;
        Ok(Response::new(SecretsEndRunResponse { leases_revoked }))
    }

    async fn get_grant(&self, req: Request<GetGrantRequest>) -> Result<Response<Grant>, Status> {
        check_grants(&Caller::of(&req, self.auth))?;
        let p = principal(&req);
        let req = req.into_inner();
        let (tenant, tool) = grant_key(&p, "", &req.tenant, req.tool)?;
        match self.grants.get(&tenant, &tool).await? {
            Some(v) => Ok(Response::new(Grant {
                key: Some(GrantKey { tenant, tool }),
                value: v.expose_secret().to_string(),
            })),
            None => Err(Status::not_found(format!(
                "tenant '{tenant}' has no OAuth grant for tool '{tool}'"
            ))),
        }
    }

    async fn put_grant(
        &self,
        req: Request<PutGrantRequest>,
    ) -> Result<Response<PutGrantResponse>, Status> {
        check_grants(&Caller::of(&req, self.auth))?;
        let p = principal(&req);
        let req = req.into_inner();
        let key = req.key.unwrap_or_default();
        let (tenant, tool) = grant_key(&p, "key.", &key.tenant, key.tool)?;
        if req.value.is_empty() || req.value.len() > MAX_GRANT_BYTES {
            return Err(Status::invalid_argument(format!(
                "value: must hold a grant of 1 to {MAX_GRANT_BYTES} bytes (got {})",
                req.value.len()
            )));
        }
        self.grants
            .put(&tenant, &tool, &secrecy::SecretString::from(req.value))
            .await?;
        tracing::info!(tenant = %tenant, tool = %tool, "oauth grant kept");
        Ok(Response::new(PutGrantResponse {}))
    }

    async fn delete_grant(
        &self,
        req: Request<DeleteGrantRequest>,
    ) -> Result<Response<DeleteGrantResponse>, Status> {
        check_grants(&Caller::of(&req, self.auth))?;
        let p = principal(&req);
        let req = req.into_inner();
        let (tenant, tool) = grant_key(&p, "", &req.tenant, req.tool)?;
        let deleted = self.grants.delete(&tenant, &tool).await?;
        tracing::info!(tenant = %tenant, tool = %tool, deleted, "oauth grant deleted");
        Ok(Response::new(DeleteGrantResponse { deleted }))
    }
}
