use bridle_proto::Role;
use bridle_proto::complete_chunk::Chunk;
use bridle_testkit::mock_openai::{MockOpenAi, Reply, text_completion, tool_call_completion};

use crate::helpers::{Harness, msg, openai_route, request};

#[tokio::test]
async fn a_stream_assembles_the_same_response_as_a_plain_call() {
    let h = Harness::start().await;
    let mock = MockOpenAi::start().await.unwrap();
    h.put_secret("openai-key", "sk-test-stream").await;
    h.apply(&openai_route(
        "main",
        &[("a", "gpt-4.1", &mock.base_url())],
        "",
    ))
    .await;

    let text = text_completion("gpt-4.1-2025-04-14", "Streaming, in small pieces, works.");
    let calls = tool_call_completion(
        "gpt-4.1-2025-04-14",
        &[
            ("call_1", "search", r#"{"q":"sse"}"#),
            ("call_2", "read", r#"{"path":"/a"}"#),
        ],
    );
    for completion in [text, calls] {
        mock.enqueue(Reply::Completion(completion.clone()));
        mock.enqueue(Reply::Completion(completion));
        let plain = h
            .complete(request("main", vec![msg(Role::User, "go")]))
            .await
            .unwrap();
        let (deltas, done) = h.stream(request("main", vec![msg(Role::User, "go")])).await;
        let streamed = done.unwrap();
        for field in [&plain, &streamed] {
            assert!(field.cost.unwrap().known);
        }
        assert_eq!(streamed.message, plain.message);
        assert_eq!(streamed.finish_reason, plain.finish_reason);
        assert_eq!(streamed.usage, plain.usage);
        assert_eq!(streamed.cost, plain.cost);
        assert_eq!(
            (&streamed.model, &streamed.response_id, &streamed.target),
            (&plain.model, &plain.response_id, &plain.target)
        );
        let text: String = deltas
            .iter()
            .filter_map(|d| {
                if let Chunk::TextDelta(t) = d {
                    Some(t.as_str())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(text, plain.message.unwrap().text);
        assert!(deltas.len() > 1, "the answer arrived in pieces: {deltas:?}");
    }
    let sent = mock.requests();
    assert_eq!(sent[1].body["stream"], true);
    assert_eq!(sent[1].body["stream_options"]["include_usage"], true);
    assert!(sent[0].body.get("stream").is_none());
}

#[tokio::test]
async fn a_stream_fails_over_before_its_first_delta_but_not_after() {
    let h = Harness::start().await;
    let (a, b) = (
        MockOpenAi::start().await.unwrap(),
        MockOpenAi::start().await.unwrap(),
    );
    h.put_secret("openai-key", "sk-test-stream-failover").await;
    h.apply(&openai_route(
        "main",
        &[
            ("a", "gpt-4o", &a.base_url()),
            ("b", "gpt-4o-mini", &b.base_url()),
        ],
        "",
    ))
    .await;

    // Before any delta: a refuses, b streams.
    a.enqueue(Reply::error(
        404,
        "The model `gpt-4o` does not exist or you do not have access to it.",
    ));
    b.enqueue(Reply::text("b streamed this"));
    let (deltas, done) = h.stream(request("main", vec![msg(Role::User, "go")])).await;
    let r = done.unwrap();
    assert_eq!(r.target, "b");
    assert_eq!(r.attempts.len(), 2);
    assert_eq!(r.attempts[0].http_status, 404);
    assert!(!deltas.is_empty());

    // After a delta: a breaks mid-stream; the caller already has text, so no failover.
    a.enqueue(Reply::CutAfter(
        3,
        text_completion("gpt-4o", "This answer will be cut short."),
    ));
    let before = b.requests().len();
    let (deltas, done) = h.stream(request("main", vec![msg(Role::User, "go")])).await;
    assert!(
        matches!(deltas.first(), Some(Chunk::TextDelta(_))),
        "{deltas:?}"
    );
    let e = done.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("target 'a' failed mid-stream"),
        "{}",
        e.message()
    );
    assert_eq!(
        b.requests().len(),
        before,
        "b must not be called after a delta was sent"
    );
    assert_eq!(a.requests().len(), 2, "nor a retried");

    // Every target fails before a delta: the call itself fails with the error, as a plain
    // call would, rather than opening a stream that holds nothing but it.
    a.enqueue(Reply::error(400, "Invalid 'messages': empty content."));
    b.enqueue(Reply::error(400, "Invalid 'messages': empty content."));
    let e = h
        .router
        .clone()
        .complete_stream(request("main", vec![msg(Role::User, "go")]))
        .await
        .expect_err("a stream with no target left must fail as a call");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("target 'b'"), "{}", e.message());
}
