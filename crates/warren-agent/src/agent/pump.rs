//! The per-process pump that turns a process's output and exit into stream envelopes: to its
//! `Start` stream with backpressure (a slow `Start` reader slows the process, as before), and to
//! its `Connect` subscribers through a bounded broadcast that never waits for them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::Signal as NixSignal;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{sleep_until, Instant, Interval};

use warren_agent::connect::{code, ConnectError, EndStream};
use warren_agent::envelope;
use warren_agent::{ProcessData, ProcessEvent, StartResponse};

use super::exit_status;
use super::process::{signal_group, Entry, StreamOptions, Supervisor};
use super::pty;

/// Largest output chunk per `data` event (envd's size).
const CHUNK: usize = 32 << 10;
/// Envelopes queued per stream before the pump waits for the HTTP client: the backpressure bound.
pub const QUEUE: usize = 16;
/// After a process exits, how long its pipes may stay silent before we stop waiting for EOF: a
/// background grandchild may hold them open forever.
const DRAIN_IDLE: Duration = Duration::from_millis(100);

/// One `Start`/`Connect` stream message, framed; `None` only if it cannot be serialized.
pub fn event_envelope(event: ProcessEvent) -> Option<Bytes> {
    match envelope::encode_json(0, &StartResponse { event }) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            eprintln!("warren-agent: cannot encode process event: {e}");
            None
        }
    }
}

fn end_envelope(error: Option<ConnectError>) -> Bytes {
    envelope::encode_json(envelope::FLAG_END_STREAM, &EndStream { error }).unwrap_or_default()
}

/// Where a pump's envelopes go; after the `Start` client has gone only to subscribers, but the
/// pump keeps draining the output so the process never blocks on a full pipe.
struct Sink {
    start: Option<mpsc::Sender<Bytes>>,
    entry: Arc<Entry>,
}

impl Sink {
    async fn send(&mut self, event: ProcessEvent) {
        let Some(bytes) = event_envelope(event) else {
            return;
        };
        self.entry.publish(&bytes);
        let Some(tx) = &self.start else { return };
        if tx.send(bytes).await.is_err() {
            self.start = None;
        }
    }

    async fn keepalive(&mut self) {
        let Some(tx) = &self.start else { return };
        if let Some(bytes) = event_envelope(ProcessEvent::Keepalive) {
            if tx.send(bytes).await.is_err() {
                self.start = None;
            }
        }
    }

    async fn finish(&mut self, error: Option<ConnectError>) {
        self.entry.close_subscribers();
        if let Some(tx) = self.start.take() {
            let _ = tx.send(end_envelope(error)).await;
        }
    }

    /// The end of a process its `Start` client's deadline killed: subscribers get its end
    /// event, the `Start` stream envd's `deadline_exceeded` (which the SDKs raise as a
    /// timeout, not as an exit code).
    async fn timed_out(&mut self, end: ProcessEvent, after: Duration) {
        if let Some(bytes) = event_envelope(end) {
            self.entry.publish(&bytes);
        }
        let error = ConnectError::new(
            code::DEADLINE_EXCEEDED,
            format!(
                "the request's deadline of {} ms passed: the process was killed",
                after.as_millis()
            ),
        );
        self.finish(Some(error)).await;
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn read_pty(pty: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> std::io::Result<usize> {
    match pty {
        Some(p) => pty::read(p, buf).await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn chunk(buf: &[u8], n: usize) -> Bytes {
    buf.get(..n).map(Bytes::copy_from_slice).unwrap_or_default()
}

/// Forwards a process's output and exit to its streams, then reaps it.
pub async fn run(
    sup: Arc<Supervisor>,
    mut child: Child,
    entry: Arc<Entry>,
    mut pty: Option<pipe::Receiver>,
    tx: mpsc::Sender<Bytes>,
    options: StreamOptions,
) {
    let pid = child.id().unwrap_or_default();
    let mut sink = Sink {
        start: Some(tx),
        entry,
    };
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out_buf = vec![0u8; CHUNK];
    let mut err_buf = vec![0u8; CHUNK];
    let mut pty_buf = vec![0u8; if pty.is_some() { CHUNK } else { 0 }];
    let mut end: Option<ProcessEvent> = None;
    let mut timed_out = false;
    let never = Instant::now() + Duration::from_secs(30 * 365 * 86400);
    let drain = sleep_until(never);
    tokio::pin!(drain);
    let deadline = sleep_until(options.timeout.map_or(never, |t| Instant::now() + t));
    tokio::pin!(deadline);
    let mut keepalive = options
        .keepalive
        .map(|period| tokio::time::interval_at(Instant::now() + period, period));

    while end.is_none() || stdout.is_some() || stderr.is_some() || pty.is_some() {
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf) => match read {
                Ok(n) if n > 0 => {
                    sink.send(ProcessEvent::Data(ProcessData::Stdout(chunk(&out_buf, n)))).await;
                }
                _ => stdout = None,
            },
            read = read_some(&mut stderr, &mut err_buf) => match read {
                Ok(n) if n > 0 => {
                    sink.send(ProcessEvent::Data(ProcessData::Stderr(chunk(&err_buf, n)))).await;
                }
                _ => stderr = None,
            },
            read = read_pty(&mut pty, &mut pty_buf) => match read {
                Ok(n) if n > 0 => {
                    sink.send(ProcessEvent::Data(ProcessData::Pty(chunk(&pty_buf, n)))).await;
                }
                _ => pty = None,
            },
            status = child.wait(), if end.is_none() => {
                sup.forget(pid);
                end = Some(match status {
                    Ok(status) => exit_status::end_event(status),
                    Err(e) => exit_status::wait_failed(&e),
                });
            }
            () = &mut drain, if end.is_some() => break,
            () = &mut deadline, if end.is_none() => {
                let _ = signal_group(pid, NixSignal::SIGKILL);
                timed_out = true;
                deadline.as_mut().reset(never);
            }
            () = tick(&mut keepalive), if sink.start.is_some() => sink.keepalive().await,
        }
        if end.is_some() {
            // Measured from the last activity, not from a send that waited on a slow client.
            drain.as_mut().reset(Instant::now() + DRAIN_IDLE);
        }
    }
    drop((stdout, stderr, pty));
    match (end, options.timeout) {
        (Some(end), Some(after)) if timed_out => sink.timed_out(end, after).await,
        (end, _) => {
            if let Some(end) = end {
                sink.send(end).await;
            }
            sink.finish(None).await;
        }
    }
}

/// A `Connect` stream: a `start` event naming the process, then everything the pump publishes
/// from now on, with keepalives; cut off with `resource_exhausted` if it falls too far behind.
pub fn subscriber(
    pid: u32,
    mut events: broadcast::Receiver<Bytes>,
    options: StreamOptions,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(QUEUE);
    if let Some(start) = event_envelope(ProcessEvent::Start { pid }) {
        let _ = tx.try_send(start);
    }
    let mut keepalive = options
        .keepalive
        .map(|period| tokio::time::interval_at(Instant::now() + period, period));
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                event = events.recv() => match event {
                    Ok(bytes) => bytes,
                    Err(broadcast::error::RecvError::Closed) => {
                        let _ = tx.send(end_envelope(None)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let error = ConnectError::new(
                            code::RESOURCE_EXHAUSTED,
                            format!("client too slow: {n} events of process {pid} were dropped"),
                        );
                        let _ = tx.send(end_envelope(Some(error))).await;
                        return;
                    }
                },
                () = tick(&mut keepalive) => match event_envelope(ProcessEvent::Keepalive) {
                    Some(bytes) => bytes,
                    None => continue,
                },
                () = tx.closed() => return,
            };
            if tx.send(message).await.is_err() {
                return;
            }
        }
    });
    rx
}
