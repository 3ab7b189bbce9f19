//! The response body of `demo-http`: a complete buffer, the request's own body forwarded frame by
//! frame (`/echo`), or server-sent events produced on a timer (`/sse`). Each streams as it goes,
//! so memory stays flat whatever the size or duration.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

/// A response body.
#[derive(Debug)]
pub enum DemoBody {
    /// All of it at once; `None` once sent (or for an empty body).
    Full(Option<Bytes>),
    /// A request body, passed through as its frames arrive (trailers included).
    Echo(Incoming),
    /// Numbered events with a pause between them.
    Events(Events),
}

impl DemoBody {
    /// An empty body.
    pub fn empty() -> DemoBody {
        DemoBody::Full(None)
    }

    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> DemoBody {
        DemoBody::Full(Some(bytes.into()))
    }
}

/// `data: <i>\n\n` for i in `0..count`, the first at once, then one every `interval`.
#[derive(Debug)]
pub struct Events {
    next: u32,
    count: u32,
    interval: Duration,
    /// The pause before event `next`; boxed because `Sleep` is `!Unpin`.
    pause: Option<Pin<Box<Sleep>>>,
}

impl Events {
    /// The events `0..count`.
    pub fn new(count: u32, interval: Duration) -> Events {
        Events {
            next: 0,
            count,
            interval,
            pause: None,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.next >= self.count {
            return Poll::Ready(None);
        }
        if let Some(pause) = &mut self.pause {
            ready!(pause.as_mut().poll(cx));
            self.pause = None;
        }
        let event = Bytes::from(format!("data: {}\n\n", self.next));
        self.next += 1;
        if self.next < self.count {
            self.pause = Some(Box::pin(tokio::time::sleep(self.interval)));
        }
        Poll::Ready(Some(event))
    }
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            DemoBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            DemoBody::Echo(incoming) => Pin::new(incoming).poll_frame(cx),
            DemoBody::Events(events) => events
                .poll_next(cx)
                .map(|event| event.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DemoBody::Full(bytes) => bytes.is_none(),
            DemoBody::Echo(incoming) => incoming.is_end_stream(),
            DemoBody::Events(events) => events.next >= events.count,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DemoBody::Full(None) => SizeHint::with_exact(0),
            DemoBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            // A request with a Content-Length gets its echo sent with the same length.
            DemoBody::Echo(incoming) => incoming.size_hint(),
            DemoBody::Events(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn events_are_separate_frames_spaced_by_the_interval() {
        let interval = Duration::from_millis(30);
        let mut body = DemoBody::Events(Events::new(3, interval));
        let start = std::time::Instant::now();
        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.ok().and_then(|f| f.into_data().ok());
            let Some(data) = data else {
                panic!("not a data frame");
            };
            seen.push((String::from_utf8_lossy(&data).into_owned(), start.elapsed()));
        }
        let texts: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, ["data: 0\n\n", "data: 1\n\n", "data: 2\n\n"]);
        assert!(seen[0].1 < interval, "first event waited {:?}", seen[0].1);
        assert!(seen[2].1 >= interval * 2, "events came too fast: {seen:?}");
        assert!(body.is_end_stream());
        assert!(DemoBody::Events(Events::new(0, Duration::ZERO)).is_end_stream());
    }
}
