//! Capturing a tool's stdout and stderr under a size cap, and scrubbing secrets from them.
//!
//! A little more than the cap is kept before redaction, so a secret that straddles the cut is
//! still whole when it is replaced: the cut can then only fall inside the marker, never leave a
//! piece of the secret behind.

use bridle_core::redact::Redactor;

/// One output stream, capped.
#[derive(Debug)]
pub struct Capture {
    kept: Vec<u8>,
    cap: usize,
    keep: usize,
    total: u64,
}

/// A stream as it leaves the service: redacted, cut to the cap, with a marker when cut.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    pub text: String,
    pub truncated: bool,
}

impl Capture {
    /// `slack` = bytes kept past the cap so secrets near the cut are redacted whole.
    pub fn new(cap: usize, slack: usize) -> Self {
        Self {
            kept: Vec::new(),
            cap,
            keep: cap.saturating_add(slack),
            total: 0,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let room = self.keep.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&chunk[..room.min(chunk.len())]);
    }

    /// Counts `n` bytes the tool wrote that never reached us (the sandbox's agent passes on
    /// only what is kept).
    pub fn skipped(&mut self, n: u64) {
        self.total = self.total.saturating_add(n);
    }

    /// Bytes seen so far, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Everything that will be kept has arrived; the caller may stop reading.
    pub fn is_full(&self) -> bool {
        self.kept.len() >= self.keep
    }

    pub fn finish(self, redactor: &Redactor) -> Captured {
        let text = redactor.redact(&String::from_utf8_lossy(&self.kept));
        if self.total <= self.cap as u64 {
            return Captured {
                text,
                truncated: false,
            };
        }
        let mut cut = self.cap.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let more = self.total - self.cap as u64;
        Captured {
            text: format!(
                "{}\n[... output truncated: {more} more bytes]",
                &text[..cut]
            ),
            truncated: true,
        }
    }
}

/// How a run ended, for the status line the model reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    TimedOut {
        after: String,
    },
    OomKilled {
        limit: String,
    },
    /// The container disappeared mid-call (EndRun removed it).
    Removed,
    /// The sandbox itself stopped mid-call with this exit code.
    SandboxStopped {
        code: i64,
    },
}

impl Ending {
    pub fn status_line(&self) -> Option<String> {
        match self {
            Ending::Exited(0) => None,
            Ending::Exited(code) => Some(format!("[exit code {code}]")),
            Ending::TimedOut { after } => {
                Some(format!("[timed out after {after}: the process was killed]"))
            }
            Ending::OomKilled { limit } => Some(format!("[killed: out of memory (limit {limit})]")),
            Ending::SandboxStopped { code } => Some(format!(
                "[killed: the sandbox itself stopped during the call (exit code {code}); under gVisor this is what a fork past limits.pids does; the sandbox is discarded]"
            )),
            Ending::Removed => Some(
                "[cancelled: the sandbox was removed before the tool finished (the run ended)]"
                    .into(),
            ),
        }
    }
}

/// What the model sees: stdout, then stderr under a heading, then a status line when the run
/// did not end well.
pub fn model_output(stdout: &str, stderr: &str, ending: &Ending) -> String {
    let mut out = stdout.to_string();
    let section = |out: &mut String, text: &str| {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(text);
    };
    if !stderr.is_empty() {
        section(&mut out, "[stderr]\n");
        out.push_str(stderr);
    }
    if let Some(status) = ending.status_line() {
        section(&mut out, &status);
    }
    if out.is_empty() {
        out.push_str("(no output)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_the_cap_is_kept_whole() {
        let mut c = Capture::new(10, 0);
        c.push(b"hello");
        assert_eq!(
            c.finish(&Redactor::default()),
            Captured {
                text: "hello".into(),
                truncated: false
            }
        );
    }

    #[test]
    fn over_the_cap_is_cut_with_a_marker() {
        let mut c = Capture::new(4, 0);
        c.push(b"abcdef");
        c.push(b"ghij");
        let got = c.finish(&Redactor::default());
        assert!(got.truncated);
        assert_eq!(got.text, "abcd\n[... output truncated: 6 more bytes]");
    }

    #[test]
    fn cut_respects_utf8() {
        let mut c = Capture::new(2, 0);
        c.push("héllo".as_bytes());
        let got = c.finish(&Redactor::default());
        assert!(got.text.starts_with("h\n[..."), "{}", got.text);
    }

    #[test]
    fn a_secret_across_the_cut_is_redacted_whole() {
        let secret = "topsecret-123";
        let mut c = Capture::new(8, secret.len() * 3);
        c.push(format!("ab{secret}cd").as_bytes());
        let got = c.finish(&Redactor::new([secret]));
        assert!(!got.text.contains("tops"), "{}", got.text);
        assert!(got.text.starts_with("ab[REDAC"), "{}", got.text);
    }

    #[test]
    fn output_sections() {
        assert_eq!(model_output("out", "", &Ending::Exited(0)), "out");
        assert_eq!(model_output("", "", &Ending::Exited(0)), "(no output)");
        assert_eq!(
            model_output("out\n", "err", &Ending::Exited(2)),
            "out\n[stderr]\nerr\n[exit code 2]"
        );
        assert_eq!(
            model_output(
                "",
                "",
                &Ending::TimedOut {
                    after: "1.0s".into()
                }
            ),
            "[timed out after 1.0s: the process was killed]"
        );
    }
}
