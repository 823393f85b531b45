//! Server-sent events, as both OpenAI and Anthropic stream them: bytes in, each event's `data`
//! out. Bytes are kept until a line is complete, so a UTF-8 character or a JSON document split
//! across network reads is reassembled.

/// Longest line the parser holds before giving up on a stream that never ends one.
const MAX_LINE: usize = 8 << 20;

#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Where the search for the next newline resumes, so a long line arriving in many small
    /// reads is scanned once, not once per read.
    scanned: usize,
    data: Option<String>,
}

impl SseParser {
    /// The `data` of every event completed by `bytes` (multi-line data joined with '\n').
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(off) = self.buf[self.scanned.max(start)..]
            .iter()
            .position(|b| *b == b'\n')
        {
            let end = self.scanned.max(start) + off;
            let line = String::from_utf8_lossy(&self.buf[start..end]);
            let line = line.trim_end_matches('\r');
            start = end + 1;
            if line.is_empty() {
                if let Some(d) = self.data.take() {
                    events.push(d);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            if field == "data" {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_LINE {
            return Err(format!("an event line is longer than {MAX_LINE} bytes"));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_comments_multiline_data_and_partial_lines() {
        let mut p = SseParser::default();
        let events = p
            .push(b": keep-alive\r\ndata: a\r\ndata: b\r\n\r\nevent: x\ndata:c\n\n")
            .unwrap();
        assert_eq!(events, vec!["a\nb".to_string(), "c".to_string()]);
        assert!(p.push(b"data: par").unwrap().is_empty());
        assert!(p.push(b"tial").unwrap().is_empty());
        assert_eq!(p.push(b"\n\n").unwrap(), vec!["partial".to_string()]);
        // A multi-byte character split between reads.
        let text = "data: caf\u{e9}\n\n".as_bytes();
        let (a, b) = text.split_at(10);
        assert!(p.push(a).unwrap().is_empty());
        assert_eq!(p.push(b).unwrap(), vec!["caf\u{e9}".to_string()]);
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut p = SseParser::default();
        let chunk = vec![b'x'; 1 << 20];
        let mut err = None;
        for _ in 0..10 {
            if let Err(e) = p.push(&chunk) {
                err = Some(e);
                break;
            }
        }
        assert!(err.unwrap().contains("longer than"));
    }
}
