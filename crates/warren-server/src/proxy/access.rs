//! Who may reach a private port: the holder of the sandbox's traffic token (as a header, or a
//! cookie set from a one-time `?warren_token=`), or of an API key. Credentials meant for
//! Warren are taken off the request before it goes to the app.
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use warren_api::SandboxId;

use super::page::ProxyError;
use super::target::{Form, Target};
use crate::AppState;

/// Header carrying a sandbox's traffic token.
pub const TOKEN_HEADER: &str = "x-warren-traffic-token";
/// The same token under the name E2B's SDKs send it.
pub const E2B_TOKEN_HEADER: &str = "e2b-traffic-access-token";
const TOKEN: HeaderName = HeaderName::from_static(TOKEN_HEADER);
const E2B_TOKEN: HeaderName = HeaderName::from_static(E2B_TOKEN_HEADER);
/// Query parameter that trades a traffic token for a cookie.
pub const TOKEN_QUERY: &str = "warren_token";

/// The cookie holding a sandbox's token (named per sandbox, as the path form puts many
/// sandboxes on one host).
pub fn cookie_name(id: &SandboxId) -> String {
    format!("warren_token_{id}")
}

/// What to do with a request.
pub enum Verdict {
    /// Pass it on (with Warren's credentials removed).
    Pass,
    /// Answer with this (the cookie-setting redirect).
    Answer(Response),
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Every value of cookie `name` (an app may have planted another under the same name).
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn query_token(uri: &Uri) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == TOKEN_QUERY)
        .map(|(_, v)| v.into_owned())
}

/// The URL the browser used, without `warren_token`.
fn clean_location(uri: &Uri) -> String {
    let rest: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k != TOKEN_QUERY)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    // One leading slash however many came (`//evil.example` would leave the site).
    let mut loc = format!("/{}", uri.path().trim_start_matches(['/', '\\']));
    if !rest.is_empty() {
        loc.push('?');
        loc.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .extend_pairs(rest)
                .finish(),
        );
    }
    loc
}

/// Checks a request for `target` against the sandbox's `token` (`None`: a public sandbox).
/// Passing requests still carry Warren's credentials: [`strip_credentials`] takes them off.
pub async fn check(
    state: &AppState,
    target: &Target,
    token: Option<&str>,
    team: &str,
    uri: &Uri,
    headers: &HeaderMap,
    tls: bool,
) -> Result<Verdict, ProxyError> {
    let id = &target.id;
    if let Some(given) = query_token(uri) {
        let mut resp = StatusCode::FOUND.into_response();
        let h = resp.headers_mut();
        if let Some(token) = token {
            if !same(&given, token) {
                return Err(ProxyError::WrongToken(id.clone()));
            }
            let path = match &target.form {
                Form::Host => "/".to_owned(),
                Form::Path(_) => format!("/proxy/{id}/"),
            };
            let secure = if tls { "; Secure" } else { "" };
            let cookie = format!(
                "{}={token}; Path={path}; HttpOnly; SameSite=Lax{secure}",
                cookie_name(id)
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                h.insert(header::SET_COOKIE, v);
            }
        }
        // A public sandbox needs no token, but the URL still sheds it.
        if let Ok(v) = HeaderValue::from_str(&clean_location(uri)) {
            h.insert(header::LOCATION, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(Verdict::Answer(resp));
    }
    let Some(token) = token else {
        return Ok(Verdict::Pass);
    };
    if let Some(given) = headers.get(TOKEN).or_else(|| headers.get(E2B_TOKEN)) {
        return if same(given.to_str().unwrap_or(""), token) {
            Ok(Verdict::Pass)
        } else {
            Err(ProxyError::WrongToken(id.clone()))
        };
    }
    let mut offered = false;
    let name = cookie_name(id);
    for given in cookies(headers, &name) {
        offered = true;
        if same(given, token) {
            return Ok(Verdict::Pass);
        }
    }
    if let Some(key) = crate::auth::bearer(headers) {
        offered = true;
        // Boxed: the common requests never get here, and should not carry its future.
        let found = Box::pin(state.known_keys.find(&state.service, key))
            .await
            .map_err(|e| ProxyError::Internal(e.to_string()))?;
        // Only a key of the sandbox's own team opens it.
        if found.is_some_and(|k| k.caller.team == team) {
            return Ok(Verdict::Pass);
        }
    }
    if offered {
        Err(ProxyError::WrongToken(id.clone()))
    } else {
        Err(ProxyError::NoCredential {
            id: id.clone(),
            port: target.port,
        })
    }
}

/// `X-API-KEY`: how E2B's SDKs send an API key (Warren's E2B routes take it too).
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Takes every Warren credential off a request before the app sees it, whether or not it was
/// needed (a public sandbox, another sandbox's cookie): the token headers, `warren_token_*`
/// cookies, and every `Authorization`, `X-API-KEY` or `Sec-WebSocket-Protocol` value that
/// carries a Warren API key in any form (`Bearer wk_…`, `bearer wk_…`, a bare `wk_…`, the
/// console's subprotocol `warren.key.wk_…`). The app's own credentials (`Basic …`, a bearer of
/// its own) pass.
pub fn strip_credentials(headers: &mut HeaderMap) {
    // Most requests carry none: one pass over their few names costs less than five lookups.
    let any = headers.keys().any(|k| {
        k == TOKEN
            || k == E2B_TOKEN
            || k == header::AUTHORIZATION
            || k == X_API_KEY
            || k == header::COOKIE
            || k == header::SEC_WEBSOCKET_PROTOCOL
    });
    if !any {
        return;
    }
    headers.remove(TOKEN);
    headers.remove(E2B_TOKEN);
    for name in [
        header::AUTHORIZATION,
        X_API_KEY,
        header::SEC_WEBSOCKET_PROTOCOL,
    ] {
        strip_values(headers, name, carries_key);
    }
    strip_cookies(headers, |name| name.starts_with("warren_token_"));
}

/// Whether a header value holds a Warren API key (`wk_` or E2B's `e2b_` spelling, in any case,
/// at the start of a word), however it is dressed: with or without a scheme, any whitespace,
/// quoted, as `key=…`.
fn carries_key(value: &HeaderValue) -> bool {
    let v = value.as_bytes();
    [crate::auth::KEY_PREFIX, crate::auth::E2B_KEY_PREFIX]
        .iter()
        .map(|p| p.as_bytes())
        .any(|prefix| {
            (0..v.len()).any(|i| {
                let starts_word = i == 0 || !v[i - 1].is_ascii_alphanumeric();
                starts_word
                    && v.get(i..i + prefix.len())
                        .is_some_and(|w| w.eq_ignore_ascii_case(prefix))
            })
        })
}

/// Removes the values of header `name` that `drop` picks, keeping the others in order.
fn strip_values(headers: &mut HeaderMap, name: HeaderName, drop: impl Fn(&HeaderValue) -> bool) {
    if !headers.get_all(&name).iter().any(&drop) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(&name)
        .iter()
        .filter(|v| !drop(v))
        .cloned()
        .collect();
    headers.remove(&name);
    for v in kept {
        headers.append(name.clone(), v);
    }
}

/// Removes the cookies whose name `drop` picks from the `Cookie` headers, dropping headers
/// left empty.
fn strip_cookies(headers: &mut HeaderMap, drop: impl Fn(&str) -> bool) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !drop(c.split_once('=').map_or(*c, |(k, _)| k)))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_and_credentials_stripped() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; warren_token_x=T"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("b=2; warren_token_x=U"),
        );
        assert_eq!(
            cookies(&h, "warren_token_x").collect::<Vec<_>>(),
            ["T", "U"]
        );
        h.insert(TOKEN_HEADER, HeaderValue::from_static("x"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wk_abc"),
        );
        strip_credentials(&mut h);
        assert_eq!(
            h.get(header::COOKIE).and_then(|v| v.to_str().ok()),
            Some("a=1; b=2")
        );
        assert!(h.get(TOKEN_HEADER).is_none() && h.get(header::AUTHORIZATION).is_none());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer app-token"),
        );
        strip_credentials(&mut h);
        assert!(
            h.get(header::AUTHORIZATION).is_some(),
            "the app's own bearer stays"
        );
        strip_cookies(&mut h, |_| true);
        assert!(h.get(header::COOKIE).is_none());
    }

    #[test]
    fn api_keys_go_in_every_form_and_the_apps_credentials_stay() {
        for (name, value) in [
            ("authorization", "Bearer wk_abc"),
            ("authorization", "bearer wk_abc"),
            ("authorization", "BEARER \t wk_abc"),
            ("authorization", "wk_abc"),
            ("authorization", "  WK_abc"),
            ("authorization", "Token token=\"wk_abc\""),
            ("x-api-key", "wk_abc"),
            ("X-Api-Key", " wk_abc "),
            ("x-api-key", "e2b_0123abcd"),
            ("authorization", "Bearer E2B_0123abcd"),
            (
                "sec-websocket-protocol",
                "warren.terminal, warren.key.wk_abc",
            ),
        ] {
            let mut h = HeaderMap::new();
            h.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
            strip_credentials(&mut h);
            assert!(h.is_empty(), "{name}: {value} reached the app");
        }
        let mut h = HeaderMap::new();
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wk_abc"),
        );
        h.append(X_API_KEY, HeaderValue::from_static("the-apps-own"));
        h.append(X_API_KEY, HeaderValue::from_static("wk_abc"));
        h.insert("x-other", HeaderValue::from_static("hawk_abc"));
        strip_credentials(&mut h);
        let values = |n: &str| -> Vec<&str> {
            h.get_all(n)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        };
        assert_eq!(values("authorization"), ["Basic dXNlcjpwYXNz"]);
        assert_eq!(values("x-api-key"), ["the-apps-own"]);
        assert_eq!(values("x-other"), ["hawk_abc"]);
    }

    #[test]
    fn token_leaves_the_url() {
        let uri: Uri = "/p/x?a=1&warren_token=T&b=two%20words"
            .parse()
            .expect("uri");
        assert_eq!(query_token(&uri).as_deref(), Some("T"));
        assert_eq!(clean_location(&uri), "/p/x?a=1&b=two+words");
        let uri: Uri = "/?warren_token=T".parse().expect("uri");
        assert_eq!(clean_location(&uri), "/");
        let uri: Uri = "//evil.example/x?warren_token=T".parse().expect("uri");
        assert_eq!(clean_location(&uri), "/evil.example/x");
    }
}
