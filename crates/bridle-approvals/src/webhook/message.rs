//! The webhook's message: Slack's incoming-webhook format (`text` for notifications and
//! clients without blocks, `blocks` for the layout), which other chat tools accept too.
//!
//! Everything from the call is escaped for Slack's mrkdwn (`&`, `<`, `>`): arguments are
//! written by the model, and an unescaped `<!channel>` or `<https://evil|Approve>` in them
//! would ping everyone or forge a link.

use bridle_core::timeutil::ms_from_ts;
use bridle_proto::Approval;
use serde_json::{Value, json};

use crate::cedar::input::risk_name;
use crate::record::{RunContext, fmt_ms};

/// Slack limits a section's text to 3000 characters and a header to 150.
const MAX_ARGUMENTS: usize = 1500;
const MAX_REASON: usize = 1000;
const MAX_HEADER: usize = 150;

/// `s` made safe as mrkdwn text.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The arguments in a code block: pretty JSON when they are JSON; backtick runs broken up so
/// they cannot end the block early.
fn arguments_block(raw: &str) -> String {
    let pretty = serde_json::from_str::<Value>(raw)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| raw.to_string());
    let text = escape(&truncate(&pretty, MAX_ARGUMENTS)).replace('`', "`\u{200b}");
    format!("```{text}```")
}

fn cost(c: &RunContext) -> String {
    let tokens = c
        .tokens_so_far
        .map_or_else(|| "unknown".to_string(), |t| t.to_string());
    let money = c.cost_nano_usd.map_or_else(
        || "unknown".to_string(),
        |n| format!("${:.6}", n as f64 / 1e9),
    );
    format!("{tokens} tokens, {money}")
}

/// The message announcing `a`.
pub fn render(
    a: &Approval,
    context: &RunContext,
    include_arguments: bool,
    inbox_url: Option<&str>,
) -> Value {
    let risk = risk_name(a.risk);
    let link = inbox_url.map(|base| format!("{}/approvals/{}", base.trim_end_matches('/'), a.id));
    let expires = a
        .expires_at
        .as_ref()
        .map(|t| fmt_ms(ms_from_ts(t)))
        .unwrap_or_default();
    let mut text = format!(
        "Approval needed: agent {} wants to call {} ({risk}) in run {} step {}.",
        escape(&a.agent),
        escape(&a.tool),
        escape(&a.run_id),
        a.step
    );
    if let Some(l) = &link {
        text.push_str(&format!(" Review it: <{}|{}>", escape(l), escape(&a.id)));
    }
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": truncate(&format!("Approval needed: {}", a.tool), MAX_HEADER),
            }
        }),
        json!({
            "type": "section",
            "fields": [
                { "type": "mrkdwn", "text": format!("*Agent*\n{}", escape(&a.agent)) },
                { "type": "mrkdwn", "text": format!("*Tenant*\n{}", escape(&a.tenant)) },
                { "type": "mrkdwn", "text": format!("*Tool*\n{} ({risk})", escape(&a.tool)) },
                { "type": "mrkdwn", "text": format!("*Run*\n{} · step {}", escape(&a.run_id), a.step) },
                { "type": "mrkdwn", "text": format!("*Spent so far*\n{}", cost(context)) },
                { "type": "mrkdwn", "text": format!("*Expires*\n{}", escape(&expires)) },
            ]
        }),
        json!({
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": format!("*Why*\n{}", escape(&truncate(&a.policy_reason, MAX_REASON))),
            }
        }),
    ];
    if include_arguments {
        blocks.push(json!({
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": format!("*Arguments*\n{}", arguments_block(&a.arguments_json)),
            }
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{
            "type": "mrkdwn",
            "text": format!(
                "approval {} · call {} · arguments sha256 {}",
                escape(&a.id),
                escape(&truncate(&a.call_id, 100)),
                escape(&a.arguments_sha256)
            ),
        }]
    }));
    if let Some(l) = link {
        blocks.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": { "type": "plain_text", "text": "Review in the inbox" },
                "url": l,
            }]
        }));
    }
    json!({ "text": text, "blocks": blocks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(args: &str) -> Approval {
        Approval {
            id: "apr_01".into(),
            tenant: "acme".into(),
            agent: "analyst".into(),
            run_id: "run_01".into(),
            step: 2,
            call_id: "call_1".into(),
            tool: "delete-dataset".into(),
            arguments_json: args.into(),
            arguments_sha256: "ab".repeat(32),
            risk: 3,
            policy_reason: "tool 'delete-dataset' is destructive".into(),
            expires_at: Some(bridle_core::timeutil::ts_from_ms(0)),
            ..Default::default()
        }
    }

    #[test]
    fn a_message_has_text_and_blocks() {
        let ctx = RunContext {
            tokens_so_far: Some(1200),
            cost_nano_usd: Some(2_500_000),
        };
        let m = render(
            &approval(r#"{"dataset":"old-sales"}"#),
            &ctx,
            true,
            Some("https://inbox.example/"),
        );
        let text = m["text"].as_str().unwrap();
        assert!(
            text.starts_with("Approval needed: agent analyst wants to call delete-dataset (destructive) in run run_01 step 2.")
                && text.ends_with("Review it: <https://inbox.example/approvals/apr_01|apr_01>"),
            "{text}"
        );
        let blocks = m["blocks"].as_array().unwrap();
        let kinds: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "header", "section", "section", "section", "context", "actions"
            ]
        );
        assert_eq!(
            blocks[1]["fields"][4]["text"],
            "*Spent so far*\n1200 tokens, $0.002500"
        );
        assert_eq!(
            blocks[3]["text"]["text"],
            "*Arguments*\n```{\n  \"dataset\": \"old-sales\"\n}```"
        );
        assert_eq!(
            blocks[5]["elements"][0]["url"],
            "https://inbox.example/approvals/apr_01"
        );

        let bare = render(&approval("{}"), &RunContext::default(), false, None);
        let kinds: Vec<&str> = bare["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["header", "section", "section", "context"]);
        assert_eq!(
            bare["blocks"][1]["fields"][4]["text"],
            "*Spent so far*\nunknown tokens, unknown"
        );
    }

    #[test]
    fn arguments_cannot_mention_link_or_escape_their_block() {
        let evil = r#"{"note":"<!channel> <https://evil.example|Approve> & ```done``` "}"#;
        let m = render(&approval(evil), &RunContext::default(), true, None);
        let args = m["blocks"][3]["text"]["text"].as_str().unwrap();
        assert!(!args.contains('<') && !args.contains('>'), "{args}");
        assert!(
            args.contains("&lt;!channel&gt;") && args.contains("&amp;"),
            "{args}"
        );
        // Only the block's own fences are three backticks in a row.
        assert_eq!(args.matches("```").count(), 2, "{args}");
        assert!(
            args.starts_with("*Arguments*\n```") && args.ends_with("```"),
            "{args}"
        );

        let long = format!(r#"{{"x":"{}"}}"#, "é".repeat(5000));
        let m = render(&approval(&long), &RunContext::default(), true, None);
        let args = m["blocks"][3]["text"]["text"].as_str().unwrap();
        assert!(
            args.chars().count() < 3000 && args.contains('…'),
            "{}",
            args.len()
        );
    }
}
