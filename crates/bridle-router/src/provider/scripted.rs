//! The scripted provider: replays the assistant turns written in the route's manifest.
//!
//! Turn n answers the conversation whose messages hold n assistant messages, so the replay is
//! stateless: it survives restarts and works across replicas. It is labelled `scripted`
//! everywhere it shows, and never pretends to be a model.

use bridle_core::manifest::{ScriptTurn, Target};
use bridle_proto::complete_chunk::Chunk;
use bridle_proto::{FinishReason, Message, Role, ToolCall, ToolCallDelta, Usage};

use super::{DeltaSink, ProviderReply, TryError};
use crate::error::FailureCode;

pub const MODEL: &str = "scripted";
const LAST_TOOL_OUTPUT: &str = "{{last_tool_output}}";

/// The reply for this conversation, or FAILED_PRECONDITION past the end of the script.
pub fn reply(
    route: &str,
    target: &Target,
    messages: &[Message],
) -> Result<ProviderReply, TryError> {
    let turns: &[ScriptTurn] = target.script.as_deref().unwrap_or(&[]);
    let n = messages
        .iter()
        .filter(|m| m.role == Role::Assistant as i32)
        .count();
    let Some(turn) = turns.get(n) else {
        return Err(TryError::rejected(
            FailureCode::FailedPrecondition,
            format!(
                "scripted route '{route}' target '{}' has {} turns and the conversation asked for turn {}",
                target.name,
                turns.len(),
                n + 1
            ),
        ));
    };
    let text = if turn.text.contains(LAST_TOOL_OUTPUT) {
        let last = messages
            .iter()
            .rev()
            .find(|m| m.role == Role::Tool as i32)
            .map(|m| m.text.as_str())
            .unwrap_or("");
        turn.text.replace(LAST_TOOL_OUTPUT, last)
    } else {
        turn.text.clone()
    };
    let tool_calls: Vec<ToolCall> = turn
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, c)| ToolCall {
            id: format!("call_s{n}_{i}"),
            name: c.name.clone(),
            arguments_json: serde_json::to_string(&c.arguments).unwrap_or_else(|_| "{}".into()),
        })
        .collect();
    let finish_reason = if tool_calls.is_empty() {
        FinishReason::Stop
    } else {
        FinishReason::ToolCalls
    };
    Ok(ProviderReply {
        message: Message {
            role: Role::Assistant as i32,
            text,
            tool_calls,
            ..Default::default()
        },
        finish_reason,
        model: MODEL.into(),
        response_id: format!("scripted-turn-{}", n + 1),
        usage: Usage::default(),
        http_status: None,
    })
}

/// Streams a reply: the text as one delta, then each tool call as one delta.
pub async fn stream(reply: &ProviderReply, sink: &DeltaSink) -> Result<(), TryError> {
    if !reply.message.text.is_empty() {
        sink.delta(Chunk::TextDelta(reply.message.text.clone()))
            .await?;
    }
    for (i, c) in reply.message.tool_calls.iter().enumerate() {
        sink.delta(Chunk::ToolCallDelta(ToolCallDelta {
            index: i as u32,
            id: c.id.clone(),
            name: c.name.clone(),
            arguments_delta: c.arguments_json.clone(),
        }))
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridle_core::manifest::{ProviderKind, ScriptToolCall};

    fn target() -> Target {
        Target {
            name: "s".into(),
            provider: ProviderKind::Scripted,
            model: None,
            base_url: None,
            api_key: None,
            headers: Default::default(),
            timeout: None,
            weight: None,
            price: None,
            max_output_tokens: None,
            azure: None,
            api: None,
            script: Some(vec![
                ScriptTurn {
                    text: String::new(),
                    tool_calls: vec![ScriptToolCall {
                        name: "run_python".into(),
                        arguments: serde_json::json!({"code": "1+1"}),
                    }],
                },
                ScriptTurn {
                    text: "The answer is {{last_tool_output}}.".into(),
                    tool_calls: vec![],
                },
            ]),
            script_file: None,
        }
    }

    fn msg(role: Role, text: &str) -> Message {
        Message {
            role: role as i32,
            text: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn turns_follow_the_number_of_assistant_messages() {
        let t = target();
        let first = reply("r", &t, &[msg(Role::User, "hi")]).unwrap();
        assert_eq!(first.finish_reason, FinishReason::ToolCalls);
        assert_eq!(first.message.tool_calls[0].id, "call_s0_0");
        assert_eq!(
            first.message.tool_calls[0].arguments_json,
            r#"{"code":"1+1"}"#
        );

        let convo = [
            msg(Role::User, "hi"),
            msg(Role::Assistant, ""),
            msg(Role::Tool, "2"),
            msg(Role::Tool, "42"),
        ];
        let second = reply("r", &t, &convo).unwrap();
        assert_eq!(second.message.text, "The answer is 42.");
        assert_eq!(second.finish_reason, FinishReason::Stop);

        let past = [msg(Role::Assistant, ""), msg(Role::Assistant, "")];
        let e = reply("r", &t, &past).unwrap_err();
        assert_eq!(e.code, FailureCode::FailedPrecondition);
        assert_eq!(
            e.message,
            "scripted route 'r' target 's' has 2 turns and the conversation asked for turn 3"
        );
    }
}
