//! Image builds: the steps of a build (`Instruction`) and the subset of Dockerfile that names
//! them (FROM, RUN, COPY, ENV, WORKDIR, USER, CMD, ENTRYPOINT, EXPOSE; comments and `\`
//! continuations), shared by `warren image build -f` and E2B's template steps.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One step of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Instruction {
    /// The image to build on (a Warren image name or a registry reference).
    From {
        /// Its name.
        image: String,
    },
    /// A command run by `sh -c` as the current user, in the current directory.
    Run {
        /// The command line.
        command: String,
        /// The user for this step only (E2B's `run_cmd(..., user=)`); the current one when
        /// absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// Files of the build context copied to `dest` (a directory when it ends in `/` or when
    /// several sources are given).
    Copy {
        /// Paths relative to the context.
        sources: Vec<String>,
        /// Where, in the image.
        dest: String,
        /// Owner (`user`, `user:group`, numeric ids); root when absent.
        chown: Option<String>,
        /// Permission bits every copied file and directory gets; their own when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// Environment for later steps and the image.
    Env {
        /// `KEY`, `value` pairs, in order.
        #[schema(schema_with = key_value_pairs)]
        vars: Vec<(String, String)>,
    },
    /// Working directory for later steps and the image.
    Workdir {
        /// The directory (relative ones join the current one).
        path: String,
    },
    /// User for later steps and the image.
    User {
        /// `name`, `uid`, `name:group` or `uid:gid`.
        user: String,
    },
    /// The image's main command.
    Cmd {
        /// Its argv.
        argv: Vec<String>,
    },
    /// What the main command runs through.
    Entrypoint {
        /// Its argv.
        argv: Vec<String>,
    },
    /// Ports the image serves.
    Expose {
        /// TCP ports.
        ports: Vec<u16>,
    },
}

/// The schema of `ENV`'s `vars`: a list of `[KEY, value]`, each exactly two strings (as serde
/// reads a `(String, String)`; the derived schema would let `[KEY]` through).
fn key_value_pairs() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ArrayItems, ObjectBuilder, Type};
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let pair = ArrayBuilder::new()
        .prefix_items([string(), string()])
        .items(ArrayItems::False)
        .min_items(Some(2))
        .max_items(Some(2));
    ArrayBuilder::new()
        .items(pair)
        .description(Some(
            "`KEY`, `value` pairs, in order: `[[\"KEY\", \"value\"], ...]`.",
        ))
        .build()
}

/// How much a build log line matters.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Detail.
    Debug,
    /// Progress and command output.
    Info,
    /// Worth a look.
    Warn,
    /// Why the build failed.
    Error,
}

/// One event of an image build, as `POST /v1/images/build` streams them (one JSON object a
/// line) and E2B's build status reports them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BuildEvent {
    /// A step begins.
    Step {
        /// 1-based.
        index: usize,
        /// Steps in all.
        total: usize,
        /// The step as written (`RUN apt-get install -y jq`).
        text: String,
        /// Whether its result came from the build cache (nothing was run).
        cached: bool,
    },
    /// A line of a step's output, or of the builder's own.
    Log {
        /// When.
        at: chrono::DateTime<chrono::Utc>,
        /// How much it matters.
        level: LogLevel,
        /// The line, without its newline.
        message: String,
    },
    /// The image is built and recorded.
    Done {
        /// As `GET /v1/images` shows it.
        image: Box<crate::Image>,
    },
    /// The build failed; the image was not recorded.
    Error {
        /// The 1-based step that failed; absent when no step did (the base, the finish).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<usize>,
        /// As in every API error.
        error: crate::ErrorDetail,
    },
}

/// A Dockerfile line Warren cannot take: its line number and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile line {line}: {message}")]
pub struct DockerfileError {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// `["a", "b"]` (exec form) as its strings, or a shell line as `sh -c LINE`.
fn argv(rest: &str) -> Result<Vec<String>, String> {
    if rest.starts_with('[') {
        serde_json::from_str::<Vec<String>>(rest)
            .map_err(|e| format!("not a JSON array of strings: {e}"))
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_owned()])
    }
}

/// `KEY=value KEY2="v 2"` or the legacy `KEY value`.
fn env_vars(rest: &str) -> Result<Vec<(String, String)>, String> {
    let first = rest.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        let (key, value) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| "ENV needs KEY=value or KEY value".to_owned())?;
        return Ok(vec![(key.to_owned(), value.trim().to_owned())]);
    }
    let words = shell_words(rest)?;
    words
        .into_iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("{w:?} is not KEY=value"))
        })
        .collect()
}

/// Words split on spaces, with `"…"`/`'…'` quoting and `\` escapes (enough for ENV and COPY).
fn shell_words(s: &str) -> Result<Vec<String>, String> {
    let (mut out, mut cur, mut quote, mut word) = (Vec::new(), String::new(), None, false);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if word {
                    out.push(std::mem::take(&mut cur));
                    word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, '\\') if q != Some('\'') => {
                cur.extend(chars.next());
                word = true;
            }
            (_, c) => {
                cur.push(c);
                word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if word {
        out.push(cur);
    }
    Ok(out)
}

fn instruction(keyword: &str, rest: &str) -> Result<Instruction, String> {
    let need = |what: &str| {
        if rest.is_empty() {
            Err(format!("{keyword} needs {what}"))
        } else {
            Ok(())
        }
    };
    Ok(match keyword {
        "FROM" => {
            need("an image")?;
            let mut words = rest.split_whitespace();
            let image = words.next().unwrap_or_default().to_owned();
            if words.next().is_some() {
                return Err("FROM takes one image (no AS stages, no --platform)".into());
            }
            Instruction::From { image }
        }
        "RUN" => {
            need("a command")?;
            let command = match argv(rest)? {
                v if rest.starts_with('[') => shell_join(&v),
                _ => rest.to_owned(),
            };
            Instruction::Run {
                command,
                user: None,
            }
        }
        "COPY" | "ADD" if keyword == "ADD" => {
            return Err("ADD is not supported (use COPY; URLs and archives are not fetched)".into())
        }
        "COPY" => {
            need("sources and a destination")?;
            let mut words = shell_words(rest)?;
            let mut chown = None;
            while let Some(flag) = words.first().filter(|w| w.starts_with("--")).cloned() {
                words.remove(0);
                match flag.split_once('=') {
                    Some(("--chown", who)) => chown = Some(who.to_owned()),
                    _ => return Err(format!("COPY {flag} is not supported")),
                }
            }
            let dest = words
                .pop()
                .filter(|_| !words.is_empty())
                .ok_or_else(|| "COPY needs at least one source and a destination".to_owned())?;
            Instruction::Copy {
                sources: words,
                dest,
                chown,
                mode: None,
            }
        }
        "ENV" => {
            need("KEY=value")?;
            Instruction::Env {
                vars: env_vars(rest)?,
            }
        }
        "WORKDIR" => {
            need("a directory")?;
            Instruction::Workdir {
                path: rest.to_owned(),
            }
        }
        "USER" => {
            need("a user")?;
            Instruction::User {
                user: rest.to_owned(),
            }
        }
        "CMD" => Instruction::Cmd { argv: argv(rest)? },
        "ENTRYPOINT" => Instruction::Entrypoint { argv: argv(rest)? },
        "EXPOSE" => Instruction::Expose {
            ports: rest
                .split_whitespace()
                .map(|p| {
                    let port = p.strip_suffix("/tcp").unwrap_or(p);
                    port.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("EXPOSE {p:?}: a TCP port is 1 to 65535"))
                })
                .collect::<Result<_, _>>()?,
        },
        other => {
            return Err(format!(
                "{other} is not supported (FROM, RUN, COPY, ENV, WORKDIR, USER, CMD, \
                 ENTRYPOINT, EXPOSE are)"
            ))
        }
    })
}

/// An argv as one shell line (each word single-quoted).
fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The steps of a Dockerfile; the first must be `FROM`.
pub fn parse_dockerfile(text: &str) -> Result<Vec<Instruction>, DockerfileError> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if pending.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if pending.is_some() && trimmed.starts_with('#') {
            continue; // comments inside a continued instruction are dropped, as Docker does
        }
        let (start, mut text) = pending.take().unwrap_or((i + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                text.push_str(part);
                text.push(' ');
                pending = Some((start, text));
                continue;
            }
            None => text.push_str(trimmed),
        }
        let (keyword, rest) = text
            .trim()
            .split_once(char::is_whitespace)
            .map_or((text.trim(), ""), |(k, r)| (k, r.trim()));
        let keyword = keyword.to_ascii_uppercase();
        let step = instruction(&keyword, rest).map_err(|message| DockerfileError {
            line: start,
            message,
        })?;
        if out.is_empty() && !matches!(step, Instruction::From { .. }) {
            return Err(DockerfileError {
                line: start,
                message: "the first instruction must be FROM".into(),
            });
        }
        out.push(step);
    }
    if let Some((line, _)) = pending {
        return Err(DockerfileError {
            line,
            message: "the file ends inside a continued line".into(),
        });
    }
    if out.is_empty() {
        return Err(DockerfileError {
            line: 1,
            message: "no instructions (a Dockerfile starts with FROM)".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supported_subset_parses() {
        let file = "# a comment\nFROM base\nRUN apt-get update && \\\n    apt-get install -y jq\n\
                    COPY --chown=user:user app.py lib/ /home/user/app/\n\
                    ENV A=1 B=\"two words\"\nENV LEGACY some value\nWORKDIR /home/user/app\n\
                    USER user\nEXPOSE 8000 9000/tcp\nENTRYPOINT [\"python\"]\nCMD [\"app.py\"]\n\
                    cmd echo hi\n";
        let steps = parse_dockerfile(file).expect("parses");
        assert_eq!(
            steps,
            vec![
                Instruction::From {
                    image: "base".into()
                },
                Instruction::Run {
                    command: "apt-get update &&  apt-get install -y jq".into(),
                    user: None,
                },
                Instruction::Copy {
                    sources: vec!["app.py".into(), "lib/".into()],
                    dest: "/home/user/app/".into(),
                    chown: Some("user:user".into()),
                    mode: None,
                },
                Instruction::Env {
                    vars: vec![("A".into(), "1".into()), ("B".into(), "two words".into())]
                },
                Instruction::Env {
                    vars: vec![("LEGACY".into(), "some value".into())]
                },
                Instruction::Workdir {
                    path: "/home/user/app".into()
                },
                Instruction::User {
                    user: "user".into()
                },
                Instruction::Expose {
                    ports: vec![8000, 9000]
                },
                Instruction::Entrypoint {
                    argv: vec!["python".into()]
                },
                Instruction::Cmd {
                    argv: vec!["app.py".into()]
                },
                Instruction::Cmd {
                    argv: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()]
                },
            ]
        );
    }

    #[test]
    fn what_is_not_supported_is_named_with_its_line() {
        for (file, line, says) in [
            ("RUN true", 1, "first instruction must be FROM"),
            ("FROM a AS b", 1, "no AS stages"),
            ("FROM a\n\nADD x /", 3, "ADD is not supported"),
            (
                "FROM a\nHEALTHCHECK NONE",
                2,
                "HEALTHCHECK is not supported",
            ),
            ("FROM a\nCOPY only", 2, "at least one source"),
            ("FROM a\nCOPY --from=x a b", 2, "--from=x is not supported"),
            ("FROM a\nEXPOSE 0", 2, "1 to 65535"),
            ("FROM a\nCMD [\"x\", 1]", 2, "JSON array of strings"),
            ("FROM a\nRUN a \\", 2, "ends inside"),
            ("", 1, "no instructions"),
        ] {
            let e = parse_dockerfile(file).expect_err(file);
            assert_eq!(e.line, line, "{file}: {e}");
            assert!(e.message.contains(says), "{file}: {e}");
        }
    }
}
