//! One rule for a request's `tenant` in every service (`Principal::tenant_in`): a caller bound
//! to a tenant (an API key) acts for its own, an empty field meaning it and another name
//! refused; a caller bound to none (a Bridle service) acts for the tenant it names, `default`
//! when it names none; a name that cannot be a tenant is INVALID_ARGUMENT everywhere.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use bridle_core::auth::Role;
use bridle_proto as pb;
use support::{Harness, Options, keys_on, with_key};
use tonic::Code;

/// `msg` as a request of Bridle service `service` (the internal token).
fn as_service<T>(token: &str, service: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let md = r.metadata_mut();
    md.insert("x-bridle-service-token", token.parse().unwrap());
    md.insert("x-bridle-service", service.parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_tenant_is_the_callers_own_or_default_in_every_service() {
    let env = keys_on();
    let token = env
        .iter()
        .find(|(k, _)| k == "BRIDLE_INTERNAL_TOKEN")
        .map(|(_, v)| v.clone())
        .unwrap();
    let h = Harness::start_with(Options {
        env_all: env,
        ..Default::default()
    })
    .await
    .unwrap();
    let (acme, _) = h
        .api_keys()
        .await
        .create("acme", "acme admin", &[Role::Admin])
        .await
        .unwrap();
    let addr = |binary: &str| {
        h.services
            .iter()
            .find(|s| s.name == binary)
            .map(|s| s.addr.clone())
            .unwrap()
    };

    // The same manifests for `default` (a service naming no tenant) and for acme (its key,
    // naming none): each lands in its caller's tenant.
    let docs = support::bridle_core_docs("m.yaml", &h.manifests_yaml());
    let apply = || pb::ApplyRequest {
        documents: docs.clone(),
        ..Default::default()
    };
    let mut manifests = h.manifests().await;
    let applied = manifests
        .apply(as_service(&token, "orchestrator", apply()))
        .await
        .unwrap()
        .into_inner();
    assert!(applied.applied.iter().all(|a| a.tenant == "default"));
    let applied = manifests
        .apply(with_key(&acme, apply()))
        .await
        .unwrap()
        .into_inner();
    assert!(applied.applied.iter().all(|a| a.tenant == "acme"));

    // Orchestrator.ListAgents and Manifests.ListManifests.
    let mut orch = h.orchestrator().await;
    for (who, want) in [("key", "acme"), ("service", "default")] {
        fn req<T>(who: &str, key: &str, token: &str, m: T) -> tonic::Request<T> {
            match who {
                "key" => with_key(key, m),
                _ => as_service(token, "orchestrator", m),
            }
        }
        let agents = orch
            .list_agents(req(who, &acme, &token, pb::ListAgentsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .agents;
        assert!(!agents.is_empty() && agents.iter().all(|a| a.tenant == want));
        let stored = manifests
            .list_manifests(req(who, &acme, &token, pb::ListManifestsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .manifests;
        assert!(!stored.is_empty() && stored.iter().all(|m| m.tenant == want));
        let runs = orch
            .list_runs(req(who, &acme, &token, pb::ListRunsRequest::default()))
            .await;
        assert!(runs.is_ok(), "{who}: {runs:?}");
    }

    // Router.ListModels, on the router's own port.
    let mut router =
        pb::router_client::RouterClient::new(h.channel(addr("bridle-router"), "").await.unwrap());
    let routes = router
        .list_models(with_key(&acme, pb::ListModelsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .routes;
    assert!(!routes.is_empty() && routes.iter().all(|r| r.tenant == "acme"));
    let routes = router
        .list_models(as_service(
            &token,
            "orchestrator",
            pb::ListModelsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner()
        .routes;
    assert!(!routes.is_empty() && routes.iter().all(|r| r.tenant == "default"));

    // Approvals.List: no tenant was "tenant: must not be empty" for a caller bound to none.
    let mut approvals = h.approvals().await;
    for req in [
        with_key(&acme, pb::ListApprovalsRequest::default()),
        as_service(&token, "orchestrator", pb::ListApprovalsRequest::default()),
    ] {
        approvals.list(req).await.unwrap();
    }

    // Admin.ListApiKeys: a key sees its tenant's keys (a read across tenants: a service naming
    // none sees every tenant's).
    let keys = orch_admin(&h)
        .await
        .list_api_keys(with_key(&acme, pb::ListApiKeysRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(!keys.is_empty() && keys.iter().all(|k| k.tenant == "acme"));

    // Tools.ListTools (services only): `default`'s tools.
    let mut tools =
        pb::tools_client::ToolsClient::new(h.channel(addr("bridle-tools"), "").await.unwrap());
    let listed = tools
        .list_tools(as_service(
            &token,
            "orchestrator",
            pb::ListToolsRequest {
                names: vec!["python".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.missing.is_empty(), "{listed:?}");
    assert_eq!(listed.tools.len(), 1);

    // Secrets.GetGrant (the tools service only): the grant of `default`.
    let mut secrets = pb::secrets_client::SecretsClient::new(
        h.channel(addr("bridle-secrets"), "").await.unwrap(),
    );
    let e = secrets
        .get_grant(as_service(
            &token,
            "tools",
            pb::GetGrantRequest {
                tenant: String::new(),
                tool: "python".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("tenant 'default'"), "{e:?}");

    // Another tenant is refused to a key, and a name that cannot be a tenant to everyone, in
    // every service, by the field it came in.
    let e = orch
        .list_agents(with_key(
            &acme,
            pb::ListAgentsRequest {
                tenant: "globex".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = approvals
        .list(with_key(
            &acme,
            pb::ListApprovalsRequest {
                tenant: "globex".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // The same on the services' own Manifests (the router's and the approvals' ports take API
    // keys): a key lists only its tenant's, and a viewer key applies nothing.
    let mut router_manifests = pb::manifests_client::ManifestsClient::new(
        h.channel(addr("bridle-router"), "").await.unwrap(),
    );
    let stored = router_manifests
        .list_manifests(with_key(&acme, pb::ListManifestsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .manifests;
    assert!(!stored.is_empty() && stored.iter().all(|m| m.tenant == "acme"));
    let e = router_manifests
        .list_manifests(with_key(
            &acme,
            pb::ListManifestsRequest {
                tenant: "default".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let (viewer, _) = h
        .api_keys()
        .await
        .create("acme", "acme viewer", &[Role::Viewer])
        .await
        .unwrap();
    let route_only = support::bridle_core_docs("m.yaml", &h.manifests_yaml())
        .into_iter()
        .filter(|d| d.yaml.contains("kind: ModelRoute"))
        .collect::<Vec<_>>();
    let e = router_manifests
        .apply(with_key(
            &viewer,
            pb::ApplyRequest {
                documents: route_only.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = router_manifests
        .delete_manifest(with_key(
            &acme,
            pb::DeleteManifestRequest {
                tenant: "default".into(),
                kind: bridle_proto::ManifestKind::ModelRoute.into(),
                name: "main".into(),
                actor: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // A document naming another tenant in its metadata is refused to a bound key.
    let mut elsewhere = route_only;
    elsewhere[0].yaml =
        elsewhere[0]
            .yaml
            .replacen("  name: main\n", "  name: main\n  tenant: globex\n", 1);
    assert!(elsewhere[0].yaml.contains("tenant: globex"));
    let e = router_manifests
        .apply(with_key(
            &acme,
            pb::ApplyRequest {
                documents: elsewhere,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    let bad = "Not A Tenant".to_string();
    let results = [
        (
            "orchestrator",
            orch.list_agents(as_service(
                &token,
                "orchestrator",
                pb::ListAgentsRequest {
                    tenant: bad.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ()),
        ),
        (
            "approvals",
            approvals
                .list(as_service(
                    &token,
                    "orchestrator",
                    pb::ListApprovalsRequest {
                        tenant: bad.clone(),
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
        ),
        (
            "router",
            router
                .list_models(as_service(
                    &token,
                    "orchestrator",
                    pb::ListModelsRequest {
                        tenant: bad.clone(),
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
        ),
        (
            "tools",
            tools
                .list_tools(as_service(
                    &token,
                    "orchestrator",
                    pb::ListToolsRequest {
                        tenant: bad.clone(),
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
        ),
        (
            "secrets",
            secrets
                .get_grant(as_service(
                    &token,
                    "tools",
                    pb::GetGrantRequest {
                        tenant: bad.clone(),
                        tool: "python".into(),
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ];
    for (service, r) in results {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{service}: {e:?}");
        assert!(e.message().contains("tenant: "), "{service}: {e:?}");
    }
}

async fn orch_admin(h: &Harness) -> pb::admin_client::AdminClient<tonic::transport::Channel> {
    pb::admin_client::AdminClient::new(h.channel(h.orchestrator.clone(), "").await.unwrap())
}
