//! The agent's server role: the HTTP/1.1 listener, token check and routing, the main command,
//! and the shutdown rule (on SIGTERM/SIGINT stop the main command, wait for it, exit 0).

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, ALLOW};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use nix::sys::signal::{SigSet, Signal as NixSignal};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use warren_agent::connect::{self, code, path, ConnectError};

use super::body::AgentBody;
use super::config::Config;
use super::process::Supervisor;
use super::rpc::{self, Services};
use super::users::Accounts;
use super::watch::Watchers;
use super::{files_http, ports, signed_url, streams};

struct State {
    token: std::sync::Mutex<Option<String>>,
    token_file: Option<std::path::PathBuf>,
    /// Left out of `/ports`: the agent is not something the sandbox serves.
    own_port: u16,
    services: Services,
}

impl State {
    fn token(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.token.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = self.token().clone() else {
            return true;
        };
        let Some(given) = headers.get(connect::HEADER_ACCESS_TOKEN) else {
            return false;
        };
        if signed_url::same(given.as_bytes(), expected.as_bytes()) {
            return true;
        }
        self.rotated_to(given.as_bytes())
    }

    /// Whether the token file now holds `given` (this agent was restored as a fork, into a
    /// sandbox with a token of its own: the server writes it there, read-only to the sandbox);
    /// if so it becomes the token, and the old one stops working.
    fn rotated_to(&self, given: &[u8]) -> bool {
        let Some(path) = &self.token_file else {
            return false;
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return false;
        };
        let now = text.trim();
        if now.is_empty() || !signed_url::same(given, now.as_bytes()) {
            return false;
        }
        *self.token() = Some(now.to_owned());
        true
    }

    /// A `/files` request may instead carry a URL signed with the token; if it does not, why.
    fn signed(&self, req: &Request<Incoming>) -> Result<(), &'static str> {
        let Some(token) = self.token().clone() else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        signed_url::check(&token, req.method(), req.uri().query(), now)
    }
}

/// Runs the server role until shutdown; returns the process exit code.
pub fn run() -> ExitCode {
    // A signal mask inherited from whoever started us (std's spawn does not reset it) would
    // pass to every process we start: SIGTERM would not reach them. Unblock everything while
    // we are still single-threaded.
    if let Err(e) = SigSet::empty().thread_set_mask() {
        eprintln!("warren-agent: cannot reset the signal mask: {e}");
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("warren-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(pids) = config.pids {
        super::limits::cap_processes(pids);
    }
    if let Some(score) = config.child_oom_score_adj {
        super::limits::set_child_oom_score_adj(score);
    }
    // One thread: the agent's work is I/O, and a single-threaded runtime has the lowest
    // per-request latency and footprint.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("warren-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(config));
    // Do not wait for connections or pumps still in flight: we are exiting.
    runtime.shutdown_background();
    code
}

async fn serve(config: Config) -> ExitCode {
    let listener = match TcpListener::bind(config.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("warren-agent: cannot listen on {}: {e}", config.addr);
            return ExitCode::FAILURE;
        }
    };
    let sup = Supervisor::new(config.child_env);
    // Handlers first, so a SIGTERM racing the main command's start is not lost.
    let signals = Signals::install();
    if super::init::is_init() {
        let owner = sup.clone();
        tokio::spawn(super::init::reap_forever(move |pid| owner.owns(pid)));
    }
    if let Some(argv) = &config.main_cmd {
        if let Err(e) = sup.start_main(argv, &config.main_cwd) {
            eprintln!("warren-agent: {e}");
        }
    }
    let addr = listener.local_addr().unwrap_or(config.addr);
    // One write: the main command, started above, shares this stderr, and `eprintln!` writes
    // a formatted address in pieces another process's line could land between.
    {
        use std::io::Write;
        let line = format!("warren-agent: listening on {addr}\n");
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
    let state = Arc::new(State {
        token: std::sync::Mutex::new(config.token),
        token_file: config.token_file,
        own_port: addr.port(),
        services: Services {
            sup: sup.clone(),
            accounts: Accounts::from_env(),
            watchers: Watchers::default(),
        },
    });
    tokio::select! {
        () = accept_loop(listener, state) => ExitCode::FAILURE,
        code = signals.until_shutdown(&sup) => code,
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let stream = super::accept(&listener, "warren-agent").await;
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            // A connection error is the client's business (reset, bad request line).
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

enum Route {
    Health,
    Files,
    Ports,
    Start,
    Connect,
    WatchDir,
    StreamInput,
    Unary(&'static str),
    Unknown,
}

const UNARY: [&str; 13] = [
    path::LIST,
    path::SEND_INPUT,
    path::CLOSE_STDIN,
    path::SEND_SIGNAL,
    path::UPDATE,
    path::STAT,
    path::MAKE_DIR,
    path::MOVE,
    path::LIST_DIR,
    path::REMOVE,
    path::CREATE_WATCHER,
    path::GET_WATCHER_EVENTS,
    path::REMOVE_WATCHER,
];

fn route(path: &str) -> Route {
    match path {
        path::HEALTH => Route::Health,
        path::FILES => Route::Files,
        path::PORTS => Route::Ports,
        path::START => Route::Start,
        path::CONNECT => Route::Connect,
        path::WATCH_DIR => Route::WatchDir,
        path::STREAM_INPUT => Route::StreamInput,
        other => UNARY
            .iter()
            .find(|p| **p == other)
            .map_or(Route::Unknown, |p| Route::Unary(p)),
    }
}

async fn handle(state: &State, mut req: Request<Incoming>) -> Response<AgentBody> {
    let route = route(req.uri().path());
    if let Route::Health = route {
        let mut resp = Response::new(AgentBody::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        return resp;
    }
    if !state.authorized(req.headers()) {
        if matches!(route, Route::Files) {
            // envd's REST shape and messages (`signature is already expired`, ...).
            if let Err(why) = state.signed(&req) {
                return files_http::rest_error(StatusCode::UNAUTHORIZED, why);
            }
        } else {
            return rpc::unary_error(&ConnectError::new(
                code::UNAUTHENTICATED,
                "missing or invalid access token",
            ));
        }
        // The signature names the user (none: the default one); a header must not change it.
        req.headers_mut().remove(hyper::header::AUTHORIZATION);
    }
    let allowed = match route {
        Route::Unknown | Route::Files => None,
        Route::Ports => Some("GET"),
        _ => Some("POST"),
    };
    if let Some(allowed) = allowed.filter(|m| req.method().as_str() != *m) {
        let mut resp = Response::new(AgentBody::empty());
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allowed));
        return resp;
    }
    let services = &state.services;
    let user = || services.accounts.acting_user(req.headers(), None);
    match route {
        Route::Files => files_http::handle(services, req).await,
        Route::Ports => ports::response(state.own_port).await,
        Route::Start => match user() {
            Ok(user) => streams::start(services, user, req).await,
            Err(e) => rpc::stream_response(Err(e)),
        },
        Route::WatchDir => match user() {
            Ok(user) => streams::watch_dir(services, user, req).await,
            Err(e) => rpc::stream_response(Err(e)),
        },
        Route::Connect => streams::connect(services, req).await,
        Route::StreamInput => streams::stream_input(services, req).await,
        Route::Unary(path) => rpc::unary(services, path, req).await,
        Route::Health | Route::Unknown => rpc::unary_error(&ConnectError::new(
            code::UNIMPLEMENTED,
            format!(
                "{} {} is not implemented by this agent",
                req.method(),
                req.uri().path()
            ),
        )),
    }
}

/// The signals the server reacts to. Registration failures leave that signal's default action.
struct Signals {
    shutdown: Vec<tokio::signal::unix::Signal>,
    forward: Vec<(NixSignal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        let listen = |kind: SignalKind| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!(
                    "warren-agent: cannot handle signal {}: {e}",
                    kind.as_raw_value()
                );
                None
            }
        };
        let shutdown = [SignalKind::terminate(), SignalKind::interrupt()]
            .into_iter()
            .filter_map(listen)
            .collect();
        // Meant for the workload (they are passed on to it); their default action would
        // otherwise kill the agent.
        let forward = [
            (NixSignal::SIGHUP, SignalKind::hangup()),
            (NixSignal::SIGQUIT, SignalKind::quit()),
            (NixSignal::SIGUSR1, SignalKind::user_defined1()),
            (NixSignal::SIGUSR2, SignalKind::user_defined2()),
        ]
        .into_iter()
        .filter_map(|(nix, kind)| listen(kind).map(|s| (nix, s)))
        .collect();
        Signals { shutdown, forward }
    }

    async fn until_shutdown(mut self, sup: &Supervisor) -> ExitCode {
        loop {
            let shutdown = any_signal(&mut self.shutdown);
            let forward = any_forwarded(&mut self.forward);
            tokio::select! {
                () = shutdown => break,
                sig = forward => { sup.signal_main(sig); }
            }
        }
        if sup.signal_main(NixSignal::SIGTERM) {
            // No bound: the runtime SIGKILLs the sandbox when its own grace period ends.
            sup.main_exited().await;
        }
        ExitCode::SUCCESS
    }
}

/// Resolves when any of `signals` arrives (never if there are none).
async fn any_signal(signals: &mut [tokio::signal::unix::Signal]) {
    std::future::poll_fn(|cx| {
        for s in signals.iter_mut() {
            if s.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Resolves with the first of `signals` that arrives (never if there are none).
async fn any_forwarded(signals: &mut [(NixSignal, tokio::signal::unix::Signal)]) -> NixSignal {
    std::future::poll_fn(|cx| {
        for (sig, s) in signals.iter_mut() {
            if s.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(*sig);
            }
        }
        std::task::Poll::Pending
    })
    .await
}
