//! `warren-agent demo-http [PORT | --listen ADDR:PORT]`: a small, fast HTTP server to run inside a
//! sandbox as an ordinary process, for the preview proxy's tests and `warren bench proxy`. It
//! speaks HTTP/1.1 with keep-alive and offers the cases a proxy must get right: headers, streamed bodies both ways, server-sent
//! events, redirects, cookies, arbitrary statuses and WebSocket.

use std::convert::Infallible;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HOST, LOCATION, SET_COOKIE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

mod body;
mod ws;

use body::{DemoBody, Events};

/// The first argument that selects this role.
const COMMAND: &str = "demo-http";
const DEFAULT_PORT: u16 = 8000;
const USAGE: &str = "usage: warren-agent demo-http [PORT | --listen ADDR:PORT]";
const HELLO: &str = "hello from warren demo-http\n";
/// Bounds `/sse`'s `interval_ms` so a silly value cannot overflow a deadline.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// The arguments after `demo-http`, if this process was started as `warren-agent demo-http`.
pub fn wanted() -> Option<Vec<OsString>> {
    let mut args = std::env::args_os().skip(1);
    (args.next()? == COMMAND).then(|| args.collect())
}

#[derive(Debug, PartialEq, Eq)]
enum Cli {
    Serve(SocketAddr),
    Help,
}

fn parse_args(args: &[OsString]) -> Result<Cli, String> {
    let args = args
        .iter()
        .map(|a| {
            a.to_str()
                .ok_or_else(|| format!("argument {a:?} is not UTF-8"))
        })
        .collect::<Result<Vec<&str>, String>>()?;
    let listen = |addr: &str| {
        addr.parse()
            .map(Cli::Serve)
            .map_err(|e| format!("--listen {addr:?}: {e} (want ADDR:PORT)"))
    };
    match args.as_slice() {
        [] => Ok(Cli::Serve((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT).into())),
        ["-h" | "--help"] => Ok(Cli::Help),
        ["--listen", addr] => listen(addr),
        [one] if one.starts_with("--listen=") => listen(&one["--listen=".len()..]),
        [port] if !port.starts_with('-') => port
            .parse::<u16>()
            .map(|port| Cli::Serve((Ipv4Addr::UNSPECIFIED, port).into()))
            .map_err(|e| format!("port {port:?}: {e}")),
        _ => Err(format!("unexpected arguments {args:?}")),
    }
}

/// Serves until killed; returns only when it cannot start.
pub fn run(args: &[OsString]) -> ExitCode {
    let addr = match parse_args(args) {
        Ok(Cli::Serve(addr)) => addr,
        Ok(Cli::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("demo-http: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Two workers: a load test drives this on a 2-core machine, and it should scale to both.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("demo-http: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> ExitCode {
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("demo-http: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "demo-http: listening on {}",
        listener.local_addr().unwrap_or(addr)
    );
    // HTTP/1.1 only: HTTP/2 (the h2 crate) would add a megabyte to the agent every sandbox
    // carries, and a proxy speaks HTTP/1.1 to its upstreams anyway.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    loop {
        let stream = super::accept(&listener, "demo-http").await;
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(|req| async move { Ok::<_, Infallible>(handle(req)) });
            // A connection error is the client's business (reset, malformed request).
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

enum Route {
    Hello,
    Headers,
    Echo,
    Events,
    Redirect,
    RedirectAbsolute,
    Cookie,
    OriginWide,
    Status,
    WebSocket,
}

fn handle(req: Request<Incoming>) -> Response<DemoBody> {
    let path = req.uri().path();
    let (route, allowed) = match path {
        "/" => (Route::Hello, Method::GET),
        "/headers" => (Route::Headers, Method::GET),
        "/echo" => (Route::Echo, Method::POST),
        "/sse" => (Route::Events, Method::GET),
        "/redirect" => (Route::Redirect, Method::GET),
        "/redirect-abs" => (Route::RedirectAbsolute, Method::GET),
        "/cookie" => (Route::Cookie, Method::GET),
        "/origin-wide" => (Route::OriginWide, Method::GET),
        "/ws" => (Route::WebSocket, Method::GET),
        _ if path.starts_with("/status/") => (Route::Status, Method::GET),
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    let head_ok = allowed == Method::GET && !matches!(route, Route::WebSocket);
    if req.method() != allowed && !(head_ok && req.method() == Method::HEAD) {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        let allow = if head_ok {
            "GET, HEAD"
        } else {
            allowed.as_str()
        };
        if let Ok(allow) = HeaderValue::from_str(allow) {
            resp.headers_mut().insert(ALLOW, allow);
        }
        return resp;
    }
    match route {
        Route::Hello => text(StatusCode::OK, HELLO),
        Route::Headers => headers(&req),
        Route::Echo => echo(req),
        Route::Events => events(&req),
        Route::Redirect => redirect("/target".to_owned()),
        Route::RedirectAbsolute => {
            // HTTP/2 carries the host as `:authority`, which hyper puts in the URI.
            let host = req
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri().authority().map(|a| a.as_str()));
            match host {
                Some(host) => redirect(format!("http://{host}/target")),
                None => text(StatusCode::BAD_REQUEST, "no Host header\n"),
            }
        }
        Route::Cookie => {
            let mut resp = text(StatusCode::OK, "two cookies set\n");
            let headers = resp.headers_mut();
            headers.append(
                SET_COOKIE,
                HeaderValue::from_static("a=1; Path=/; HttpOnly"),
            );
            headers.append(SET_COOKIE, HeaderValue::from_static("b=2"));
            resp
        }
        Route::OriginWide => {
            // Headers that act on the whole origin: the proxy's path form must drop them.
            let mut resp = text(StatusCode::OK, "origin-wide headers set\n");
            let headers = resp.headers_mut();
            for (name, value) in [
                ("service-worker-allowed", "/"),
                ("clear-site-data", "\"*\""),
                ("strict-transport-security", "max-age=60"),
                ("alt-svc", "clear"),
                ("cross-origin-opener-policy", "same-origin"),
                ("cross-origin-embedder-policy", "require-corp"),
            ] {
                headers.insert(name, HeaderValue::from_static(value));
            }
            resp
        }
        Route::Status => status(&path["/status/".len()..]),
        Route::WebSocket => ws::upgrade(req),
    }
}

/// A response with a `text/plain` body.
fn text(status: StatusCode, body: &'static str) -> Response<DemoBody> {
    with_type(status, "text/plain", DemoBody::full(body))
}

fn with_type(status: StatusCode, content_type: &'static str, body: DemoBody) -> Response<DemoBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The request's headers as a JSON object, plus `_method`, `_path` and `_version`.
fn headers(req: &Request<Incoming>) -> Response<DemoBody> {
    let mut map = serde_json::Map::new();
    for name in req.headers().keys() {
        let values: Vec<String> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        map.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |p| p.as_str());
    map.insert("_method".into(), req.method().as_str().into());
    map.insert("_path".into(), path.into());
    // `Version`'s Debug form is the protocol name: "HTTP/1.1", "HTTP/2.0".
    map.insert("_version".into(), format!("{:?}", req.version()).into());
    match serde_json::to_vec(&map) {
        Ok(json) => with_type(StatusCode::OK, "application/json", DemoBody::full(json)),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode headers\n"),
    }
}

fn echo(req: Request<Incoming>) -> Response<DemoBody> {
    let content_type = req.headers().get(CONTENT_TYPE).cloned();
    let mut resp = Response::new(DemoBody::Echo(req.into_body()));
    if let Some(content_type) = content_type {
        resp.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    resp
}

fn events(req: &Request<Incoming>) -> Response<DemoBody> {
    let mut count = 3u32;
    let mut interval_ms = 200u64;
    for pair in req.uri().query().unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let parsed = match name {
            "n" => value.parse().map(|v| count = v),
            "interval_ms" => value.parse().map(|v| interval_ms = v),
            _ => Ok(()),
        };
        if parsed.is_err() {
            return text(
                StatusCode::BAD_REQUEST,
                "n and interval_ms must be whole numbers\n",
            );
        }
    }
    let interval = Duration::from_millis(interval_ms).min(MAX_INTERVAL);
    let mut resp = with_type(
        StatusCode::OK,
        "text/event-stream",
        DemoBody::Events(Events::new(count, interval)),
    );
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn redirect(location: String) -> Response<DemoBody> {
    let Ok(location) = HeaderValue::try_from(location) else {
        return text(StatusCode::BAD_REQUEST, "unusable Host header\n");
    };
    let mut resp = Response::new(DemoBody::empty());
    *resp.status_mut() = StatusCode::FOUND;
    resp.headers_mut().insert(LOCATION, location);
    resp
}

/// `/status/<code>`: any final status (200–599); informational ones would leave a client
/// waiting for the response that follows them.
fn status(code: &str) -> Response<DemoBody> {
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok());
    let Some(status) = status else {
        return text(StatusCode::BAD_REQUEST, "status must be 200 to 599\n");
    };
    let mut resp = Response::new(DemoBody::empty());
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn serve(addr: &str) -> Result<Cli, String> {
        addr.parse()
            .map(Cli::Serve)
            .map_err(|e: std::net::AddrParseError| e.to_string())
    }

    #[test]
    fn command_line() {
        assert_eq!(parse_args(&args(&[])), serve("0.0.0.0:8000"));
        assert_eq!(parse_args(&args(&["9000"])), serve("0.0.0.0:9000"));
        assert_eq!(
            parse_args(&args(&["--listen", "127.0.0.1:81"])),
            serve("127.0.0.1:81")
        );
        assert_eq!(parse_args(&args(&["--listen=[::1]:82"])), serve("[::1]:82"));
        assert_eq!(parse_args(&args(&["--help"])), Ok(Cli::Help));
        for bad in [
            &["70000"][..],
            &["--listen"],
            &["--listen", "8000"],
            &["--port", "1"],
            &["1", "2"],
            &["-x"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn status_codes() {
        assert_eq!(status("418").status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(status("599").status().as_u16(), 599);
        for bad in ["101", "600", "abc", "", "4180"] {
            assert_eq!(status(bad).status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
