//! E2B's signed file URLs (the SDKs' `download_url`/`upload_url`): a `/files` request without
//! the access token passes when its `signature` is
//! `v1_` + unpadded base64 of sha256(`path:operation:username:token[:expiration]`), with
//! operation `read` (GET) or `write` (POST) and an `signature_expiration` (Unix seconds) not
//! yet past.
use base64::Engine;
use hyper::Method;
use sha2::{Digest, Sha256};

use super::files_http::query_param;

/// Equal, in time independent of where the first difference is.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the `/files` request's query carries a valid signature made with `token`; if not,
/// envd's message for the 401 (an expiry is told only of a signature that is otherwise right).
pub fn check(
    token: &str,
    method: &Method,
    query: Option<&str>,
    now_unix: u64,
) -> Result<(), &'static str> {
    let operation = match *method {
        Method::GET => "read",
        Method::POST => "write",
        _ => return Err("invalid signature"),
    };
    let Some(signature) = query_param(query, "signature") else {
        return Err("missing signature query parameter");
    };
    let path = query_param(query, "path").unwrap_or_default();
    let user = query_param(query, "username").unwrap_or_default();
    let mut raw = format!("{path}:{operation}:{user}:{token}");
    let mut expires = None;
    if let Some(expiration) = query_param(query, "signature_expiration") {
        // envd signs the number as given (a negative one, already past, included).
        let at = expiration
            .parse::<i64>()
            .map_err(|_| "invalid signature expiration")?;
        raw.push_str(&format!(":{at}"));
        expires = Some(at);
    }
    let digest = Sha256::digest(raw.as_bytes());
    let want = format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    );
    if !same(signature.as_bytes(), want.as_bytes()) {
        return Err("invalid signature");
    }
    match expires {
        Some(at) if at < i64::try_from(now_unix).unwrap_or(i64::MAX) => {
            Err("signature is already expired")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
fn valid(token: &str, method: &Method, query: Option<&str>, now_unix: u64) -> bool {
    check(token, method, query, now_unix).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from e2b 2.63's `get_signature`.
    #[test]
    fn signatures_of_the_sdk_pass_and_others_do_not() {
        let read = "path=%2Fhome%2Fuser%2Fa%20b.txt&signature=v1_oBWcB6Y7ynINkNCbWfy%2B5Q9m6wAVgyfQl9kI%2BlaMHAA";
        assert!(valid("tok123", &Method::GET, Some(read), 0));
        assert!(!valid("tok124", &Method::GET, Some(read), 0));
        assert!(!valid("tok123", &Method::POST, Some(read), 0));
        let write =
            "path=/tmp/x&username=user&signature=v1_YX%2BZcDzYNqeJ1GodmZw6XB/Kl7YQ4koAYhzx/E11LLg";
        assert!(valid("tok123", &Method::POST, Some(write), 0));
        assert!(!valid(
            "tok123",
            &Method::POST,
            Some(&write.replace("user", "root")),
            0
        ));
        let expiring = "path=/tmp/x&username=user&signature=v1_FZOtSd5iJ34BT1eFaY/cLi0f6WcGedZBUOVUALTdPOE&signature_expiration=2000000000";
        assert!(valid(
            "tok123",
            &Method::POST,
            Some(expiring),
            1_999_999_999
        ));
        assert!(!valid(
            "tok123",
            &Method::POST,
            Some(expiring),
            2_000_000_001
        ));
        assert_eq!(
            check("tok123", &Method::POST, Some(expiring), 2_000_000_001),
            Err("signature is already expired")
        );
        assert_eq!(
            check("tok124", &Method::POST, Some(expiring), 2_000_000_001),
            Err("invalid signature")
        );
        assert!(!valid("tok123", &Method::GET, Some("path=/tmp/x"), 0));
        assert!(!valid("tok123", &Method::GET, None, 0));
    }
}
