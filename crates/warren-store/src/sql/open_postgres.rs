//! Opening a PostgreSQL database (`--database postgres://…`): one pool for reads and writes,
//! its own migrations (the same schema in PostgreSQL's types).
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::store::SqlStore;
use crate::StoreError;

/// Connections to PostgreSQL per server.
const POOL: u32 = 16;

impl SqlStore {
    /// Connects to `url` (`postgres://user:pass@host:port/db`) and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let opts: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(SqlStore {
            writer: pool.clone(),
            pool,
        })
    }
}
