//! A bound on YAML nesting checked before the YAML parser sees a document.
//!
//! serde_yaml stops at 128 levels, but only after libyaml has turned the whole document into
//! events: 100,000 `[` took it 7-40 s on this machine, so a 4 MiB manifest of brackets would
//! hold a worker for minutes. This scan is one pass over the text and refuses such a document
//! at once. It counts flow collections (`[`, `{`) outside quoted scalars, comments and block
//! scalars (`|`, `>`), which is where depth can be had cheaply; block nesting costs one
//! indentation step per level, so a document deep that way is large, and serde_yaml's own
//! limit applies to it.

/// Deepest nesting of mappings and lists a manifest may have (serde_yaml's own limit).
pub const MAX_DEPTH: usize = 128;

/// The line (1-based, within the document) where flow nesting passes `limit`, if it does.
pub fn too_deep(yaml: &str, limit: usize) -> Option<usize> {
    let mut depth = 0usize;
    // Inside a block scalar: the indentation of the line that opened it.
    let mut block: Option<usize> = None;
    let mut quote: Option<char> = None;
    for (n, line) in yaml.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(opened_at) = block {
            if line.trim().is_empty() || indent > opened_at {
                continue;
            }
            block = None;
        }
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match quote {
                Some('"') => match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => quote = None,
                    _ => {}
                },
                Some(_) => {
                    if c == '\'' {
                        // '' is an escaped quote inside a single-quoted scalar.
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            quote = None;
                        }
                    }
                }
                None => match c {
                    '#' if prev == ' ' || prev == '\t' => break,
                    '"' | '\'' if matches!(prev, ' ' | '\t' | '[' | '{' | ',' | ':') => {
                        quote = Some(c)
                    }
                    '[' | '{' => {
                        depth += 1;
                        if depth > limit {
                            return Some(n + 1);
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                },
            }
            prev = c;
        }
        // A block scalar's header ends its line: `key: |`, `- >-`, `cedar: |2`.
        if quote.is_none() && depth == 0 {
            let t = strip_comment(line).trim_end();
            let header = t
                .rsplit_once(' ')
                .map_or(t, |(_, last)| last)
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '+');
            if matches!(header, "|" | ">") {
                block = Some(indent);
            }
        }
    }
    None
}

fn strip_comment(line: &str) -> &str {
    match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_found_at_its_line() {
        let doc = format!("a: 1\nb: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert_eq!(too_deep(&doc, MAX_DEPTH), Some(2));
        let doc = format!("b: {}{}\n", "{x: ".repeat(129), "}".repeat(129));
        assert_eq!(too_deep(&doc, MAX_DEPTH), Some(1));
    }

    #[test]
    fn brackets_in_quotes_comments_and_block_scalars_do_not_count() {
        let deep = "[".repeat(300);
        let doc = format!(
            "a: \"{deep}\"\nb: '{deep}'\nc: x # {deep}\ncedar: |\n  {deep}\n  more {deep}\nd: [1, [2]]\ne: >-\n  {deep}\n"
        );
        assert_eq!(too_deep(&doc, MAX_DEPTH), None);
    }

    #[test]
    fn an_escaped_quote_does_not_end_a_quoted_scalar() {
        let deep = "[".repeat(300);
        assert_eq!(too_deep(&format!("a: \"x\\\"{deep}\"\n"), 128), None);
        assert_eq!(too_deep(&format!("a: 'it''s {deep}'\n"), 128), None);
    }

    #[test]
    fn ordinary_manifests_pass() {
        let doc = "spec:\n  parameters: {type: object, properties: {code: {type: string}}}\n  tools: [a, b]\n";
        assert_eq!(too_deep(doc, MAX_DEPTH), None);
    }
}
