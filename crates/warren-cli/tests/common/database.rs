//! The database of a test server: SQLite in its data dir, or with
//! `WARREN_TEST_SERVER_DATABASE=postgres` a PostgreSQL database of its own.
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

/// Where a test server's database URL is kept across its restarts.
const DATABASE_URL_FILE: &str = "test-database-url";

/// `--database` for a server on `data_dir`: with `WARREN_TEST_SERVER_DATABASE=postgres`, a
/// PostgreSQL database of its own on the server `WARREN_TEST_POSTGRES` names (made at its
/// first start, kept for its restarts); otherwise none (SQLite in the data dir). A test that
/// names its own `--database` keeps it.
pub async fn args(data_dir: &Path, extra: &[&str]) -> Vec<String> {
    if extra.contains(&"--database")
        || std::env::var("WARREN_TEST_SERVER_DATABASE").as_deref() != Ok("postgres")
    {
        return Vec::new();
    }
    let kept = data_dir.join(DATABASE_URL_FILE);
    if let Ok(url) = std::fs::read_to_string(&kept) {
        return vec!["--database".into(), url];
    }
    let admin_url = std::env::var("WARREN_TEST_POSTGRES").expect(
        "WARREN_TEST_SERVER_DATABASE=postgres needs WARREN_TEST_POSTGRES (scripts/postgres-up.sh prints it)",
    );
    let admin = sqlx::PgPool::connect(&admin_url)
        .await
        .expect("connecting to WARREN_TEST_POSTGRES");
    let name = format!(
        "warren_api_{}_{}",
        std::process::id(),
        NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .expect("drop an old test database");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create the test database");
    let (base, _) = admin_url.rsplit_once('/').expect("a URL with a database");
    let url = format!("{base}/{name}");
    std::fs::write(&kept, &url).expect("keep the database URL");
    vec!["--database".into(), url]
}
