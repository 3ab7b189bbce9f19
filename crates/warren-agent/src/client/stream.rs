//! The client side of server streams: envelopes decoded from a response body into `Start` /
//! `Connect` process events or `WatchDir` events, ending at the end-of-stream message.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::Stream;
use serde::de::DeserializeOwned;

use crate::connect::EndStream;
use crate::envelope::{Envelope, EnvelopeDecoder};
use crate::error::AgentError;
use crate::protocol::{ProcessEvent, StartResponse, WatchEvent};

type BodyStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Decodes messages of type `M` from a stream's envelopes.
struct Messages<M> {
    body: BodyStream,
    decoder: EnvelopeDecoder,
    finished: bool,
    _message: PhantomData<fn() -> M>,
}

impl<M: DeserializeOwned> Messages<M> {
    fn new(resp: reqwest::Response) -> Messages<M> {
        Messages {
            body: Box::pin(resp.bytes_stream()),
            decoder: EnvelopeDecoder::new(),
            finished: false,
            _message: PhantomData,
        }
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<M, AgentError>>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            match self.decoder.next_envelope() {
                Ok(Some(env)) => {
                    if let Some(item) = self.on_envelope(env) {
                        return Poll::Ready(Some(item));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(self.fail(e.into())))),
            }
            match ready!(self.body.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                Some(Err(e)) => return Poll::Ready(Some(Err(self.fail(e.into())))),
                None => {
                    let e =
                        AgentError::Protocol("stream ended without end-of-stream message".into());
                    return Poll::Ready(Some(Err(self.fail(e))));
                }
            }
        }
    }

    fn fail(&mut self, e: AgentError) -> AgentError {
        self.finished = true;
        e
    }

    /// `None` when the envelope ends the stream cleanly.
    fn on_envelope(&mut self, env: Envelope) -> Option<Result<M, AgentError>> {
        if env.is_compressed() {
            let e = AgentError::Protocol("compressed envelope without negotiation".into());
            return Some(Err(self.fail(e)));
        }
        if env.is_end_stream() {
            self.finished = true;
            return match serde_json::from_slice::<EndStream>(&env.data) {
                Ok(EndStream { error: None }) => None,
                Ok(EndStream { error: Some(e) }) => Some(Err(e.into())),
                Err(e) => Some(Err(e.into())),
            };
        }
        match serde_json::from_slice::<M>(&env.data) {
            Ok(message) => Some(Ok(message)),
            Err(e) => Some(Err(self.fail(e.into()))),
        }
    }
}

/// The events of one `Start` or `Connect` call, in order. Ends (`None`) after the end-of-stream
/// message; an error carried by that message is yielded once as `Some(Err(AgentError::Rpc))`.
pub struct ProcessStream {
    messages: Messages<StartResponse>,
}

impl std::fmt::Debug for ProcessStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessStream")
            .field("finished", &self.messages.finished)
            .finish_non_exhaustive()
    }
}

impl ProcessStream {
    pub(crate) fn new(resp: reqwest::Response) -> ProcessStream {
        ProcessStream {
            messages: Messages::new(resp),
        }
    }

    /// The next event; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Result<ProcessEvent, AgentError>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<ProcessEvent, AgentError>>> {
        self.messages
            .poll_message(cx)
            .map(|m| m.map(|r| r.map(|resp| resp.event)))
    }
}

impl Stream for ProcessStream {
    type Item = Result<ProcessEvent, AgentError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}

/// The events of one `WatchDir` call: `Start` first, then changes and keepalives until dropped.
pub struct WatchStream {
    messages: Messages<WatchEvent>,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("finished", &self.messages.finished)
            .finish_non_exhaustive()
    }
}

impl WatchStream {
    pub(crate) fn new(resp: reqwest::Response) -> WatchStream {
        WatchStream {
            messages: Messages::new(resp),
        }
    }

    /// The next event; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, AgentError>> {
        std::future::poll_fn(|cx| self.messages.poll_message(cx)).await
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, AgentError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().messages.poll_message(cx)
    }
}
