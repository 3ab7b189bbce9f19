//! `warren key`: API keys. Every key has two spellings that every route accepts: Warren's
//! `wk_…` and E2B's `e2b_` + hex, which E2B's SDKs insist on. Each key belongs to one team and
//! has one scope (read, sandboxes or admin).
use std::time::Duration;

use chrono::Utc;
use clap::Subcommand;
use warren_api::{ApiKey, ApiKeyList, CreateApiKey, CreatedApiKey, Scope};

use crate::{audit::path_with_query, named, ClientOpts};

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Make a new API key and print its secret (shown only this once).
    Create {
        /// A name to tell it by.
        #[arg(long, default_value = "key")]
        name: String,
        /// Its team [default: the team of the key making it; only the operator's admin key
        /// names another].
        #[arg(long, value_name = "NAME")]
        team: Option<String>,
        /// What it may do: `read` (lists, gets, logs, file reads; no exec, terminal or
        /// writes), `sandboxes` (everything on its team's sandboxes, images, volumes,
        /// snapshots and pools) or `admin` (that, and its team's keys and audit log)
        /// [default: sandboxes].
        #[arg(long)]
        scope: Option<Scope>,
        /// Make it stop working after this long, e.g. 30d, 12h, 90m [default: never].
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
        /// Requests per second it may make [default: its team's limit].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        rate_limit: Option<u32>,
        /// Print the secret in E2B's spelling (`e2b_` + 40 hex digits), for E2B's SDKs
        /// (`E2B_API_KEY`). `--json` prints both spellings.
        #[arg(long)]
        e2b: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List the keys (never their secrets): the team's own, or every team's for the
    /// operator's admin key.
    Ls {
        /// Only this team's keys (the operator's admin key; others see their own team's).
        #[arg(long, value_name = "NAME")]
        team: Option<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Print the key this command uses (WARREN_API_KEY, else DATA_DIR/admin.key), e.g. the admin
    /// key in E2B's spelling with `--e2b`.
    Show {
        /// Print it in E2B's spelling (`e2b_` + 40 hex digits).
        #[arg(long)]
        e2b: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Revoke a key by id, at once: it stops working but stays listed (as revoked) so the
    /// audit log can name it. The operator's last admin key cannot be revoked.
    Rm {
        /// Its id (`warren key ls`).
        id: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

/// `active`, `revoked` or `expired`.
fn state(k: &ApiKey) -> &'static str {
    if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|t| t <= Utc::now()) {
        "expired"
    } else {
        "active"
    }
}

fn line(k: &ApiKey) -> String {
    format!(
        "{:<18} {:<24} {:<16} {:<10} {:<19} {:<16} {}",
        k.id,
        k.name,
        k.team,
        k.scope.to_string(),
        k.created_at.format("%Y-%m-%d %H:%M:%S"),
        k.last_used_at.map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M").to_string()
        ),
        state(k)
    )
}

pub async fn run(c: KeyCommand) -> anyhow::Result<()> {
    match c {
        KeyCommand::Create {
            name,
            team,
            scope,
            expires,
            rate_limit,
            e2b,
            opts,
        } => {
            let expires_at = expires
                .map(|d| {
                    chrono::Duration::from_std(d)
                        .ok()
                        .and_then(|d| Utc::now().checked_add_signed(d))
                        .ok_or_else(|| anyhow::anyhow!("--expires {d:?} is too far away"))
                })
                .transpose()?;
            let body = CreateApiKey {
                name: Some(name),
                team,
                scope,
                expires_at,
                rate_limit,
            };
            named::create(&opts, "/v1/keys", &body, |k: &CreatedApiKey| {
                if e2b {
                    k.e2b_secret.clone()
                } else {
                    k.secret.clone()
                }
            })
            .await
        }
        KeyCommand::Ls { team, opts } => {
            let header = format!(
                "{:<18} {:<24} {:<16} {:<10} {:<19} {:<16} STATE",
                "ID", "NAME", "TEAM", "SCOPE", "CREATED", "LAST USED"
            );
            let path = path_with_query("/v1/keys", &[("team", team)]);
            named::list(&opts, &path, &header, |l: &ApiKeyList| &l.keys, line).await
        }
        KeyCommand::Show { e2b, opts } => {
            let client = opts.client();
            let key = client.key().ok_or_else(|| {
                anyhow::anyhow!("no API key: set WARREN_API_KEY or --data-dir of a local server")
            })?;
            let e2b_key = warren_server::auth::e2b_spelling(key);
            if opts.json {
                let shown = serde_json::json!({
                    "id": warren_server::auth::key_id(key),
                    "secret": key,
                    "e2b_secret": e2b_key,
                });
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else if e2b {
                let e2b_key = e2b_key.ok_or_else(|| {
                    anyhow::anyhow!(
                        "the key in use is not a Warren key (wk_…): it has no E2B spelling"
                    )
                })?;
                println!("{e2b_key}");
            } else {
                println!("{key}");
            }
            Ok(())
        }
        KeyCommand::Rm { id, opts } => {
            let client = opts.client();
            client
                .send(client.request(reqwest::Method::DELETE, &format!("/v1/keys/{id}")))
                .await?;
            if !opts.json {
                println!("{id} revoked");
            }
            Ok(())
        }
    }
}
