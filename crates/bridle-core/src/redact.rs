//! Redaction: scrubbing secret values out of text before it leaves a service, in the forms a
//! secret commonly takes when a tool or a provider echoes it (plain, base64, URL-encoded).

use base64::Engine as _;

pub const MARKER: &str = "[REDACTED]";

/// Values shorter than this are not redacted: replacing "a" or "12" everywhere would destroy
/// the text and protect nothing.
const MIN_SECRET_LEN: usize = 6;

#[derive(Clone, Debug, Default)]
pub struct Redactor {
    // Longest first, so a value that contains another is replaced whole.
    needles: Vec<String>,
}

impl Redactor {
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut r = Redactor::default();
        for s in secrets {
            r.add(s.as_ref());
        }
        r
    }

    pub fn add(&mut self, secret: &str) {
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        let b = secret.as_bytes();
        let forms = [
            secret.to_string(),
            base64::engine::general_purpose::STANDARD.encode(b),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
            form_urlencode(secret),
        ];
        for f in forms {
            if !self.needles.contains(&f) {
                self.needles.push(f);
            }
        }
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The text with every known form of every secret replaced by [`MARKER`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for n in &self.needles {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), MARKER);
            }
        }
        out
    }
}

fn form_urlencode(s: &str) -> String {
    const FORM: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, FORM).to_string()
}

/// At most `max` characters of `s`, with an ellipsis when cut; for messages that quote input.
/// How much of a caller's input an error quotes.
pub const QUOTE_CHARS: usize = 120;

/// A caller's input as an error quotes it: whole when short, else its start, an ellipsis and
/// its full length, so that an error always fits a client's limits (gRPC clients take 8-16
/// KiB of metadata) whatever the input was.
pub fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_CHARS {
        s.to_string()
    } else {
        let p: String = s.chars().take(QUOTE_CHARS).collect();
        format!("{p}… ({} bytes in all)", s.len())
    }
}

pub fn preview(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut p: String = s.chars().take(max).collect();
        p.push('…');
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_plain_base64_and_url_forms() {
        let secret = "s3cr3t/value+with=chars";
        let r = Redactor::new([secret]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let url = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
        let text = format!("a {secret} b {b64} c {url} d");
        let out = r.redact(&text);
        assert!(!out.contains(secret));
        assert!(!out.contains(&b64));
        assert!(!out.contains(&url));
        assert_eq!(out.matches(MARKER).count(), 3, "{out}");
    }

    #[test]
    fn short_values_are_ignored() {
        let r = Redactor::new(["ab"]);
        assert_eq!(r.redact("abc ab"), "abc ab");
    }

    #[test]
    fn preview_cuts_on_chars() {
        assert_eq!(preview("héllo", 2), "hé…");
        assert_eq!(preview("hi", 5), "hi");
        let long = "x".repeat(1 << 20);
        let q = quote(&long);
        assert!(q.len() < 200, "{q}");
        assert!(q.ends_with("… (1048576 bytes in all)"), "{q}");
        assert_eq!(quote("short"), "short");
    }
}
