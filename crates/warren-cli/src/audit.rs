//! `warren audit`: the audit log, newest first: every mutating call, exec, terminal and file
//! write, with the key that made it, its target, its result and the client's address.
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use warren_api::{AuditEntry, AuditList};

use crate::{named, ClientOpts};

#[derive(Args)]
pub struct AuditArgs {
    /// Only this team's entries (the operator's admin key; a team's admin key reads its own
    /// team's only).
    #[arg(long, value_name = "NAME")]
    team: Option<String>,
    /// Only calls made with this key (its id, as `warren key ls` shows it).
    #[arg(long, value_name = "ID")]
    key: Option<String>,
    /// Only calls on this target: a sandbox id, a volume's, snapshot's, pool's or team's name,
    /// a key's id, ...
    #[arg(long)]
    target: Option<String>,
    /// Only calls with this HTTP method, e.g. POST, DELETE.
    #[arg(long)]
    method: Option<String>,
    /// Only entries from then on: an RFC 3339 time (2025-01-31T12:00:00Z) or how long ago
    /// (e.g. 1h, 2d, 30m).
    #[arg(long, value_name = "TIME", value_parser = time_or_ago)]
    since: Option<DateTime<Utc>>,
    /// Only entries up to then: an RFC 3339 time or how long ago (e.g. 1h).
    #[arg(long, value_name = "TIME", value_parser = time_or_ago)]
    until: Option<DateTime<Utc>>,
    /// Only entries older than this one (its `seq`, in the `--json` output): to page back
    /// past `--limit`.
    #[arg(long, value_name = "SEQ")]
    before: Option<u64>,
    /// At most this many entries, newest first [default: 100; the server answers at most
    /// 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
    #[command(flatten)]
    opts: ClientOpts,
}

/// An RFC 3339 time, or a humantime duration (`1h`, `2d 4h`) before now.
fn time_or_ago(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(s).map_err(|e| {
        format!("{s:?} is neither an RFC 3339 time (2025-01-31T12:00:00Z) nor a duration ago like 1h ({e})")
    })?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .ok_or_else(|| format!("{s:?} is too long ago"))
}

/// `path?k=v&…` with the given pairs (percent-encoded), leaving out the absent ones.
pub fn path_with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let mut query = reqwest::Url::parse("http://warren.invalid/").expect("a valid URL");
    {
        let mut q = query.query_pairs_mut();
        for (k, v) in pairs {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    match query.query() {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}

fn line(e: &AuditEntry) -> String {
    format!(
        "{:<19} {:<16} {:<16} {:<6} {:<48} {:>6}  {}",
        e.at.format("%Y-%m-%d %H:%M:%S"),
        e.key_id,
        e.team,
        e.method,
        e.path,
        e.status,
        e.client
    )
}

pub async fn run(a: AuditArgs) -> anyhow::Result<()> {
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
    let path = path_with_query(
        "/v1/audit",
        &[
            ("team", a.team),
            ("key", a.key),
            ("target", a.target),
            ("method", a.method),
            ("since", time(a.since)),
            ("until", time(a.until)),
            ("before", a.before.map(|b| b.to_string())),
            ("limit", a.limit.map(|l| l.to_string())),
        ],
    );
    let header = format!(
        "{:<19} {:<16} {:<16} {:<6} {:<48} {:>6}  CLIENT",
        "TIME", "KEY", "TEAM", "METHOD", "PATH", "STATUS"
    );
    named::list(&a.opts, &path, &header, |l: &AuditList| &l.entries, line).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        let t = time_or_ago("2025-01-31T12:00:00Z").expect("parses");
        assert_eq!(t.to_rfc3339(), "2025-01-31T12:00:00+00:00");
        let ago = time_or_ago("1h").expect("parses");
        let d = Utc::now() - ago;
        assert!(d >= chrono::Duration::minutes(59) && d <= chrono::Duration::minutes(61));
        assert!(time_or_ago("yesterday").is_err());
    }

    #[test]
    fn queries_encode() {
        assert_eq!(path_with_query("/v1/keys", &[("team", None)]), "/v1/keys");
        assert_eq!(
            path_with_query(
                "/v1/audit",
                &[
                    ("team", Some("ml".into())),
                    ("since", Some("2025-01-31T12:00:00+01:00".into()))
                ]
            ),
            "/v1/audit?team=ml&since=2025-01-31T12%3A00%3A00%2B01%3A00"
        );
    }
}
