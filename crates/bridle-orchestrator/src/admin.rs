//! `bridle.v1.Admin`: API keys. A tenant's admin manages its tenant's keys; a caller not bound
//! to a tenant (auth off, or a service) manages any.

use tonic::{Request, Response, Status};

use bridle_core::auth::{ApiKeyStore, KeyRecord, NewKey, Role, principal};
use bridle_core::timeutil::{std_duration, ts_from_ms};
use bridle_proto as pb;

pub struct AdminService {
    pub keys: ApiKeyStore,
}

fn to_pb(r: &KeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        id: r.id.clone(),
        name: r.name.clone(),
        tenant: r.tenant.clone(),
        roles: r.roles.iter().map(|r| r.as_str().to_string()).collect(),
        created_at: Some(ts_from_ms(r.created_ms)),
        revoked: r.revoked,
        expires_at: r.expires_ms.map(ts_from_ms),
        created_by: r.created_by.clone(),
        revoked_by: r.revoked_by.clone(),
        rotated_from: r.rotated_from.clone(),
    }
}

/// A duration field: unset or zero = none; negative is refused by name.
fn duration(
    field: &str,
    d: Option<&prost_types::Duration>,
) -> Result<Option<std::time::Duration>, Status> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 => Err(Status::invalid_argument(format!(
            "{field}: must not be negative"
        ))),
        Some(d) => Ok(std_duration(Some(d))),
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Admin)?;
        let req = req.into_inner();
        let tenant = p.tenant_for(&req.tenant)?;
        let roles = req
            .roles
            .iter()
            .map(|r| Role::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("roles: {e}")))?;
        let how = NewKey {
            expires_in: duration("expires_in", req.expires_in.as_ref())?,
            created_by: p.id.clone(),
            ..NewKey::default()
        };
        let (secret, rec) = self
            .keys
            .create_with(&tenant, &req.name, &roles, &how)
            .await?;
        tracing::info!(key = %rec.id, tenant = %rec.tenant, by = %p.id, "API key created");
        Ok(Response::new(pb::CreateApiKeyResponse {
            key: Some(to_pb(&rec)),
            secret,
        }))
    }

    async fn list_api_keys(
        &self,
        req: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Admin)?;
        let req = req.into_inner();
        // Empty from a caller bound to no tenant: the keys of every tenant.
        let filter = p.tenants_for(&req.tenant)?;
        let page = bridle_core::paging::Page::parse(
            req.page_size,
            &req.page_token,
            None,
            bridle_core::paging::MAX_PAGE_SIZE,
        )?;
        let mut keys: Vec<pb::ApiKey> = self
            .keys
            .list(filter.as_deref())
            .await?
            .iter()
            .map(to_pb)
            .collect();
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        let (keys, next_page_token) = page.of_sorted(keys, |k| k.id.clone());
        Ok(Response::new(pb::ListApiKeysResponse {
            keys,
            next_page_token,
        }))
    }

    async fn revoke_api_key(
        &self,
        req: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Admin)?;
        let id = req.into_inner().id;
        // A tenant admin may only revoke its own tenant's keys; others look unknown.
        let visible = self
            .keys
            .list(p.tenant.as_deref())
            .await?
            .into_iter()
            .any(|k| k.id == id);
        if !visible {
            return Err(Status::not_found(format!("API key '{id}' does not exist")));
        }
        let revoked = self.keys.revoke_by(&id, &p.id).await?;
        tracing::info!(key = %id, by = %p.id, "API key revoked");
        Ok(Response::new(pb::RevokeApiKeyResponse { revoked }))
    }

    async fn rotate_api_key(
        &self,
        req: Request<pb::RotateApiKeyRequest>,
    ) -> Result<Response<pb::RotateApiKeyResponse>, Status> {
        let p = principal(&req);
        p.require(Role::Admin)?;
        let req = req.into_inner();
        // A tenant admin may only rotate its own tenant's keys; others look unknown.
        let visible = self
            .keys
            .get(&req.id)
            .await?
            .is_some_and(|k| p.sees(&k.tenant));
        if !visible {
            return Err(Status::not_found(format!(
                "API key '{}' does not exist",
                bridle_core::redact::quote(&req.id)
            )));
        }
        let overlap = duration("overlap", req.overlap.as_ref())?.unwrap_or_default();
        let how = NewKey {
            expires_in: duration("expires_in", req.expires_in.as_ref())?,
            created_by: p.id.clone(),
            ..NewKey::default()
        };
        let r = self.keys.rotate(&req.id, overlap, &how).await?;
        tracing::info!(old = %r.old.id, new = %r.new.id, by = %p.id, "API key rotated");
        Ok(Response::new(pb::RotateApiKeyResponse {
            key: Some(to_pb(&r.new)),
            secret: r.plaintext,
            old: Some(to_pb(&r.old)),
        }))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let p = principal(&req);
        if p.roles.is_empty() {
            return Err(Status::unauthenticated("not authenticated"));
        }
        Ok(Response::new(pb::WhoAmIResponse {
            id: p.id,
            name: p.name,
            tenant: p.tenant.unwrap_or_default(),
            roles: p.roles.iter().map(|r| r.as_str().to_string()).collect(),
            service: p.service,
        }))
    }
}
