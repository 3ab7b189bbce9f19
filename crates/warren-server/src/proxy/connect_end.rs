//! A Connect stream from a sandbox's agent that breaks (the sandbox was killed, or reached its
//! end, while a command or a watch was streaming) ends with a Connect end-of-stream error
//! instead of a cut connection, so E2B's SDKs report what happened rather than a read error.
//! The message carries E2B's words: "sandbox was killed or reached its end of life" (which
//! the SDKs' own tests look for) and "was not found" (how newer SDKs tell a sandbox gone).

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use warren_api::{SandboxId, SandboxState};

use crate::service::Service;

/// Connect's flag on the envelope that ends a stream.
const END_STREAM: u8 = 0x02;

/// Whether a response is a Connect streaming one (`application/connect+json` or `+proto`).
pub fn is_connect_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/connect+"))
}

/// The end-of-stream envelope carrying `{"error": {"code", "message"}}`.
fn end_stream(code: &str, message: &str) -> Bytes {
    let json = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let len = u32::try_from(json.len()).unwrap_or(u32::MAX);
    let mut out = BytesMut::with_capacity(5 + json.len());
    out.put_u8(END_STREAM);
    out.put_u32(len);
    out.put_slice(json.as_bytes());
    out.freeze()
}

async fn why_broken(service: &Service, id: &SandboxId, error: &str) -> Bytes {
    let running =
        matches!(service.sandboxes().get(id).await, Ok(s) if s.state == SandboxState::Running);
    if running {
        end_stream(
            "unavailable",
            &format!("the connection to sandbox {id}'s agent was lost: {error}"),
        )
    } else {
        end_stream(
            "unavailable",
            &format!(
                "sandbox was killed or reached its end of life: the sandbox {id} was not found"
            ),
        )
    }
}

/// Where a stream of envelopes stands: inside one (bytes of it still to come), and whether an
/// end-of-stream envelope has passed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Envelopes {
    /// Bytes of the 5-byte header seen so far of the envelope being read.
    header: usize,
    /// Its flags and length, once the header is whole.
    flags: u8,
    len: [u8; 4],
    /// Payload bytes still to come.
    remaining: usize,
    /// An end-of-stream envelope has begun.
    ended: bool,
}

impl Envelopes {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                continue;
            }
            let (first, rest) = data.split_at(1);
            match self.header {
                0 => self.flags = first[0],
                i => self.len[i - 1] = first[0],
            }
            data = rest;
            self.header += 1;
            if self.header == 5 {
                self.header = 0;
                self.remaining = u32::from_be_bytes(self.len) as usize;
                self.ended |= self.flags & END_STREAM != 0;
            }
        }
    }

    /// Whether an envelope may start here (none is half sent, and none ended the stream).
    fn at_boundary(&self) -> bool {
        !self.ended && self.header == 0 && self.remaining == 0
    }
}

/// `body` as it is, except that an error from the agent between envelopes ends it with a
/// Connect error (in the middle of one, or after the stream's own end, it just ends).
pub fn guard(body: Body, service: Service, id: SandboxId) -> Body {
    let frames = body.into_data_stream();
    let start = Some((frames, Envelopes::default()));
    let guarded = futures::stream::unfold(start, move |state| {
        let (service, id) = (service.clone(), id.clone());
        async move {
            let (mut frames, mut seen) = state?;
            match frames.next().await {
                Some(Ok(bytes)) => {
                    seen.feed(&bytes);
                    Some((Ok::<Bytes, Infallible>(bytes), Some((frames, seen))))
                }
                Some(Err(e)) if seen.at_boundary() => {
                    Some((Ok(why_broken(&service, &id, &e.to_string()).await), None))
                }
                Some(Err(_)) | None => None,
            }
        }
    });
    Body::from_stream(guarded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_boundaries_are_followed_across_chunks() {
        let mut e = Envelopes::default();
        assert!(e.at_boundary());
        let data = [0u8, 0, 0, 0, 3, b'a', b'b', b'c'];
        e.feed(&data[..2]);
        assert!(!e.at_boundary(), "inside a header");
        e.feed(&data[2..6]);
        assert!(!e.at_boundary(), "inside a payload");
        e.feed(&data[6..]);
        assert!(e.at_boundary());
        e.feed(&end_stream("x", "y"));
        assert!(!e.at_boundary(), "after the stream's own end");
    }

    #[test]
    fn the_end_frame_is_a_connect_envelope() {
        let f = end_stream("unavailable", "gone");
        assert_eq!(f[0], END_STREAM);
        let len = u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
        let body: serde_json::Value = serde_json::from_slice(&f[5..]).expect("json");
        assert_eq!(len, f.len() - 5);
        assert_eq!(body["error"]["code"], "unavailable");
        assert_eq!(body["error"]["message"], "gone");
    }
}
