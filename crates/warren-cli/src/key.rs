//! `warren key`: API keys. Every key has two spellings that every route accepts: Warren's
//! `wk_…` and E2B's `e2b_` + hex, which E2B's SDKs insist on.
use clap::Subcommand;
use warren_api::{ApiKey, ApiKeyList, CreateApiKey, CreatedApiKey};

use crate::{named, ClientOpts};

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Make a new API key and print its secret (shown only this once).
    Create {
        /// A name to tell it by.
        #[arg(long, default_value = "key")]
        name: String,
        /// Print the secret in E2B's spelling (`e2b_` + 40 hex digits), for E2B's SDKs
        /// (`E2B_API_KEY`). `--json` prints both spellings.
        #[arg(long)]
        e2b: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List the keys (never their secrets).
    Ls {
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
    /// Revoke a key by id, at once (the server's last key cannot be revoked).
    Rm {
        /// Its id (`warren key ls`).
        id: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

fn line(k: &ApiKey) -> String {
    format!(
        "{:<18} {:<24} {}",
        k.id,
        k.name,
        k.created_at.format("%Y-%m-%d %H:%M:%S")
    )
}

pub async fn run(c: KeyCommand) -> anyhow::Result<()> {
    match c {
        KeyCommand::Create { name, e2b, opts } => {
            let body = CreateApiKey { name: Some(name) };
            named::create(&opts, "/v1/keys", &body, |k: &CreatedApiKey| {
                if e2b {
                    k.e2b_secret.clone()
                } else {
                    k.secret.clone()
                }
            })
            .await
        }
        KeyCommand::Ls { opts } => {
            let header = format!("{:<18} {:<24} CREATED", "ID", "NAME");
            named::list(&opts, "/v1/keys", &header, |l: &ApiKeyList| &l.keys, line).await
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
        KeyCommand::Rm { id, opts } => named::remove(&opts, "/v1/keys", &id).await,
    }
}
