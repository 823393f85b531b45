//! Keeping the conversation inside the model's context window.
//!
//! Token counts: OpenAI model families are counted exactly with tiktoken-rs (o200k_base for
//! gpt-4o, gpt-4.1 and the o-series; cl100k_base for older gpt-4 and gpt-3.5). Other models
//! are estimated at one token per four bytes of text plus four per message, which is within
//! ~15% for English prose and code on the tokenizers we checked, and errs high for non-Latin
//! scripts. Counts are cached on each message, so a step costs one count of its new messages.
//!
//! When a model call would use more than 85% of the window (minus the output reserve), the
//! oldest tool outputs are trimmed first; if that is not enough, the older turns are summarised
//! through the router. The system prompt (sent separately), the run's original input and every
//! assistant tool call together with its results are never split or dropped.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

use crate::state::Msg;

/// Share of the window a request may use before compaction starts.
const HIGH_WATER: f64 = 0.85;
/// Tool outputs shorter than this are never trimmed: there is little to gain.
const TRIM_MIN_CHARS: usize = 600;
/// What is kept of a trimmed tool output.
const TRIM_KEEP_CHARS: usize = 300;
/// The most recent messages are never summarised.
const KEEP_RECENT: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    O200k,
    Cl100k,
    Estimate,
}

pub fn family(model: &str) -> Family {
    let m = model.to_ascii_lowercase();
    if m.starts_with("gpt-4o")
        || m.starts_with("gpt-4.1")
        || m.starts_with("gpt-5")
        || m.starts_with("chatgpt")
        || m.starts_with("o1")
        || m.starts_with("o3")
        || m.starts_with("o4")
    {
        Family::O200k
    } else if m.starts_with("gpt-4") || m.starts_with("gpt-3.5") {
        Family::Cl100k
    } else {
        Family::Estimate
    }
}

/// Context window of a model, when the agent does not say.
pub fn default_window(model: &str) -> u64 {
    let m = model.to_ascii_lowercase();
    if m.starts_with("gpt-4.1") {
        1_047_576
    } else if m.starts_with("o1")
        || m.starts_with("o3")
        || m.starts_with("o4")
        || m.starts_with("claude")
    {
        200_000
    } else if m.starts_with("gpt-3.5") {
        16_385
    } else {
        128_000
    }
}

fn bpe(f: Family) -> Option<&'static CoreBPE> {
    static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    match f {
        Family::O200k => O200K
            .get_or_init(|| tiktoken_rs::o200k_base().ok())
            .as_ref(),
        Family::Cl100k => CL100K
            .get_or_init(|| tiktoken_rs::cl100k_base().ok())
            .as_ref(),
        Family::Estimate => None,
    }
}

/// Tokens of a text for a model family.
pub fn count_text(f: Family, text: &str) -> u64 {
    match bpe(f) {
        Some(b) => b.encode_with_special_tokens(text).len() as u64,
        None => (text.len() as u64).div_ceil(4),
    }
}

/// Tokens of one message, including the per-message framing.
pub fn count_msg(f: Family, m: &Msg) -> u64 {
    let mut n = 4 + count_text(f, &m.text);
    for c in &m.tool_calls {
        n += 8 + count_text(f, &c.name) + count_text(f, &c.arguments);
    }
    n
}

/// Fills each message's cached count; returns the total.
pub fn total(f: Family, messages: &mut [Msg]) -> u64 {
    messages
        .iter_mut()
        .map(|m| match m.tokens {
            Some(t) => u64::from(t),
            None => {
                let t = count_msg(f, m);
                m.tokens = Some(t.min(u64::from(u32::MAX)) as u32);
                t
            }
        })
        .sum()
}

/// The limit a request's input should stay under.
pub fn limit(window: u64, reserve_output: u64) -> u64 {
    ((window as f64 * HIGH_WATER) as u64).saturating_sub(reserve_output)
}

/// Index from which messages belong to the current exchange and must stay whole: the last
/// assistant message with tool calls and the results after it.
fn protected_from(messages: &[Msg]) -> usize {
    messages
        .iter()
        .rposition(|m| m.role == "assistant" && !m.tool_calls.is_empty())
        .unwrap_or(messages.len())
}

/// Trims the oldest tool outputs until `fixed + total <= limit`. Returns the new message total.
pub fn trim_tool_outputs(f: Family, messages: &mut [Msg], fixed: u64, limit: u64) -> u64 {
    let mut tot = total(f, messages);
    let protect = protected_from(messages);
    for m in messages.iter_mut().take(protect) {
        if fixed + tot <= limit {
            break;
        }

        if m.role != "tool"
            || m.text.chars().count() <= TRIM_MIN_CHARS
            || m.text.contains(TRIM_MARK)
        {
            continue;
        }
        let removed = m.text.chars().count() - TRIM_KEEP_CHARS;
        let kept: String = m.text.chars().take(TRIM_KEEP_CHARS).collect();
        m.text = format!("{kept}\n{TRIM_MARK}: {removed} characters removed]");
        let before = u64::from(m.tokens.unwrap_or(0));
        let after = count_msg(f, m);
        m.tokens = Some(after as u32);
        tot = tot - before + after;
    }
    tot
}

const TRIM_MARK: &str = "[... older tool output trimmed by Bridle to fit the context window";

/// The range of messages that may be replaced by a summary: after the original input, before
/// the most recent ones, and ending where no tool call is separated from its results.
pub fn summarisable(messages: &[Msg]) -> Option<std::ops::Range<usize>> {
    let protect = protected_from(messages).min(messages.len().saturating_sub(KEEP_RECENT));
    let mut end = protect;
    // Move the cut back until it does not fall between a tool call and its results.
    while end > 1 && messages.get(end).is_some_and(|m| m.role == "tool") {
        end -= 1;
    }
    while end > 1
        && messages[end - 1].role == "assistant"
        && !messages[end - 1].tool_calls.is_empty()
    {
        end -= 1;
    }
    (end > 2).then_some(1..end)
}

/// The part of the conversation to summarise, as plain text for the summariser.
pub fn transcript(messages: &[Msg]) -> String {
    let mut out = String::new();
    for m in messages {
        match m.role.as_str() {
            "tool" => out.push_str(&format!("[tool {} result]\n{}\n\n", m.name, m.text)),
            role => {
                if !m.text.is_empty() {
                    out.push_str(&format!("[{role}]\n{}\n\n", m.text));
                }
                for c in &m.tool_calls {
                    out.push_str(&format!("[{role} called {}({})]\n\n", c.name, c.arguments));
                }
            }
        }
    }
    out
}

pub const SUMMARY_PROMPT: &str = "You compress the earlier part of an agent's conversation so it can continue within its context window. Write a concise summary that keeps every fact, number, decision, file name and open question the agent may still need, and what each tool call found. Do not add anything.";

pub fn summary_message(summary: &str) -> Msg {
    Msg::user(&format!(
        "[Summary of the earlier conversation, written by Bridle's context manager]\n{summary}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Call;

    fn call(id: &str) -> Msg {
        Msg {
            role: "assistant".into(),
            tool_calls: vec![Call {
                id: id.into(),
                name: "python".into(),
                arguments: "{}".into(),
            }],
            ..Default::default()
        }
    }

    fn result(id: &str, text: &str) -> Msg {
        Msg::tool(
            &Call {
                id: id.into(),
                name: "python".into(),
                arguments: String::new(),
            },
            text.into(),
            false,
        )
    }

    fn conversation() -> Vec<Msg> {
        let big = "x".repeat(20_000);
        vec![
            Msg::user("the task"),
            call("a"),
            result("a", &big),
            call("b"),
            result("b", &big),
            Msg {
                role: "assistant".into(),
                text: "thinking".into(),
                ..Default::default()
            },
            call("c"),
            result("c", &big),
        ]
    }

    #[test]
    fn families_and_counts() {
        assert_eq!(family("gpt-4o-mini-2024-07-18"), Family::O200k);
        assert_eq!(family("gpt-4-turbo"), Family::Cl100k);
        assert_eq!(family("claude-sonnet-4"), Family::Estimate);
        assert_eq!(count_text(Family::O200k, "hello world"), 2);
        assert_eq!(count_text(Family::Estimate, "hello world"), 3);
        assert_eq!(default_window("gpt-4.1-mini"), 1_047_576);
    }

    #[test]
    fn trimming_takes_the_oldest_outputs_and_spares_the_current_step() {
        let mut m = conversation();
        let before = total(Family::Estimate, &mut m);
        let after = trim_tool_outputs(Family::Estimate, &mut m, 0, before - 4_000);
        assert!(after <= before - 4_000, "{after} vs {before}");
        assert!(m[2].text.contains(TRIM_MARK), "oldest output trimmed first");
        assert!(
            !m[7].text.contains(TRIM_MARK),
            "the current step's result is never trimmed"
        );
        assert_eq!(m.len(), 8, "nothing is dropped");
        assert_eq!(m[0].text, "the task");
    }

    #[test]
    fn trimming_stops_as_soon_as_it_fits() {
        let mut m = conversation();
        let before = total(Family::Estimate, &mut m);
        trim_tool_outputs(Family::Estimate, &mut m, 0, before - 100);
        assert!(m[2].text.contains(TRIM_MARK));
        assert!(!m[4].text.contains(TRIM_MARK), "one trim was enough");
    }

    #[test]
    fn summaries_never_split_a_call_from_its_results() {
        let m = conversation();
        let r = summarisable(&m).unwrap();
        assert_eq!(r.start, 1, "the original input is kept");
        // Whatever the cut, a tool result never starts the kept part and no call ends the
        // summarised part.
        assert_ne!(m[r.end].role, "tool");
        assert!(m[r.end - 1].tool_calls.is_empty());
        let short = vec![Msg::user("t"), call("a"), result("a", "x")];
        assert!(summarisable(&short).is_none());
    }

    #[test]
    fn transcript_shows_calls_and_results() {
        let t = transcript(&conversation()[1..3]);
        assert!(t.contains("[assistant called python({})]"));
        assert!(t.contains("[tool python result]"));
    }
}
