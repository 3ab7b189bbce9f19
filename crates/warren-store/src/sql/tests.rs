//! The store's checks ([`crate::conformance`]) against a real SQLite file and a real
//! PostgreSQL, and SQLite's migration of an older database.
use crate::{conformance, conformance_access, conformance_servers};
use crate::{PostgresStore, SqliteStore};

async fn sqlite() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("t.db"))
        .await
        .expect("open");
    (store, dir)
}

/// A database of its own on the PostgreSQL that `WARREN_TEST_POSTGRES` names (a URL whose
/// role may create databases: `scripts/postgres-up.sh` starts one and prints it), dropped
/// after.
struct Postgres {
    admin: sqlx::PgPool,
    name: String,
    store: PostgresStore,
}

impl Postgres {
    async fn new() -> Postgres {
        let url = std::env::var("WARREN_TEST_POSTGRES").expect(
            "WARREN_TEST_POSTGRES must name a PostgreSQL the tests may create databases in \
             (run `scripts/postgres-up.sh`, which starts Debian's and prints the URL)",
        );
        let admin = sqlx::PgPool::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connect to WARREN_TEST_POSTGRES={url:?}: {e}"));
        let name = format!("warren_test_{}", hex_id());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create database");
        let (base, _) = url.rsplit_once('/').expect("a URL with a database");
        let store = PostgresStore::connect(&format!("{base}/{name}"))
            .await
            .expect("open");
        Postgres { admin, name, store }
    }

    async fn drop(self) {
        drop(self.store);
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&self.admin)
            .await
            .expect("drop database");
    }
}

fn hex_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", n, std::process::id())
}

macro_rules! on_both {
    ($module:ident :: $check:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            let (store, _dir) = sqlite().await;
            $module::$check(&store).await;
        }

        #[tokio::test]
        async fn $postgres() {
            let pg = Postgres::new().await;
            $module::$check(&pg.store).await;
            pg.drop().await;
        }
    };
    ($check:ident, $sqlite:ident, $postgres:ident) => {
        on_both!(conformance::$check, $sqlite, $postgres);
    };
}

on_both!(operations, sqlite_operations, postgres_operations);
on_both!(sandboxes, sqlite_sandboxes, postgres_sandboxes);
on_both!(logs, sqlite_logs, postgres_logs);
on_both!(credentials, sqlite_credentials, postgres_credentials);
on_both!(conformance_access::keys, sqlite_keys, postgres_keys);
on_both!(conformance_access::teams, sqlite_teams, postgres_teams);
on_both!(conformance_access::audit, sqlite_audit, postgres_audit);
on_both!(
    conformance_access::servers,
    sqlite_servers,
    postgres_servers
);
on_both!(request_keys, sqlite_request_keys, postgres_request_keys);
on_both!(
    conformance_servers::takeovers,
    sqlite_takeovers,
    postgres_takeovers
);

/// A database from before sandboxes had columns (a JSON document each) reads the same after
/// the migration.
#[tokio::test]
async fn sqlite_moves_sandbox_documents_into_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let old = sqlx::SqlitePool::connect_with(opts).await.expect("open");
    let mut before = sqlx::migrate!("./migrations/sqlite");
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version <= 10)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&old).await.expect("old migrations");
    let rec = conformance::sample_record();
    let doc = serde_json::to_string(&rec.sandbox).expect("doc");
    sqlx::query(
        "INSERT INTO sandboxes (id, state, image, net_index, token, created_at, doc)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(rec.sandbox.id.as_str())
    .bind(rec.sandbox.state.as_str())
    .bind(&rec.sandbox.image)
    .bind(rec.net_index.map(i64::from))
    .bind(&rec.token)
    // As the old store wrote it: microseconds (the document has the whole time).
    .bind(
        rec.sandbox
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
    .bind(doc)
    .execute(&old)
    .await
    .expect("old row");
    sqlx::query("INSERT INTO log_offsets (sandbox_id, stream, offset) VALUES ('x', 'stdout', 5)")
        .execute(&old)
        .await
        .expect("old offset");
    old.close().await;

    let store = SqliteStore::open(&path).await.expect("migrate");
    use crate::Store;
    let got = store
        .get_sandbox(&rec.sandbox.id)
        .await
        .expect("get")
        .expect("some");
    // Sandboxes from before teams belong to the default one, and to no server until one
    // adopts them.
    let mut want = rec;
    want.sandbox.team = "default".into();
    want.sandbox.server = String::new();
    assert_eq!(got, want);
    let offsets: Vec<(String, i64)> =
        sqlx::query_as("SELECT stream, bytes_read FROM log_offsets WHERE sandbox_id = 'x'")
            .fetch_all(&store.pool)
            .await
            .expect("offsets");
    assert_eq!(offsets, [("stdout".to_owned(), 5)]);
}
