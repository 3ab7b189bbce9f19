//! The one HTTP response body type the agent sends: either a complete buffer (unary answers,
//! with a Content-Length) or a stream of envelopes fed by a process's pump through a bounded
//! channel, so a slow reader slows the process instead of growing memory.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// A response body.
#[derive(Debug)]
pub enum AgentBody {
    /// All of it at once; `None` once sent (or for an empty body).
    Full(Option<Bytes>),
    /// Chunks as they are produced; ends when every sender is gone.
    Stream(mpsc::Receiver<Bytes>),
    /// Chunks of a body whose length is known up front (a downloaded file), so the response
    /// carries a Content-Length and clients can show progress.
    Sized(mpsc::Receiver<Bytes>, u64),
}

impl AgentBody {
    /// An empty body.
    pub fn empty() -> AgentBody {
        AgentBody::Full(None)
    }

    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> AgentBody {
        AgentBody::Full(Some(bytes.into()))
    }
}

impl Body for AgentBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            AgentBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            AgentBody::Stream(rx) | AgentBody::Sized(rx, _) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, AgentBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AgentBody::Full(None) => SizeHint::with_exact(0),
            AgentBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            AgentBody::Stream(_) => SizeHint::default(),
            AgentBody::Sized(_, len) => SizeHint::with_exact(*len),
        }
    }
}
