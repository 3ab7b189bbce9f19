//! Docker's variable substitution in Dockerfile words (ENV values, WORKDIR, COPY, USER):
//! `$NAME`, `${NAME}`, `${NAME:-default}` and `${NAME:+alternative}`, from the environment
//! the build has so far; an unset name is empty, as in Docker.

/// `word` with the variables of `env` (`KEY=value` entries) substituted.
pub fn expand(word: &str, env: &[String]) -> String {
    let lookup = |name: &str| {
        let prefix = format!("{name}=");
        env.iter()
            .rev()
            .find_map(|e| e.strip_prefix(&prefix))
            .map(str::to_owned)
    };
    let mut out = String::with_capacity(word.len());
    let mut chars = word.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some((_, '{')) => {
                let rest = &word[i + 2..];
                let Some(end) = rest.find('}') else {
                    out.push_str(&word[i..]);
                    break;
                };
                let inner = &rest[..end];
                let value = match inner.split_once(":-") {
                    Some((name, default)) => lookup(name)
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| expand(default, env)),
                    None => match inner.split_once(":+") {
                        Some((name, alt)) => match lookup(name).filter(|v| !v.is_empty()) {
                            Some(_) => expand(alt, env),
                            None => String::new(),
                        },
                        None => lookup(inner).unwrap_or_default(),
                    },
                };
                out.push_str(&value);
                // Skip past the closing brace.
                for (j, _) in chars.by_ref() {
                    if j == i + 2 + end {
                        break;
                    }
                }
            }
            Some((_, n)) if n == '_' || n.is_ascii_alphabetic() => {
                let start = i + 1;
                let mut stop = start;
                while let Some(&(j, n)) = chars.peek() {
                    if n == '_' || n.is_ascii_alphanumeric() {
                        stop = j + n.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(&lookup(&word[start..stop]).unwrap_or_default());
            }
            _ => out.push('$'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn substitutes_as_docker_does() {
        let env = vec![
            "PATH=/usr/bin:/bin".to_owned(),
            "PREFIX=/opt/tool".to_owned(),
            "EMPTY=".to_owned(),
        ];
        assert_eq!(expand("/opt/bin:$PATH", &env), "/opt/bin:/usr/bin:/bin");
        assert_eq!(expand("${PREFIX}/data", &env), "/opt/tool/data");
        assert_eq!(expand("$PREFIX/bin", &env), "/opt/tool/bin");
        assert_eq!(expand("${NOPE:-$PREFIX}", &env), "/opt/tool");
        assert_eq!(expand("${EMPTY:-dflt}", &env), "dflt");
        assert_eq!(expand("${PREFIX:+set}-${NOPE:+set}", &env), "set-");
        assert_eq!(expand("$NOPE|cost: 5$", &env), "|cost: 5$");
        assert_eq!(expand("${unclosed", &env), "${unclosed");
        assert_eq!(expand("naïve $PREFIX", &env), "naïve /opt/tool");
    }
}
