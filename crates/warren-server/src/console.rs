//! The web console at `/ui`: static files embedded in the binary (`crates/warren-server/ui`),
//! plain ES modules that call `/v1` with the key the user signs in with. Every answer carries
//! a strict Content-Security-Policy: scripts and styles only from this origin (styles also
//! with the page's nonce, which the terminal's own `<style>` elements carry), no framing.
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;

#[derive(rust_embed::Embed)]
#[folder = "ui/"]
struct Assets;

/// Where the page's nonce goes in `index.html`.
const NONCE_SLOT: &str = "{{STYLE_NONCE}}";

/// `/ui` and everything under it.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(root))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/{*path}", get(asset))
}

/// The server's root: a browser is shown the console; an API client gets the usual 404.
async fn root(request: HeaderMap) -> Response {
    let browser = request
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if browser {
        Redirect::temporary("/ui/").into_response()
    } else {
        crate::error::not_found().await.into_response()
    }
}

/// The console's page: a fresh style nonce each time.
async fn index() -> Response {
    let Some(page) = Assets::get("index.html") else {
        return ApiError::Internal("the console's index.html is not in this build".into())
            .into_response();
    };
    let nonce = data_encoding::BASE64.encode(&rand::random::<[u8; 16]>());
    let html = String::from_utf8_lossy(&page.data).replace(NONCE_SLOT, &nonce);
    let mut headers = guarded(&nonce);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (headers, html).into_response()
}

/// A module, style sheet or image of the console, revalidated by its hash.
async fn asset(Path(path): Path<String>, request: HeaderMap) -> Response {
    // The page is served only with its nonce filled in.
    let file = (path != "index.html").then(|| Assets::get(&path)).flatten();
    let Some(file) = file else {
        return ApiError::NotFound(format!("the console has no file {path:?}")).into_response();
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let mut headers = guarded("");
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    if let Ok(v) = HeaderValue::from_str(file.metadata.mimetype()) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    (headers, file.data.into_owned()).into_response()
}

/// The policy and the other guard headers of every console answer (`nonce` empty: none).
fn guarded(nonce: &str) -> HeaderMap {
    let style = if nonce.is_empty() {
        "style-src 'self'".to_owned()
    } else {
        format!("style-src 'self' 'nonce-{nonce}'")
    };
    // connect-src 'self' covers the same host's ws:/wss: (the terminal's WebSocket).
    let policy = format!(
        "default-src 'none'; script-src 'self'; {style}; connect-src 'self'; img-src 'self' data:; \
         font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&policy) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Windows the console opens (preview links) get no handle back to it.
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_a_nonce_slot_and_no_inline_script() {
        let page = Assets::get("index.html").expect("index.html embedded");
        let html = String::from_utf8_lossy(&page.data);
        assert!(html.contains(NONCE_SLOT), "{html}");
        // Every script is a file of this origin.
        for tag in html.split("<script").skip(1) {
            let (open, rest) = tag.split_once('>').expect("a closed tag");
            assert!(open.contains("src=\"/ui/"), "{open}");
            assert!(rest.trim_start().starts_with("</script>"), "{rest}");
        }
    }

    #[test]
    fn the_policy_allows_only_this_origin() {
        let h = guarded("abc");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("style-src 'self' 'nonce-abc';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
    }
}
