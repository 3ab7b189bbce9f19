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
    let running = matches!(service.get(id).await, Ok(s) if s.state == SandboxState::Running);
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

/// `body` as it is, except that an error from the agent ends it with a Connect error.
pub fn guard(body: Body, service: Service, id: SandboxId) -> Body {
    let frames = body.into_data_stream();
    let guarded = futures::stream::unfold(Some(frames), move |frames| {
        let (service, id) = (service.clone(), id.clone());
        async move {
            let mut frames = frames?;
            match frames.next().await {
                Some(Ok(bytes)) => Some((Ok::<Bytes, Infallible>(bytes), Some(frames))),
                Some(Err(e)) => Some((Ok(why_broken(&service, &id, &e.to_string()).await), None)),
                None => None,
            }
        }
    });
    Body::from_stream(guarded)
}

#[cfg(test)]
mod tests {
    use super::*;

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
