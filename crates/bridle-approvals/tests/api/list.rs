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

    let e = c
        .list(req("", ApprovalState::Pending, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
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
