//! The server's listeners: plain TCP or TLS, HTTP/1.1 and HTTP/2, upgrades, graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// What a handler may know of the connection a request came on (a request extension, as
/// `Arc<ConnInfo>`: one per connection, shared by its requests).
pub struct ConnInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The peer's IP as a header value (`X-Forwarded-For`), spelled once per connection.
    pub(crate) remote_ip: Option<http::HeaderValue>,
    /// The preview proxy's app connection for this client connection.
    pub(crate) pinned: crate::proxy::Pinned,
}

impl ConnInfo {
    pub(crate) fn new(remote: SocketAddr, tls: bool) -> Self {
        ConnInfo {
            remote,
            tls,
            remote_ip: http::HeaderValue::from_str(&remote.ip().to_string()).ok(),
            pinned: crate::proxy::Pinned::default(),
        }
    }
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnInfo")
            .field("remote", &self.remote)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// What a listener serves: an axum [`Router`](axum::Router), or any service of the same shape
/// (the server's front door, which proxies preview requests before any routing).
pub trait App:
    tower::Service<
        http::Request<Incoming>,
        Response = axum::response::Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: tower::Service<
            http::Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// A client that opens a socket and never finishes the handshake must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's head once it started one.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop waits for requests in flight before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Out of file descriptors (EMFILE) fails every accept at once; retrying at full speed would
/// only burn a core until some connection closes.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets live
/// connections finish their requests (for at most 10 s) and returns.
///
/// Each connection speaks HTTP/1.1 (with upgrades, for WebSockets) or HTTP/2, told apart by
/// its first bytes: prior knowledge on plain TCP, whatever ALPN chose under TLS. Every request
/// carries an `Arc<`[`ConnInfo`]`>` extension.
///
/// Connections are dealt round-robin to `workers` threads, each a single-threaded runtime
/// serving its connections from start to end, as nginx's workers do: a request and the
/// upstream exchange it makes (the preview proxy) then never hop between threads, which on a
/// small host costs more than the proxying itself (measured: 2 work-stealing workers spent
/// 26 µs of CPU per proxied request, 1 worker 19 µs).
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: S,
    workers: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: App,
{
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let count = workers.max(1);
    let mut workers = Vec::with_capacity(count);
    for i in 0..count {
        workers.push(Worker::start(i, acceptor.clone(), app.clone())?);
    }
    tokio::pin!(shutdown);
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, remote) = match accepted {
            Ok(conn) => conn,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "detaching an accepted socket");
                continue;
            }
        };
        next = (next + 1) % workers.len();
        if workers[next].conns.send((stream, remote)).is_err() {
            tracing::error!("HTTP worker {next} is gone; stopping");
            break;
        }
    }
    // Closing the socket now makes new clients fail fast instead of queueing in the backlog.
    drop(listener);
    let done: Vec<_> = workers.into_iter().map(|w| w.done).collect();
    for d in done {
        let _ = d.await;
    }
    Ok(())
}

/// How many HTTP worker threads a listener gets unless told: half the cores, at least one.
///
/// Every proxied request costs the sandboxed app about as much CPU as it costs the proxy, and
/// the apps run on this same host, as do the sandboxes that are Warren's reason to exist. A
/// worker per core competes with them for the cores and wakes more often for less work each
/// time: on 2 cores, proxying to an app on the same host, 1 worker served 0.92-1.02× nginx's
/// requests/s at ~22 µs of CPU per request, 2 workers 0.82-0.88× at 26-29 µs
/// (`warren bench proxy --http-workers N`).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// One thread with a single-threaded runtime, serving the connections it is handed until the
/// sender goes away, then draining them.
struct Worker {
    conns: tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Worker {
    fn start<S: App>(
        i: usize,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
        app: S,
    ) -> std::io::Result<Worker> {
        let (conns, rx) = tokio::sync::mpsc::unbounded_channel();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("warren-http-{i}"))
            .spawn(move || {
                runtime.block_on(work(rx, acceptor, app));
                let _ = done_tx.send(());
            })?;
        Ok(Worker { conns, done })
    }
}

async fn work<S: App>(
    mut conns: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: S,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper silently drops its header-read timeout: a client that opens a
    // request and never finishes it would hold its connection forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    tokio::spawn(keep_a_near_timer());
    let graceful = GracefulShutdown::new();
    while let Some((stream, remote)) = conns.recv().await {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "adopting an accepted socket");
                continue;
            }
        };
        // Small writes (exec output, PTY echo, WebSocket frames) must not wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%remote, error = %e, "setting TCP_NODELAY");
        }
        // Taken before the handshake, so a connection still handshaking when the stop comes is
        // told to finish as soon as it starts serving, and the stop waits for it.
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let app = app.clone();
        // The handshake runs here, not in the loop: one slow client must not stall the others.
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(stream, remote, false, app, &builder, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, remote, true, app, &builder, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
}

/// Keeps a timer due within a second pending on this runtime for as long as it runs.
///
/// hyper arms a header-read timer each time a keep-alive connection waits for its next
/// request and drops it once the head is in. Tokio wakes its own driver (an eventfd write, and
/// an extra trip through `epoll_wait`) whenever a timer is armed that is due before every
/// timer the driver last saw, and so always when it last saw none, which is the normal state
/// of a busy proxy: measured 0.3 eventfd writes per proxied request. With this tick always
/// pending, a new 30 s timer is never the earliest and arming it costs no syscall.
async fn keep_a_near_timer() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

async fn serve_connection<T, S>(
    stream: T,
    remote: SocketAddr,
    tls: bool,
    app: S,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: App,
{
    let info = Arc::new(ConnInfo::new(remote, tls));
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        app.clone().oneshot(req)
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        // Mostly clients going away mid-request: worth a trace, not an alarm.
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// Errors that concern only the connection being accepted, after which the next accept works.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    )
}
