//! `warren team`: teams (the operator's admin key makes, changes and removes them). Each
//! team's keys see only its own sandboxes; quotas bound what it runs and keeps, a rate limit
//! what its keys may ask.
use clap::{Args, Subcommand};
use reqwest::Method;
use warren_api::{CreateTeam, Quotas, Team, TeamList, UpdateTeam};

use crate::{named, ClientOpts};

#[derive(Subcommand)]
pub enum TeamCommand {
    /// Make a team; quotas not given are unlimited. Then `warren key create --team NAME`
    /// makes its keys.
    Create {
        /// Its name: 1 to 63 lower-case letters, digits and '-', not starting or ending
        /// with '-'.
        name: String,
        /// Requests per second each of its keys may make (a key made with its own
        /// `--rate-limit` has that instead) [default: unlimited].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        rate_limit: Option<u32>,
        #[command(
            flatten,
            next_help_heading = "Quotas (each a number or `unlimited`; \
                 unlimited when not given)"
        )]
        quotas: QuotaArgs,
        #[command(flatten, next_help_heading = None::<&str>)]
        opts: ClientOpts,
    },
    /// List teams, with what each holds against its quotas ("-": unlimited).
    Ls {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Show a team: its quotas beside what it holds now, and its rate limit.
    Get {
        /// Its name.
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Change a team's quotas or rate limit: only what is given changes, the rest stays;
    /// `unlimited` removes a limit.
    Set {
        /// Its name.
        name: String,
        /// Requests per second each of its keys may make (keys with their own limit keep
        /// theirs); 0 or `unlimited` removes the limit.
        #[arg(long, value_name = "N|unlimited", value_parser = rate_or_unlimited)]
        rate_limit: Option<u32>,
        #[command(
            flatten,
            next_help_heading = "Quotas (each a number or `unlimited`, which \
                 removes it; unchanged when not given)"
        )]
        quotas: QuotaArgs,
        #[command(flatten, next_help_heading = None::<&str>)]
        opts: ClientOpts,
    },
    /// Remove a team and revoke its keys at once (refused while it has sandboxes; the
    /// `default` team cannot be removed).
    Rm {
        /// Its name.
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

/// A quota flag's value: a limit, or none (`unlimited`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit<T>(Option<T>);

fn count(s: &str) -> Result<Limit<u64>, String> {
    if s == "unlimited" {
        return Ok(Limit(None));
    }
    s.parse()
        .map(|n| Limit(Some(n)))
        .map_err(|_| format!("{s:?} is neither a whole number nor `unlimited`"))
}

fn cores(s: &str) -> Result<Limit<f64>, String> {
    if s == "unlimited" {
        return Ok(Limit(None));
    }
    match s.parse::<f64>() {
        Ok(c) if c.is_finite() && c >= 0.0 => Ok(Limit(Some(c))),
        _ => Err(format!(
            "{s:?} is neither a number of cores (0 or more, e.g. 4 or 0.5) nor `unlimited`"
        )),
    }
}

/// A rate for `set`: N requests per second, with 0 and `unlimited` meaning none.
fn rate_or_unlimited(s: &str) -> Result<u32, String> {
    if s == "unlimited" {
        return Ok(0);
    }
    s.parse()
        .map_err(|_| format!("{s:?} is neither a number of requests per second nor `unlimited`"))
}

/// The four quotas, each a number or `unlimited`.
#[derive(Args)]
pub struct QuotaArgs {
    /// Sandboxes it may have running (or starting, or being made) at once.
    #[arg(long, value_name = "N|unlimited", value_parser = count)]
    sandboxes: Option<Limit<u64>>,
    /// CPU cores of those sandboxes together, e.g. 8 or 2.5.
    #[arg(long, value_name = "CORES|unlimited", value_parser = cores)]
    cpu: Option<Limit<f64>>,
    /// Memory of those sandboxes together, MiB.
    #[arg(long, value_name = "MIB|unlimited", value_parser = count)]
    memory_mb: Option<Limit<u64>>,
    /// Disk of every sandbox it keeps (stopped and paused ones too), MiB.
    #[arg(long, value_name = "MIB|unlimited", value_parser = count)]
    disk_mb: Option<Limit<u64>>,
}

impl QuotaArgs {
    fn any(&self) -> bool {
        self.sandboxes.is_some()
            || self.cpu.is_some()
            || self.memory_mb.is_some()
            || self.disk_mb.is_some()
    }

    /// `q` with the quotas given here in place of its own.
    fn merge(&self, mut q: Quotas) -> Quotas {
        if let Some(Limit(n)) = self.sandboxes {
            q.sandboxes = n;
        }
        if let Some(Limit(c)) = self.cpu {
            q.cpu = c;
        }
        if let Some(Limit(m)) = self.memory_mb {
            q.memory_mb = m;
        }
        if let Some(Limit(d)) = self.disk_mb {
            q.disk_mb = d;
        }
        q
    }
}

/// Cores without a float's noise: `0.5`, `4`, `0.33`.
fn cores_text(c: f64) -> String {
    let s = format!("{c:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `used/quota`, with `-` for no quota.
fn held<T: ToString>(used: String, quota: Option<T>) -> String {
    format!(
        "{used}/{}",
        quota.map_or_else(|| "-".to_owned(), |q| q.to_string())
    )
}

fn line(t: &Team) -> String {
    let (u, q) = (&t.usage, &t.quotas);
    format!(
        "{:<24} {:>11} {:>11} {:>15} {:>15} {:>6}  {}",
        t.name,
        held(u.sandboxes.to_string(), q.sandboxes),
        held(cores_text(u.cpu), q.cpu.map(cores_text)),
        held(u.memory_mb.to_string(), q.memory_mb),
        held(u.disk_mb.to_string(), q.disk_mb),
        t.rate_limit
            .map_or_else(|| "-".to_owned(), |r| r.to_string()),
        t.created_at.format("%Y-%m-%d %H:%M:%S")
    )
}

/// `warren team get` (and what `set` prints): quotas beside usage.
fn show(t: &Team, opts: &ClientOpts) -> anyhow::Result<()> {
    if opts.json {
        println!("{}", serde_json::to_string_pretty(t)?);
        return Ok(());
    }
    let (u, q) = (&t.usage, &t.quotas);
    let of = |used: String, quota: Option<String>| {
        format!("{used} / {}", quota.as_deref().unwrap_or("-"))
    };
    println!("name:       {}", t.name);
    println!("created:    {}", t.created_at.format("%Y-%m-%d %H:%M:%S"));
    match t.rate_limit {
        Some(r) => println!("rate limit: {r} requests/s per key"),
        None => println!("rate limit: -"),
    }
    println!("held / quota (\"-\": unlimited):");
    println!(
        "  sandboxes  {}",
        of(u.sandboxes.to_string(), q.sandboxes.map(|n| n.to_string()))
    );
    println!(
        "  cpu        {}",
        of(cores_text(u.cpu), q.cpu.map(cores_text))
    );
    println!(
        "  memory     {} MiB",
        of(u.memory_mb.to_string(), q.memory_mb.map(|n| n.to_string()))
    );
    println!(
        "  disk       {} MiB",
        of(u.disk_mb.to_string(), q.disk_mb.map(|n| n.to_string()))
    );
    Ok(())
}

async fn get(opts: &ClientOpts, name: &str) -> anyhow::Result<Team> {
    let client = opts.client();
    client
        .json(client.request(Method::GET, &format!("/v1/teams/{name}")))
        .await
}

pub async fn run(c: TeamCommand) -> anyhow::Result<()> {
    match c {
        TeamCommand::Create {
            name,
            quotas,
            rate_limit,
            opts,
        } => {
            let body = CreateTeam {
                name,
                quotas: quotas.merge(Quotas::default()),
                rate_limit,
            };
            named::create(&opts, "/v1/teams", &body, line).await
        }
        TeamCommand::Ls { opts } => {
            let header = format!(
                "{:<24} {:>11} {:>11} {:>15} {:>15} {:>6}  CREATED",
                "NAME", "SANDBOXES", "CPU", "MEMORY MiB", "DISK MiB", "RATE"
            );
            named::list(&opts, "/v1/teams", &header, |l: &TeamList| &l.teams, line).await
        }
        TeamCommand::Get { name, opts } => show(&get(&opts, &name).await?, &opts),
        TeamCommand::Set {
            name,
            quotas,
            rate_limit,
            opts,
        } => {
            if !quotas.any() && rate_limit.is_none() {
                anyhow::bail!(
                    "nothing to change: give a quota (--sandboxes, --cpu, --memory-mb, \
                     --disk-mb) or --rate-limit"
                );
            }
            // The server replaces all four quotas at once: merge the given ones into the
            // team's current ones so the others stay.
            let quotas = if quotas.any() {
                Some(quotas.merge(get(&opts, &name).await?.quotas))
            } else {
                None
            };
            let body = UpdateTeam { quotas, rate_limit };
            let client = opts.client();
            let team: Team = client
                .json(
                    client
                        .request(Method::PATCH, &format!("/v1/teams/{name}"))
                        .json(&body),
                )
                .await?;
            show(&team, &opts)
        }
        TeamCommand::Rm { name, opts } => named::remove(&opts, "/v1/teams", &name).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse() {
        assert_eq!(count("3"), Ok(Limit(Some(3))));
        assert_eq!(count("0"), Ok(Limit(Some(0))));
        assert_eq!(count("unlimited"), Ok(Limit(None)));
        assert!(count("-1").is_err());
        assert_eq!(cores("0.5"), Ok(Limit(Some(0.5))));
        assert!(cores("-1").is_err());
        assert!(cores("NaN").is_err());
        assert_eq!(rate_or_unlimited("unlimited"), Ok(0));
        assert_eq!(rate_or_unlimited("10"), Ok(10));
    }

    #[test]
    fn set_keeps_the_quotas_not_given() {
        let given = QuotaArgs {
            sandboxes: Some(Limit(Some(5))),
            cpu: Some(Limit(None)),
            memory_mb: None,
            disk_mb: None,
        };
        let now = Quotas {
            sandboxes: Some(3),
            cpu: Some(4.0),
            memory_mb: Some(8192),
            disk_mb: None,
        };
        assert_eq!(
            given.merge(now),
            Quotas {
                sandboxes: Some(5),
                cpu: None,
                memory_mb: Some(8192),
                disk_mb: None,
            }
        );
        assert_eq!(cores_text(0.1 + 0.2), "0.3");
        assert_eq!(cores_text(4.0), "4");
    }
}
