use bridle_proto::complete_chunk::Chunk;
use bridle_proto::{Cost, FinishReason, Role, Usage};

use crate::helpers::{Harness, msg, request};

pub const ROUTE: &str = r#"
apiVersion: bridle.dev/v1
kind: ModelRoute
metadata:
  name: demo
spec:
  targets:
    - name: replay
      provider: scripted
      script:
        - toolCalls:
            - name: run_python
              arguments: {code: "print(6*7)"}
        - text: "The result is {{last_tool_output}}."
"#;

#[tokio::test]
async fn scripted_routes_replay_their_turns_and_say_so() {
    let h = Harness::start().await;
    h.apply(ROUTE).await;

    let r = h
        .complete(request("demo", vec![msg(Role::User, "compute")]))
        .await
        .unwrap();
    let m = r.message.clone().unwrap();
    assert_eq!(m.tool_calls.len(), 1);
    assert_eq!(
        (m.tool_calls[0].id.as_str(), m.tool_calls[0].name.as_str()),
        ("call_s0_0", "run_python")
    );
    assert_eq!(m.tool_calls[0].arguments_json, r#"{"code":"print(6*7)"}"#);
    assert_eq!(r.finish_reason, FinishReason::ToolCalls as i32);
    assert!(r.scripted);
    assert_eq!(
        (r.provider.as_str(), r.model.as_str(), r.target.as_str()),
        ("scripted", "scripted", "replay")
    );
    assert_eq!(r.usage, Some(Usage::default()));
    assert_eq!(
        r.cost,
        Some(Cost {
            known: true,
            nano_usd: 0
        })
    );
    assert_eq!(r.attempts.len(), 1);

    let mut out = msg(Role::Tool, "42\n");
    out.tool_call_id = "call_s0_0".into();
    let convo = vec![msg(Role::User, "compute"), m, out];
    let r = h.complete(request("demo", convo.clone())).await.unwrap();
    assert_eq!(r.message.as_ref().unwrap().text, "The result is 42\n.");
    assert_eq!(r.finish_reason, FinishReason::Stop as i32);

    // Streaming a scripted turn: the text as one delta, then done.
    let (deltas, done) = h.stream(request("demo", convo.clone())).await;
    assert_eq!(deltas, vec![Chunk::TextDelta("The result is 42\n.".into())]);
    assert_eq!(done.unwrap().message, r.message);

    let mut past = convo;
    past.push(r.message.unwrap());
    past.push(msg(Role::User, "again"));
    let e = h.complete(request("demo", past)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "scripted route 'demo' target 'replay' has 2 turns and the conversation asked for turn 3"
    );
}
