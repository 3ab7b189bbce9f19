//! API keys: made at first start, stored only as hashes, checked on every `/v1` route.
use std::path::Path;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::AppState;

/// How every API key begins (so the proxy can tell one apart from an app's own bearer).
pub const KEY_PREFIX: &str = "wk_";

/// A new random key secret (`wk_` + 32 base32 characters, 160 bits).
pub fn generate_key() -> String {
    let bytes: [u8; 20] = rand::random();
    format!(
        "{KEY_PREFIX}{}",
        data_encoding::BASE32_NOPAD
            .encode(&bytes)
            .to_ascii_lowercase()
    )
}

/// What is stored of a key.
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Creates the admin key if the store has none: stores its hash, writes it to
/// `<data>/admin.key` (0600) and returns it so the caller prints it once.
pub async fn ensure_admin_key(
    store: &dyn warren_store::Store,
    data_dir: &Path,
) -> anyhow::Result<Option<String>> {
    if store.count_api_keys().await? > 0 {
        return Ok(None);
    }
    let secret = generate_key();
    let path = data_dir.join("admin.key");
    write_private(&path, &format!("{secret}\n"))?;
    store
        .insert_api_key(&hash_key(&secret)[..16], "admin", &hash_key(&secret))
        .await?;
    Ok(Some(secret))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// The secret of an `Authorization: Bearer <secret>` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110 11.1).
            let (scheme, key) = v.trim_start().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        })
}

/// Middleware: requires `Authorization: Bearer <key>` naming a stored key.
pub async fn require_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let secret = bearer(req.headers()).ok_or(ApiError::Unauthorized)?;
    if !key_is_valid(&state, secret).await? {
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(req).await)
}

/// Whether `secret` is one of the server's API keys (remembered once seen, so a busy client
/// costs no store reads).
pub async fn key_is_valid(state: &AppState, secret: &str) -> Result<bool, ApiError> {
    let hash = hash_key(secret);
    if state.known_keys.read().await.contains(&hash) {
        return Ok(true);
    }
    if !state.service.store().api_key_exists(&hash).await? {
        return Ok(false);
    }
    state.known_keys.write().await.insert(hash);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let mut h = axum::http::HeaderMap::new();
        for (value, want) in [
            ("Bearer wk_a", Some("wk_a")),
            ("bearer wk_a", Some("wk_a")),
            ("BEARER  wk_a ", Some("wk_a")),
            ("Basic wk_a", None),
            ("wk_a", None),
        ] {
            h.insert(
                axum::http::header::AUTHORIZATION,
                value.parse().expect("header"),
            );
            assert_eq!(bearer(&h), want, "{value}");
        }
    }
}
