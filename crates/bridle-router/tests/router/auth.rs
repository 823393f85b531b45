//! Who may call: API keys act for their own tenant only, and need the operator role to make
//! calls, over gRPC and over the HTTP fronts.

use bridle_core::auth::{ApiKeyStore, Role};
use bridle_testkit::mock_openai::Reply;
use serde_json::{Value, json};

use crate::gateway::gateway;

#[tokio::test]
async fn api_keys_act_only_for_their_tenant_and_role_over_grpc_and_http() {
    let (h, gpt, _claude, key) = gateway().await;
    gpt.set_default(Some(Reply::text("ok")));
    let conn = bridle_core::redis_util::connect(&h.redis.url())
        .await
        .unwrap();
    let store = ApiKeyStore::new(conn, &bridle_core::redis_util::Keys::new(&h.prefix));
    let (viewer, _) = store
        .create("default", "reader", &[Role::Viewer])
        .await
        .unwrap();
    let (acme, _) = store
        .create("acme", "acme-app", &[Role::Operator])
        .await
        .unwrap();
    let call = |key: &str, tenant: &str| {
        let mut req = tonic::Request::new(crate::helpers::request(
            "gpt",
            vec![crate::helpers::msg(bridle_proto::Role::User, "hi")],
        ));
        req.get_mut().scope.as_mut().unwrap().tenant = tenant.into();
        req.metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        let mut router = h.router.clone();
        async move { router.complete(req).await }
    };
    assert_eq!(
        call(&key, "default").await.unwrap().into_inner().target,
        "a"
    );
    let e = call(&key, "acme").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        e.message()
            .contains("belongs to tenant 'default' and cannot act for tenant 'acme'"),
        "{}",
        e.message()
    );
    let e = call(&viewer, "default").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        e.message().contains("does not have the operator role"),
        "{}",
        e.message()
    );
    // acme's key sees acme's routes only: "gpt" is default's.
    let e = call(&acme, "").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(
        e.message(),
        "model route 'gpt' is not defined for tenant 'acme'"
    );
    let e = h
        .router
        .clone()
        .complete(crate::helpers::request("gpt", vec![]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // Over HTTP: no key, and a viewer's key.
    let http = h.http.clone().unwrap();
    let c = bridle_core::http_client::new();
    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]});
    let r = c
        .post(format!("{http}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .post(format!("{http}/v1/chat/completions"))
        .bearer_auth(&viewer)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "permission_error");
    let r = c
        .post(format!("{http}/v1/messages"))
        .header("x-api-key", &acme)
        .json(&json!({"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
