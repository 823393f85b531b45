//! Writing to the terminal. The workspace forbids print macros in library-like code; the CLI's
//! output goes through here so it is easy to find and to keep on the right stream.

use std::io::Write as _;

/// A line on stdout (results).
pub fn line(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
}

/// A line on stderr (diagnostics, errors).
pub fn err(s: &str) {
    let mut o = std::io::stderr().lock();
    let _ = writeln!(o, "{s}");
}

/// Text on stdout as it is (a completion script, a YAML document).
pub fn text(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
}
