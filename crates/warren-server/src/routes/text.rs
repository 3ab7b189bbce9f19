//! Turning output bytes into text for SSE: UTF-8 sequences split across chunks are carried to
//! the next chunk instead of being mangled, and carriage returns (which SSE cannot carry inside
//! a data field) become newlines.
/// Incremental UTF-8 decoder for one output stream.
#[derive(Default)]
pub struct Utf8Chunker {
    pending: Vec<u8>,
}

impl Utf8Chunker {
    /// Decodes what can be decoded of `pending + bytes`; an incomplete trailing sequence waits.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        // The common case, one copy: nothing carried over and the chunk whole.
        if self.pending.is_empty() {
            if let Ok(s) = std::str::from_utf8(bytes) {
                return s.to_owned();
            }
        }
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &after[n..];
                        }
                        None => {
                            rest = after; // incomplete: keep for the next chunk
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// What is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// SSE data cannot hold `\r`; CRLF becomes LF and a lone CR becomes LF.
pub fn sse_safe(s: String) -> String {
    if !s.contains('\r') {
        return s; // no copy: this runs on every chunk of a streamed exec
    }
    s.replace("\r\n", "\n").replace('\r', "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sequences_are_carried() {
        let bytes = "héllo €".as_bytes();
        let mut c = Utf8Chunker::default();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&c.push(&[*b]));
        }
        out.push_str(&c.finish());
        assert_eq!(out, "héllo €");
        assert_eq!(c.push(&[0xff, b'a']), "\u{FFFD}a");
        assert_eq!(sse_safe("a\r\nb\rc\n".to_owned()), "a\nb\nc\n");
        assert_eq!(sse_safe("plain\n".to_owned()), "plain\n");
    }
}
