//! Which sandbox port a request is for, by the three ways a request can name one: its host
//! (`<id>-<port>.<domain>` or `<port>-<id>.<domain>`), E2B's `E2b-Sandbox-Id`/`-Port` headers,
//! or its path (`/proxy/<id>/<port>/<rest>`).
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, Uri};
use warren_api::SandboxId;

/// Header E2B's SDKs name the sandbox with.
pub const E2B_SANDBOX_ID: &str = "e2b-sandbox-id";
/// Header E2B's SDKs name the port with.
pub const E2B_SANDBOX_PORT: &str = "e2b-sandbox-port";

/// How the request named its target, which decides what gets rewritten on the way back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// By host or headers: the app sees its own paths.
    Host,
    /// By path: the app's paths live under this prefix (`/proxy/<id>/<port>`).
    Path(String),
}

/// A sandbox port a request is for, and the path to ask it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The sandbox.
    pub id: SandboxId,
    /// Its port.
    pub port: u16,
    /// How it was named.
    pub form: Form,
    /// Path and query to send upstream.
    pub path_and_query: PathAndQuery,
}

/// The host a request was sent to, without a port: `Host`, or the URI's authority (HTTP/2).
pub fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    let raw = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))?;
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

fn port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|p| *p != 0)
}

/// `<id>-<port>` or `<port>-<id>`: the all-digits side is the port.
fn id_and_port(label: &str) -> Option<(SandboxId, u16)> {
    let (a, b) = label.split_once('-')?;
    if let Some(p) = port(b) {
        return Some((a.parse().ok()?, p));
    }
    Some((b.parse().ok()?, port(a)?))
}

fn path_and_query(uri: &Uri) -> PathAndQuery {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// The target a request names, if any. `domain` is the preview domain (lowercase).
pub fn find(headers: &HeaderMap, uri: &Uri, domain: &str) -> Option<Target> {
    if let Some(host) = request_host(headers, uri) {
        let host = host.trim_end_matches('.');
        if host.len() > domain.len() + 1 {
            let (label, rest) = host.split_at(host.len() - domain.len() - 1);
            if rest[1..].eq_ignore_ascii_case(domain) && rest.starts_with('.') {
                if let Some((id, port)) = id_and_port(&label.to_ascii_lowercase()) {
                    return Some(Target {
                        id,
                        port,
                        form: Form::Host,
                        path_and_query: path_and_query(uri),
                    });
                }
            }
        }
    }
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let (Some(id), Some(p)) = (header(E2B_SANDBOX_ID), header(E2B_SANDBOX_PORT)) {
        if let (Ok(id), Some(p)) = (id.trim().parse(), port(p.trim())) {
            return Some(Target {
                id,
                port: p,
                form: Form::Host,
                path_and_query: path_and_query(uri),
            });
        }
    }
    let rest = uri.path().strip_prefix("/proxy/")?;
    let (id, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let (p, rest) = match rest.split_once('/') {
        Some((p, rest)) => (p, Some(rest)),
        None => (rest, None),
    };
    let (id, p) = (id.parse().ok()?, port(p)?);
    let prefix = format!("/proxy/{id}/{p}");
    let mut upstream = match rest {
        Some(rest) => format!("/{rest}"),
        None => "/".to_owned(),
    };
    if let Some(q) = uri.query() {
        upstream.push('?');
        upstream.push_str(q);
    }
    Some(Target {
        id,
        port: p,
        form: Form::Path(prefix),
        // Pieces of a path and query that parsed, put back together: they parse again.
        path_and_query: PathAndQuery::try_from(upstream).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const ID: &str = "abcdefghijklmnop";

    fn host(h: &str, path: &str) -> Option<Target> {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_str(h).expect("header"));
        find(&headers, &path.parse().expect("uri"), "localhost")
    }

    #[test]
    fn host_forms_both_orders_with_and_without_port() {
        for h in [
            format!("{ID}-8000.localhost"),
            format!("8000-{ID}.localhost:8080"),
            format!("{}-8000.LOCALHOST.", ID.to_uppercase()),
        ] {
            let t = host(&h, "/a?b=1").expect(&h);
            assert_eq!((t.id.as_str(), t.port), (ID, 8000));
            assert_eq!(t.form, Form::Host);
            assert_eq!(t.path_and_query, "/a?b=1");
        }
        for h in [
            "localhost:8080".to_owned(),
            format!("{ID}-8000.example.com"),
            format!("{ID}-0.localhost"),
            format!("{ID}-99999.localhost"),
            format!("{ID}.localhost"),
            format!("a.{ID}-8000.localhost"),
            "short-80.localhost".to_owned(),
        ] {
            assert_eq!(host(&h, "/"), None, "{h}");
        }
    }

    #[test]
    fn e2b_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(E2B_SANDBOX_ID, HeaderValue::from_static(ID));
        headers.insert(E2B_SANDBOX_PORT, HeaderValue::from_static("49983"));
        let t = find(
            &headers,
            &"/files?path=x".parse().expect("uri"),
            "localhost",
        )
        .expect("t");
        assert_eq!((t.id.as_str(), t.port), (ID, 49983));
        assert_eq!(t.path_and_query, "/files?path=x");
    }

    #[test]
    fn path_form() {
        let t = host("127.0.0.1:8080", &format!("/proxy/{ID}/3000/x/y?q=1")).expect("t");
        assert_eq!(t.port, 3000);
        assert_eq!(t.form, Form::Path(format!("/proxy/{ID}/3000")));
        assert_eq!(t.path_and_query, "/x/y?q=1");
        let t = host("127.0.0.1:8080", &format!("/proxy/{ID}/3000")).expect("t");
        assert_eq!(t.path_and_query, "/");
        assert_eq!(host("h", "/proxy/nope/3000/"), None);
        assert_eq!(host("h", &format!("/proxy/{ID}/http/")), None);
        assert_eq!(host("h", "/v1/sandboxes"), None);
    }
}
