//! The preview proxy: requests naming a sandbox port (by host, E2B headers or path) go to that
//! port, on the API's listener and on the optional proxy-only one.
mod access;
mod connect_end;
mod envd_audit;
mod forward;
mod page;
mod rewrite;
mod target;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};

pub use access::{cookie_name, TOKEN_HEADER, TOKEN_QUERY};
pub use forward::Pinned;
pub use page::ProxyError;
pub use target::{Form, Target};

use hyper::body::Incoming;
use warren_backend::AGENT_PORT;

use crate::listen::ConnInfo;
use crate::AppState;

/// The proxy's shared state.
#[derive(Clone)]
pub struct Proxy {
    /// Preview domain, lowercase.
    pub domain: String,
}

impl Proxy {
    /// A proxy for `<id>-<port>.<domain>`.
    pub fn new(domain: &str) -> Self {
        Proxy {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        }
    }
}

/// Each listener's service: requests naming a sandbox port go to the proxy before any routing
/// (the cheapest path for the busiest traffic); the rest go to the API, or on the proxy-only
/// listener, get a 404.
// One Arc, so the per-request clone a listener makes is one count, not the whole state.
#[derive(Clone)]
pub struct FrontDoor(Arc<Door>);

struct Door {
    state: AppState,
    api: Option<axum::Router>,
}

impl FrontDoor {
    /// The API listener's front door.
    pub fn with_api(state: AppState, api: axum::Router) -> Self {
        FrontDoor(Arc::new(Door {
            state,
            api: Some(api),
        }))
    }

    /// The proxy-only listener's.
    pub fn proxy_only(state: AppState) -> Self {
        FrontDoor(Arc::new(Door { state, api: None }))
    }
}

type BoxResponse = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
>;

impl tower::Service<Request<Incoming>> for FrontDoor {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = BoxResponse;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let door = &self.0;
        let target = target::find(req.headers(), req.uri(), &door.state.proxy.domain);
        match (target, &door.api) {
            (Some(t), _) => Box::pin(handle(self.0.clone(), t, req)),
            (None, Some(api)) => {
                use tower::ServiceExt;
                Box::pin(api.clone().oneshot(req.map(axum::body::Body::new)))
            }
            (None, None) => {
                let err = ProxyError::NoTarget(door.state.proxy.domain.clone());
                let resp = err.render(page::wants_html(req.headers()));
                Box::pin(std::future::ready(Ok(resp)))
            }
        }
    }
}

async fn handle(
    door: Arc<Door>,
    target: Target,
    req: Request<Incoming>,
) -> Result<Response, std::convert::Infallible> {
    use futures::FutureExt;
    let html = page::wants_html(req.headers());
    let audit = (target.port == AGENT_PORT)
        .then(|| envd_audit::pending(&target.id, &req))
        .flatten();
    // A panic is a bug, but the client still gets an answer.
    let resp = match std::panic::AssertUnwindSafe(proxy(&door.state, &target, req))
        .catch_unwind()
        .await
    {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => e.render(html),
        Err(_) => {
            ProxyError::Internal("internal error (a bug: see the server log)".into()).render(html)
        }
    };
    if let Some(entry) = audit {
        envd_audit::record(
            &door.state,
            target.id.clone(),
            entry,
            resp.status().as_u16(),
        );
    }
    let kind = if target.port == AGENT_PORT {
        crate::metrics::Proxied::Agent
    } else {
        crate::metrics::Proxied::App
    };
    let bytes = door
        .state
        .service
        .telemetry()
        .proxied(kind, resp.status().as_u16());
    Ok(resp.map(|body| axum::body::Body::new(counted::Counted::new(body, bytes))))
}

mod counted {
    //! A response body that counts the bytes it yields.
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame, SizeHint};
    use prometheus_client::metrics::counter::Counter;

    pin_project_lite::pin_project! {
        pub struct Counted<B> {
            #[pin]
            inner: B,
            counter: Counter,
        }
    }

    impl<B> Counted<B> {
        pub fn new(inner: B, counter: Counter) -> Self {
            Counted { inner, counter }
        }
    }

    impl<B: Body<Data = Bytes>> Body for Counted<B> {
        type Data = Bytes;
        type Error = B::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let this = self.project();
            let polled = this.inner.poll_frame(cx);
            if let Poll::Ready(Some(Ok(frame))) = &polled {
                if let Some(data) = frame.data_ref() {
                    this.counter.inc_by(data.len() as u64);
                }
            }
            polled
        }

        fn is_end_stream(&self) -> bool {
            self.inner.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.inner.size_hint()
        }
    }
}

async fn proxy(
    state: &AppState,
    target: &Target,
    mut req: Request<Incoming>,
) -> Result<Response, ProxyError> {
    if let Form::Path(prefix) = &target.form {
        // Relative links of the app's index resolve under the prefix only with the slash.
        if req.uri().path() == prefix {
            let mut loc = format!("{prefix}/");
            if let Some(q) = req.uri().query() {
                loc.push('?');
                loc.push_str(q);
            }
            return Ok(redirect(StatusCode::PERMANENT_REDIRECT, &loc));
        }
    }
    if matches!(target.form, Form::Path(_)) && req.headers().contains_key("service-worker") {
        // A worker registered from a path-form page would control the whole shared origin.
        return Err(ProxyError::Forbidden(
            "service workers cannot be registered through /proxy/ URLs (they would control \
             the whole origin); use the sandbox's own host, <id>-<port>.<domain>"
                .into(),
        ));
    }
    let agent = target.port == AGENT_PORT;
    let gone = || {
        ProxyError::AgentUnavailable(
            target.id.clone(),
            format!("The sandbox {} was not found", target.id),
        )
    };
    let route = match state.service.previews().cached_preview_route(&target.id) {
        Some(route) => route,
        // Boxed: a store read, once per sandbox; the future of every request stays small.
        None => Box::pin(state.service.previews().preview_route(&target.id))
            .await
            .map_err(|e| ProxyError::Internal(e.to_string()))?,
    };
    let route = match route {
        Some(route) => route,
        None if agent => return Err(gone()),
        None => return Err(ProxyError::UnknownSandbox(target.id.clone())),
    };
    // Its ports are on its server's host: never forwarded from another one.
    if !state.service.is_mine(&route.server) {
        // Boxed, as above: a store read only for a sandbox of a server not known alive.
        let elsewhere = Box::pin(state.service.elsewhere(&route.server))
            .await
            .map_err(|e| ProxyError::Internal(e.to_string()))?;
        return Err(match elsewhere {
            Some(url) => ProxyError::Elsewhere {
                id: target.id.clone(),
                server: route.server.clone(),
                url,
            },
            None => ProxyError::HostDown {
                id: target.id.clone(),
                server: route.server.clone(),
            },
        });
    }
    let conn = req.extensions().get::<Arc<ConnInfo>>().cloned();
    let tls = conn.as_ref().is_some_and(|c| c.tls);
    // The agent checks its own access token (X-Access-Token) on every request.
    let token = (!route.public && !agent).then_some(route.token.as_str());
    match access::check(
        state,
        target,
        token,
        &route.team,
        req.uri(),
        req.headers(),
        tls,
    )
    .await?
    {
        access::Verdict::Pass => access::strip_credentials(req.headers_mut()),
        access::Verdict::Answer(resp) => return Ok(resp),
    }
    let route = if route.auto_resume && route.state != warren_api::SandboxState::Running {
        // Boxed, as above: only a paused sandbox's requests carry this future.
        Box::pin(state.service.previews().resume_route(&target.id))
            .await
            .map_err(|e| ProxyError::Internal(e.to_string()))?
            .unwrap_or(route)
    } else {
        route
    };
    let ip = match (route.state, route.ip) {
        (warren_api::SandboxState::Running, Some(ip)) => ip,
        _ if agent => return Err(gone()),
        (state, _) => return Err(ProxyError::NotRunning(target.id.clone(), state)),
    };
    let host = req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    // E2B's maskRequestHost: the app sees the host it expects (the client's stays in
    // X-Forwarded-Host). Never for the agent, which has no use for it.
    if let Some(mask) = route.request_host.as_deref().filter(|_| !agent) {
        let masked = mask.replace("${PORT}", &target.port.to_string());
        if let Ok(v) = HeaderValue::from_str(&masked) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    let fwd = forward::Forwarding {
        conn: conn.as_deref(),
        host: host.as_ref(),
    };
    let addr = SocketAddr::from((ip, target.port));
    let mut resp = forward::forward(req, addr, &target.path_and_query, &fwd)
        .await
        .map_err(|e| match e {
            forward::ForwardError::Connect if agent => ProxyError::AgentUnavailable(
                target.id.clone(),
                format!(
                    "The sandbox {} is running but its agent port is not open",
                    target.id
                ),
            ),
            forward::ForwardError::Connect => ProxyError::NotListening {
                id: target.id.clone(),
                port: target.port,
            },
            forward::ForwardError::Exchange(detail) => ProxyError::BadGateway {
                id: target.id.clone(),
                port: target.port,
                detail,
            },
        })?;
    let prefix = match &target.form {
        Form::Path(prefix) => Some(prefix.as_str()),
        Form::Host => None,
    };
    let host = host.as_ref().and_then(|h| h.to_str().ok());
    rewrite_response(&mut resp, prefix, host);
    if agent && connect_end::is_connect_stream(resp.headers()) {
        let (parts, body) = resp.into_parts();
        let body = connect_end::guard(body, state.service.clone(), target.id.clone());
        resp = Response::from_parts(parts, body);
    }
    Ok(resp)
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut resp = status.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Response headers a page under the path form could use against the whole origin it shares
/// with the API, the web console and every other sandbox (a service worker for `/`, wiping or
/// pinning the origin's state; a `Cross-Origin-Opener-Policy` matching the console's, which
/// would keep a handle on a console window the page opens, and with it the console's key).
const ORIGIN_WIDE: [&str; 6] = [
    "service-worker-allowed",
    "clear-site-data",
    "strict-transport-security",
    "alt-svc",
    "cross-origin-opener-policy",
    "cross-origin-embedder-policy",
];

/// What every proxied response loses or changes: cookies scoped to the app's own host (no
/// `Domain`, none of Warren's names), and under the path form, paths under the prefix and no
/// origin-wide headers.
fn rewrite_response(resp: &mut Response, prefix: Option<&str>, host: Option<&str>) {
    let headers = resp.headers_mut();
    if let Some(prefix) = prefix {
        for name in ORIGIN_WIDE {
            headers.remove(name);
        }
        if let Some(loc) = headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| rewrite::location(v, prefix, host))
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            headers.insert(header::LOCATION, loc);
        }
    }
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| {
            let Ok(text) = v.to_str() else {
                return Some(v.clone());
            };
            if rewrite::forbidden_cookie(text) {
                return None;
            }
            let text = rewrite::without_domain(text).unwrap_or_else(|| text.to_owned());
            let text = match prefix {
                Some(p) => rewrite::set_cookie(&text, p).unwrap_or(text),
                None => text,
            };
            HeaderValue::from_str(&text).ok()
        })
        .collect();
    headers.remove(header::SET_COOKIE);
    for c in cookies {
        headers.append(header::SET_COOKIE, c);
    }
}
