//! Tenants and API keys, with auth on in every service: keys are checked on every RPC, roles
//! limit what a key may do, and one tenant never sees another's agents, runs, events or
//! approvals.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Duration;

use bridle_core::auth::Role;
use bridle_proto as pb;
use bridle_testkit::mock_openai::Reply;
use support::{Harness, Options, keys_on, with_key};

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_sees_only_its_own_and_keys_are_enforced() {
    let h = Harness::start_with(Options {
        env_all: keys_on(),
        ..Default::default()
    })
    .await
    .unwrap();
    let keys = h.api_keys().await;
    let (acme, _) = keys
        .create("acme", "acme admin", &[Role::Admin])
        .await
        .unwrap();
    let (globex, _) = keys
        .create("globex", "globex admin", &[Role::Admin])
        .await
        .unwrap();
    let (viewer, _) = keys
        .create("acme", "acme viewer", &[Role::Viewer])
        .await
        .unwrap();

    // Without a key, nothing.
    let mut orch = h.orchestrator().await;
    let e = orch
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // acme applies its agent and starts a run that parks for approval.
    let docs = support::bridle_core_docs("m.yaml", &h.manifests_yaml());
    h.manifests()
        .await
        .apply(with_key(
            &acme,
            pb::ApplyRequest {
                actor: None,
                documents: docs.clone(),
                dry_run: false,
                tenant: String::new(),
            },
        ))
        .await
        .unwrap();
    h.mock.enqueue(Reply::tool_calls(&[(
        "d",
        "delete-dataset",
        r#"{"dataset":"x"}"#,
    )]));
    let run = orch
        .start_run(with_key(
            &acme,
            pb::StartRunRequest {
                agent: "analyst".into(),
                input: "go".into(),
                end_user: "customer-42".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(run.tenant, "acme", "the key's tenant, not the default");
    // The run says who started it (the key) and for which of the application's users.
    let by = run.started_by.clone().unwrap();
    assert_eq!(
        (by.kind(), by.name.as_str()),
        (pb::ActorKind::ApiKey, "acme admin")
    );
    assert!(by.id.starts_with("key_"), "{by:?}");
    assert_eq!(run.end_user, "customer-42");
    let approval = bridle_testkit::wait_for("the run to park", Duration::from_secs(60), || {
        let mut orch = orch.clone();
        let (acme, id) = (acme.clone(), run.id.clone());
        async move {
            let r = orch
                .get_run(with_key(&acme, pb::GetRunRequest { run_id: id }))
                .await
                .ok()?
                .into_inner();
            (!r.pending_approval_id.is_empty()).then_some(r.pending_approval_id)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", h.logs()));

    // globex sees none of it.
    let e = orch
        .get_run(with_key(
            &globex,
            pb::GetRunRequest {
                run_id: run.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = orch
        .watch_run(with_key(
            &globex,
            pb::WatchRunRequest {
                run_id: run.id.clone(),
                from_offset: 0,
                follow: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let runs = orch
        .list_runs(with_key(&globex, pb::ListRunsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(runs.is_empty(), "{runs:?}");
    let agents = orch
        .list_agents(with_key(&globex, pb::ListAgentsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert!(agents.is_empty());
    let e = orch
        .start_run(with_key(
            &globex,
            pb::StartRunRequest {
                agent: "analyst".into(),
                input: "go".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = orch
        .list_runs(with_key(
            &globex,
            pb::ListRunsRequest {
                tenant: "acme".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::PermissionDenied,
        "asking for another tenant by name"
    );
    let mut approvals = h.approvals().await;
    let pending = approvals
        .list(with_key(
            &globex,
            pb::ListApprovalsRequest {
                tenant: String::new(),
                state: 0,
                run_id: String::new(),
                page_size: 50,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .approvals;
    assert!(pending.is_empty(), "{pending:?}");
    let e = approvals
        .decide(with_key(
            &globex,
            pb::DecideRequest {
                id: approval.clone(),
                approve: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // acme's viewer can read but not act.
    let listed = orch
        .list_runs(with_key(&viewer, pb::ListRunsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(listed.len(), 1);
    let e = orch
        .cancel_run(with_key(
            &viewer,
            pb::CancelRunRequest {
                run_id: run.id.clone(),
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = approvals
        .decide(with_key(
            &viewer,
            pb::DecideRequest {
                id: approval.clone(),
                approve: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);

    // acme's admin can; the run is cancelled while parked.
    let cancelled = orch
        .cancel_run(with_key(
            &acme,
            pb::CancelRunRequest {
                run_id: run.id.clone(),
                reason: "done".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, pb::RunStatus::Cancelled as i32);
    assert_eq!(cancelled.cancelled_by.unwrap().name, "acme admin");
    assert_eq!(cancelled.error, "cancelled by API key 'acme admin': done");
    // The first event carries the actor too.
    use futures::StreamExt as _;
    let first = orch
        .watch_run(with_key(
            &acme,
            pb::WatchRunRequest {
                run_id: run.id.clone(),
                from_offset: 0,
                follow: false,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    match first.kind {
        Some(pb::run_event::Kind::RunCreated(c)) => {
            assert_eq!(c.started_by.unwrap().name, "acme admin");
            assert_eq!(c.end_user, "customer-42");
        }
        other => panic!("the first event is {other:?}"),
    }

    // The run's model call is in the spend ledger under the key that started it, its end user
    // and its agent, and only in acme's.
    let spend = orch
        .get_spend(with_key(
            &acme,
            pb::GetSpendRequest {
                by: vec!["api_key".into(), "end_user".into(), "agent".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spend.rows.len(), 1, "{spend:?}");
    assert_eq!(
        spend.rows[0].values,
        [by.id.clone(), "customer-42".into(), "analyst".into()]
    );
    assert!(spend.calls >= 1 && spend.total_nano_usd > 0, "{spend:?}");

    // The apply is in the history of what it created, under the key that applied it: the
    // agent (kept by the orchestrator) and a tool (passed on to the tools service).
    for (kind, name) in [
        (pb::ManifestKind::Agent, "analyst"),
        (pb::ManifestKind::Tool, "delete-dataset"),
    ] {
        let changes = h
            .manifests()
            .await
            .history(with_key(
                &acme,
                pb::HistoryRequest {
                    kind: kind.into(),
                    name: name.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .changes;
        assert_eq!(changes.len(), 1, "{kind:?}/{name}: {changes:?}");
        let c = &changes[0];
        assert_eq!((c.action(), c.generation), (pb::ManifestAction::Created, 1));
        assert_eq!(
            c.actor.as_ref().unwrap().name,
            "acme admin",
            "{kind:?}/{name}"
        );
        assert!(c.yaml.contains(name), "{}", c.yaml);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_orchestrator_may_run_tools_or_end_runs() {
    let token = format!("internal-{}", bridle_testkit::unique("t"));
    let h = Harness::start_with(Options {
        env_all: vec![
            ("BRIDLE_AUTH".into(), "keys".into()),
            ("BRIDLE_INTERNAL_TOKEN".into(), token.clone()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let tools = h
        .services
        .iter()
        .find(|s| s.name == "bridle-tools")
        .expect("the tools service")
        .addr
        .clone();
    let mut c = pb::tools_client::ToolsClient::new(h.channel(tools, "tools").await.unwrap());
    let as_service = |service: &str, run: &str| {
        let mut r = tonic::Request::new(pb::ExecuteRequest {
            scope: Some(pb::Scope {
                tenant: "default".into(),
                agent: "analyst".into(),
                run_id: run.into(),
                ..Default::default()
            }),
            tool: "python".into(),
            arguments_json: r#"{"code":"print(1)"}"#.into(),
            ..Default::default()
        });
        let md = r.metadata_mut();
        md.insert("x-bridle-service-token", token.parse().unwrap());
        md.insert("x-bridle-service", service.parse().unwrap());
        r
    };
    // Every service holds the internal token; holding it is not enough to run a tool, which
    // would skip the policy check only the orchestrator makes.
    for other in ["router", "approvals", "secrets", "tools"] {
        let e = c.execute(as_service(other, "run_x")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{other}: {e:?}");
        assert!(
            e.message().contains("only the orchestrator service may"),
            "{e:?}"
        );
        let mut end = tonic::Request::new(pb::EndRunRequest {
            scope: as_service(other, "run_x").into_inner().scope,
        });
        let md = end.metadata_mut();
        md.insert("x-bridle-service-token", token.parse().unwrap());
        md.insert("x-bridle-service", other.parse().unwrap());
        let e = c.end_run(end).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{other}: {e:?}");
    }
    // The orchestrator passes the check (the tool itself is unknown here: NOT_FOUND).
    let e = c
        .execute(as_service("orchestrator", "run_x"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
}
