use bridle_proto::{ApprovalState, ListApprovalsRequest};

use crate::helpers::*;

#[tokio::test]
async fn list_filters_by_tenant_state_and_run() {
    let h = Harness::start().await;
    let mut c = h.client.clone();
    let (run1, run2) = (new_run(), new_run());
    let a1 = h.pending(&run1, "c1", "{}").await;
    let a2 = h.pending(&run1, "c2", "{}").await;
    let b1 = h.pending(&run2, "c1", "{}").await;
    let mut other = destructive(&run2, "c9", "{}");
    other.scope.as_mut().unwrap().tenant = "globex".into();
    let g = h.evaluate(other).await.approval.unwrap();
    c.decide(decide(&a2.id, true, "alice")).await.unwrap();

    let ids = |r: bridle_proto::ListApprovalsResponse| {
        r.approvals.into_iter().map(|a| a.id).collect::<Vec<_>>()
    };
    let req = |tenant: &str, state: ApprovalState, run: &str| ListApprovalsRequest {
        tenant: tenant.into(),
        state: state as i32,
        run_id: run.into(),
        page_size: 0,
        page_token: String::new(),
    };
    let pending = ids(c
        .list(req("acme", ApprovalState::Unspecified, ""))
        .await
        .unwrap()
        .into_inner());
    assert_eq!(
        pending,
        vec![b1.id.clone(), a1.id.clone()],
        "pending, newest first"
    );
    assert_eq!(
        ids(c
            .list(req("acme", ApprovalState::Pending, &run1))
            .await
            .unwrap()
            .into_inner()),
        vec![a1.id.clone()]
    );
    assert_eq!(
        ids(c
            .list(req("acme", ApprovalState::Approved, ""))
            .await
            .unwrap()
            .into_inner()),
        vec![a2.id.clone()]
    );
    assert_eq!(
        ids(c
            .list(req("acme", ApprovalState::Approved, &run2))
            .await
            .unwrap()
            .into_inner()),
        Vec::<String>::new()
    );
    assert!(
        ids(c
            .list(req("acme", ApprovalState::Denied, ""))
            .await
            .unwrap()
            .into_inner())
        .is_empty()
    );
    assert_eq!(
        ids(c
            .list(req("globex", ApprovalState::Pending, ""))
            .await
            .unwrap()
            .into_inner()),
        vec![g.id]
    );
    let one = c
        .list(ListApprovalsRequest {
            page_size: 1,
            ..req("acme", ApprovalState::Pending, "")
        })
        .await
        .unwrap();
    assert_eq!(ids(one.into_inner()), vec![b1.id]);

    // No tenant from a caller bound to none (auth is off here): `default`'s, as in every
    // service; it has none.
    assert!(
        ids(c
            .list(req("", ApprovalState::Pending, ""))
            .await
            .unwrap()
            .into_inner())
        .is_empty()
    );
    let e = c
        .list(ListApprovalsRequest {
            state: 42,
            ..req("acme", ApprovalState::Pending, "")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    h.stop().await;
}

#[tokio::test]
async fn pages_cover_the_list_once_newest_first() {
    let h = Harness::start().await;
    let mut c = h.client.clone();
    let (run1, run2) = (new_run(), new_run());
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(h.pending(&run1, &format!("c{i}"), "{}").await.id);
    }
    for i in 0..3 {
        made.push(h.pending(&run2, &format!("c{i}"), "{}").await.id);
    }
    // By the state's index and by one run's approvals, two at a time: the pages together are
    // the whole list in one (newest first; approvals made in the same millisecond by id).
    for (run, made) in [("", made.clone()), (run1.as_str(), made[..5].to_vec())] {
        let want: Vec<String> = c
            .list(ListApprovalsRequest {
                tenant: "acme".into(),
                run_id: run.into(),
                page_size: 500,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .approvals
            .into_iter()
            .map(|a| a.id)
            .collect();
        let mut sorted = want.clone();
        sorted.sort();
        let mut expected = made.clone();
        expected.sort();
        assert_eq!(sorted, expected, "run '{run}'");
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let r = c
                .list(ListApprovalsRequest {
                    tenant: "acme".into(),
                    state: ApprovalState::Pending as i32,
                    run_id: run.into(),
                    page_size: 2,
                    page_token: token.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            assert!(r.approvals.len() <= 2);
            seen.extend(r.approvals.into_iter().map(|a| a.id));
            if r.next_page_token.is_empty() {
                break;
            }
            token = r.next_page_token;
        }
        assert_eq!(seen, want, "run '{run}'");
        assert!(pages >= want.len().div_ceil(2), "{pages}");
    }
    // Without a page size: the first 50, no token when that is all.
    let all = c
        .list(ListApprovalsRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.approvals.len(), 8);
    assert!(all.next_page_token.is_empty());
    // A token this list did not issue is refused by name, not read as the first page.
    let e = c
        .list(ListApprovalsRequest {
            tenant: "acme".into(),
            page_token: "12".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("page_token: "), "{e:?}");
    h.stop().await;
}

#[tokio::test]
async fn manifests_page_by_kind_and_name() {
    let h = Harness::start().await;
    let mut m = h.manifests().await;
    let docs = (0..5)
        .map(|i| bridle_proto::ManifestDocument {
            source: "p.yaml".into(),
            first_line: 1,
            yaml: format!(
                "apiVersion: bridle.dev/v1\nkind: Policy\nmetadata:\n  name: p{i}\nspec:\n  cedar: |\n    permit(principal, action, resource);\n"
            ),
        })
        .collect();
    m.apply(bridle_proto::ApplyRequest {
        documents: docs,
        tenant: "acme".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let r = m
            .list_manifests(bridle_proto::ListManifestsRequest {
                tenant: "acme".into(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.manifests.len() <= 2);
        names.extend(r.manifests.into_iter().map(|m| m.name));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(names, vec!["p0", "p1", "p2", "p3", "p4"]);
    // Without a page size, all of them at once (as before paging).
    let all = m
        .list_manifests(bridle_proto::ListManifestsRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((all.manifests.len(), all.next_page_token.as_str()), (5, ""));
    let e = m
        .list_manifests(bridle_proto::ListManifestsRequest {
            tenant: "acme".into(),
            page_size: 2,
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("page_token: "), "{e:?}");
    h.stop().await;
}
