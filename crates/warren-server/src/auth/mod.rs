//! API keys: made at first start or by `/v1/keys`, stored only as hashes, checked on every
//! `/v1` and E2B route ([`gate`]), each key in one team with one scope.
mod audit_log;
pub(crate) mod gate;
mod known;

use std::path::Path;

use sha2::{Digest, Sha256};

pub use audit_log::AuditLog;
pub(crate) use gate::{guard_e2b, AuditTarget};
pub use gate::{require_key, Caller};
pub use known::{Known, KnownKeys};

/// How every API key begins (so the proxy can tell one apart from an app's own bearer).
pub const KEY_PREFIX: &str = "wk_";
/// How the same key begins in E2B's spelling, which E2B's SDKs insist on (`e2b_` + hex).
pub const E2B_KEY_PREFIX: &str = "e2b_";
/// Bytes of randomness in a key.
const KEY_BYTES: usize = 20;

/// A new random key secret (`wk_` + 32 base32 characters, 160 bits).
pub fn generate_key() -> String {
    let bytes: [u8; KEY_BYTES] = rand::random();
    warren_spelling(&bytes)
}

fn warren_spelling(bytes: &[u8]) -> String {
    let text = data_encoding::BASE32_NOPAD.encode(bytes);
    format!("{KEY_PREFIX}{}", text.to_ascii_lowercase())
}

/// The same key in E2B's spelling (`e2b_` + 40 hex digits: the key's 20 bytes), which every
/// route accepts as it accepts the `wk_` one. `None` for text that is not a Warren key.
pub fn e2b_spelling(secret: &str) -> Option<String> {
    let text = secret.strip_prefix(KEY_PREFIX)?.to_ascii_uppercase();
    let bytes = data_encoding::BASE32_NOPAD.decode(text.as_bytes()).ok()?;
    (bytes.len() == KEY_BYTES).then(|| format!("{E2B_KEY_PREFIX}{}", hex::encode(bytes)))
}

/// A key's one stored form: an E2B spelling of a Warren key becomes its `wk_` spelling, so both
/// name the same stored hash; anything else is taken as it is.
fn canonical(secret: &str) -> std::borrow::Cow<'_, str> {
    let bytes = secret
        .strip_prefix(E2B_KEY_PREFIX)
        .filter(|h| h.len() == 2 * KEY_BYTES && !h.bytes().any(|b| b.is_ascii_uppercase()))
        .and_then(|h| hex::decode(h).ok());
    match bytes {
        Some(b) => warren_spelling(&b).into(),
        None => secret.into(),
    }
}

/// What is stored of a key (in either spelling).
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(canonical(secret).as_bytes()))
}

/// A key's public id: the start of its hash.
pub fn key_id(secret: &str) -> String {
    hash_key(secret)[..16].to_owned()
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
    let key = warren_api::ApiKey {
        id: key_id(&secret),
        name: "admin".into(),
        team: warren_api::DEFAULT_TEAM.into(),
        scope: warren_api::Scope::Admin,
        created_at: chrono::Utc::now(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        rate_limit: None,
    };
    store.insert_api_key(&key, &hash_key(&secret)).await?;
    Ok(Some(secret))
}

pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
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

/// The subprotocol a WebSocket client names beside its key (`warren.key.<key>`): the one the
/// server answers with, as a browser fails a handshake that names none of those it offered.
pub const TERMINAL_PROTOCOL: &str = "warren.terminal";

/// The key a WebSocket handshake offers as subprotocol `warren.key.<key>`: browsers cannot set
/// `Authorization` on a WebSocket, and a subprotocol, unlike a query, stays out of URLs and
/// logs (Kubernetes' API server takes a bearer token the same way).
pub fn websocket_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    let upgrade = headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return None;
    }
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("warren.key."))
        .filter(|k| !k.is_empty())
}

/// A client's `Idempotency-Key` as stored: prefixed with the start of the hash of the API key
/// that sent it, so keys of different API keys never meet.
pub fn owned_key(headers: &axum::http::HeaderMap, key: &str) -> String {
    let owner = bearer(headers).map(hash_key).unwrap_or_default();
    format!("{}:{key}", owner.get(..16).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_a_key_are_one_key() {
        let key = generate_key();
        let e2b = e2b_spelling(&key).expect("a Warren key has an E2B spelling");
        assert!(e2b.starts_with("e2b_") && e2b.len() == 44, "{e2b}");
        assert!(e2b[4..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(hash_key(&e2b), hash_key(&key));
        assert_eq!(key_id(&e2b), key_id(&key));
        // Other text hashes as it is: an upper-case or short spelling is not the key.
        assert_ne!(hash_key(&e2b.to_ascii_uppercase()), hash_key(&key));
        assert_ne!(hash_key(&e2b[..40]), hash_key(&key));
        assert_eq!(e2b_spelling("wk_short"), None);
        assert_eq!(e2b_spelling(&e2b), None);
    }

    #[test]
    fn a_websocket_offers_its_key_as_a_subprotocol() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            "warren.terminal, warren.key.wk_abc"
                .parse()
                .expect("header"),
        );
        // Only on an upgrade.
        assert_eq!(websocket_key(&h), None);
        h.insert(
            axum::http::header::UPGRADE,
            "WebSocket".parse().expect("header"),
        );
        assert_eq!(websocket_key(&h), Some("wk_abc"));
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            "warren.terminal, warren.key.".parse().expect("header"),
        );
        assert_eq!(websocket_key(&h), None);
    }

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
