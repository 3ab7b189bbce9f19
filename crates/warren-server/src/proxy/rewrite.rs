//! What the path form (`/proxy/<id>/<port>/...`) rewrites in responses, so an app that thinks
//! it lives at `/` keeps working under the prefix (in an iframe of the same origin, say):
//! redirects and cookie paths.

/// `Location` under `prefix`: an absolute path gets the prefix; an absolute URL to the host
/// the browser used gets it too; anything else (relative, other hosts) is left alone.
pub fn location(value: &str, prefix: &str, request_host: Option<&str>) -> Option<String> {
    if value.starts_with('/') && !value.starts_with("//") {
        return (!under(value, prefix)).then(|| format!("{prefix}{value}"));
    }
    let host = request_host?;
    for scheme in ["http://", "https://"] {
        let Some(rest) = value.strip_prefix(scheme) else {
            continue;
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if !authority.eq_ignore_ascii_case(host) {
            return None;
        }
        let path = if path.is_empty() { "/" } else { path };
        if under(path, prefix) {
            return None;
        }
        return Some(format!("{scheme}{authority}{prefix}{path}"));
    }
    None
}

fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|r| r.is_empty() || r.starts_with('/') || r.starts_with('?'))
}

/// A `Set-Cookie` an app may not send: one naming Warren's own token cookies (planting one
/// would lock its owner out). Its `Domain` is dropped by [`without_domain`] besides.
pub fn forbidden_cookie(value: &str) -> bool {
    value.trim_start().starts_with("warren_token_")
}

/// A `Set-Cookie` without its `Domain` attribute, so an app's cookie stays on its own preview
/// host instead of reaching every sandbox (and every other site) under the domain.
pub fn without_domain(value: &str) -> Option<String> {
    let mut dropped = false;
    let kept: Vec<&str> = value
        .split(';')
        .enumerate()
        .filter(|(i, part)| {
            let attr = *i > 0
                && part
                    .trim_start()
                    .get(..7)
                    .is_some_and(|k| k.eq_ignore_ascii_case("domain="));
            dropped |= attr;
            !attr
        })
        .map(|(_, p)| p)
        .collect();
    dropped.then(|| kept.join(";"))
}

/// A `Set-Cookie` whose `Path` attribute is moved under `prefix` (a cookie without one
/// defaults to the request's directory, which is under the prefix already).
pub fn set_cookie(value: &str, prefix: &str) -> Option<String> {
    let mut changed = false;
    let parts: Vec<String> = value
        .split(';')
        .enumerate()
        .map(|(i, part)| {
            let trimmed = part.trim_start();
            let is_path = i > 0
                && trimmed
                    .get(..5)
                    .is_some_and(|k| k.eq_ignore_ascii_case("path="));
            if !is_path {
                return part.to_owned();
            }
            let path = trimmed[5..].trim();
            if under(path, prefix) {
                return part.to_owned();
            }
            changed = true;
            let path = if path.starts_with('/') { path } else { "/" };
            format!(" Path={prefix}{path}")
        })
        .collect();
    changed.then(|| parts.join(";"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/proxy/abcdefghijklmnop/8000";

    #[test]
    fn locations() {
        assert_eq!(location("/target", P, None), Some(format!("{P}/target")));
        assert_eq!(location(&format!("{P}/x"), P, None), None);
        assert_eq!(location("next", P, None), None);
        assert_eq!(location("//cdn.example/x", P, None), None);
        assert_eq!(
            location(
                "http://127.0.0.1:8080/target?a=1",
                P,
                Some("127.0.0.1:8080")
            ),
            Some(format!("http://127.0.0.1:8080{P}/target?a=1"))
        );
        assert_eq!(
            location("https://HOST", P, Some("host")),
            Some(format!("https://HOST{P}/"))
        );
        assert_eq!(location("http://elsewhere/x", P, Some("host")), None);
    }

    #[test]
    fn cookie_domains_and_warren_names() {
        assert_eq!(
            without_domain("a=1; Domain=localhost; Path=/"),
            Some("a=1; Path=/".to_owned())
        );
        assert_eq!(without_domain("a=1; Path=/"), None);
        assert!(forbidden_cookie("warren_token_abc=x; Path=/"));
        assert!(!forbidden_cookie("app=warren_token_abc"));
    }

    #[test]
    fn cookies() {
        assert_eq!(
            set_cookie("a=1; Path=/; HttpOnly", P),
            Some(format!("a=1; Path={P}/; HttpOnly"))
        );
        assert_eq!(
            set_cookie("a=1; path=/sub", P),
            Some(format!("a=1; Path={P}/sub"))
        );
        assert_eq!(set_cookie("b=2", P), None);
        assert_eq!(set_cookie(&format!("c=3; Path={P}/x"), P), None);
        // A value that merely looks like an attribute is not one.
        assert_eq!(set_cookie("path=/x", P), None);
    }
}
