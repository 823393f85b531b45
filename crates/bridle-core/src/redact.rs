//! Redaction: scrubbing secret values out of text before it leaves a service, in the forms a
//! secret commonly takes when a tool or a provider echoes it: plain; base64 (standard and
//! URL-safe, at each of the three byte offsets it can start at inside a longer encoded text,
//! so `Basic user:secret` is caught too); hex; percent-encoded as the common encoders do it
//! (everything, Python's `quote`, JavaScript's `encodeURIComponent`, forms), with upper- and
//! lowercase hex digits; and JSON-escaped (`\/`, `\uXXXX`).
//!
//! A backstop, not a boundary: a value re-encoded on purpose (reversed, ROT13, split) is not
//! caught, which is why model-written code must never hold a secret in the first place.

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
        for f in forms(secret) {
            // A form too short to be told from ordinary text would destroy the text.
            if f.len() >= MIN_SECRET_LEN && !self.needles.contains(&f) {
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

/// Every form of `secret` that is looked for.
fn forms(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let b = secret.as_bytes();
    // The whole value encoded on its own, padding included, so nothing of it is left over.
    let mut out = vec![
        secret.to_string(),
        base64::Engine::encode(&STANDARD, b),
        base64::Engine::encode(&URL_SAFE, b),
    ];
    // Base64 of the value where it starts at byte offset 0, 1 or 2 of a 3-byte group of a
    // longer encoded text: only the characters made of the value's bits alone are the same
    // whatever surrounds it.
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut padded = vec![0u8; offset];
            padded.extend_from_slice(b);
            let enc = base64::Engine::encode(engine, &padded);
            let start = (4 * offset).div_ceil(3);
            let end = (4 * (offset + b.len()) / 3).min(enc.len());
            if start < end {
                out.push(enc[start..end].to_string());
            }
        }
    }
    let hex = hex::encode(b);
    out.push(hex.to_ascii_uppercase());
    out.push(hex);
    // Percent-encoding: what the usual encoders leave alone differs.
    const ALL: &percent_encoding::AsciiSet = percent_encoding::NON_ALPHANUMERIC;
    const PY_QUOTE: &percent_encoding::AsciiSet = &ALL
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    const JS_COMPONENT: &percent_encoding::AsciiSet = &ALL
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'!')
        .remove(b'~')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');
    for set in [ALL, PY_QUOTE, JS_COMPONENT] {
        let upper = percent_encoding::utf8_percent_encode(secret, set).to_string();
        out.push(lowercase_escapes(&upper));
        out.push(upper);
    }
    let form = form_urlencode(secret);
    out.push(lowercase_escapes(&form));
    out.push(form);
    // JSON string escapes: serde's, with `\/` for '/', and every character as `\uXXXX`.
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json.trim_matches('"').to_string();
    out.push(json.replace('/', "\\/"));
    out.push(json);
    let escaped: String = secret
        .encode_utf16()
        .map(|u| format!("\\u{u:04x}"))
        .collect();
    out.push(escaped.to_ascii_uppercase().replace("\\U", "\\u"));
    out.push(escaped);
    out
}

/// `%2F` -> `%2f`: decoders accept both.
fn lowercase_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            for h in chars.by_ref().take(2) {
                out.push(h.to_ascii_lowercase());
            }
        }
    }
    out
}

fn form_urlencode(s: &str) -> String {
    const FORM: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, FORM).to_string()
}

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

/// At most `max` characters of `s`, with an ellipsis when cut; for displays of long values.
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
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, secret);
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
    fn scrubs_the_forms_a_tool_can_reencode_a_value_in() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let secret = "tok-3f9a/Kz+Q~9 x\"é";
        let r = Redactor::new([secret]);
        let b = secret.as_bytes();
        const PY_QUOTE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~')
            .remove(b'/');
        let pct = |set: &'static percent_encoding::AsciiSet| {
            percent_encoding::utf8_percent_encode(secret, set).to_string()
        };
        let json = serde_json::to_string(secret).unwrap();
        let every_u: String = secret
            .encode_utf16()
            .map(|u| format!("\\u{u:04X}"))
            .collect();
        let forms = [
            // base64 inside a longer value, at each offset (`Basic user:secret`).
            STANDARD.encode(format!("user:{secret}")),
            STANDARD.encode(format!("u:{secret}!")),
            STANDARD.encode(format!("ab{secret}")),
            URL_SAFE_NO_PAD.encode(format!("x{secret}")),
            hex::encode(b),
            hex::encode_upper(b),
            lowercase_escapes(&pct(percent_encoding::NON_ALPHANUMERIC)),
            // Python's quote() leaves '/' alone.
            pct(PY_QUOTE),
            json.trim_matches('"').replace('/', "\\/"),
            every_u.clone(),
            every_u.to_lowercase(),
        ];
        for f in forms {
            let out = r.redact(&format!("before {f} after"));
            assert!(out.contains(MARKER), "not caught: {f} -> {out}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let r = Redactor::new(["tok-3f9a/Kz+Q~9"]);
        let text = "the quick brown fox jumps over 13 lazy dogs; base64 aGVsbG8gd29ybGQ= %2F %2f";
        assert_eq!(r.redact(text), text);
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
