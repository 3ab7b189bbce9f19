//! Sandboxes in columns: one per field of the API's view (lists and maps as JSON text), so
//! queries, indexes and other tools read them without the wire type.
use std::sync::LazyLock;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::Row;
use warren_api::Sandbox;

use super::{Db, DbRow};
use crate::{SandboxRecord, StoreError};

/// The columns, in the order [`bind`] binds them (`id` first).
const COLUMNS: [&str; 35] = [
    "id",
    "state",
    "image",
    "image_digest",
    "runtime",
    "cpu",
    "memory_mb",
    "disk_mb",
    "pids",
    "env",
    "cmd",
    "cwd",
    "user_name",
    "metadata",
    "volumes",
    "egress",
    "public",
    "traffic_token",
    "request_host",
    "ip",
    "created_at",
    "started_at",
    "expires_at",
    "on_timeout",
    "auto_resume",
    "error",
    "urls",
    "exposed_ports",
    "ports",
    "pause",
    "pool",
    "token",
    "net_index",
    "team",
    "host",
];

/// `INSERT INTO sandboxes (...) VALUES ($1, ...)`.
pub(super) static INSERT: LazyLock<String> = LazyLock::new(|| {
    let values: Vec<String> = (1..=COLUMNS.len()).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO sandboxes ({}) VALUES ({})",
        COLUMNS.join(", "),
        values.join(", ")
    )
});

/// `UPDATE sandboxes SET state = $2, ... WHERE id = $1`.
pub(super) static UPDATE: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = COLUMNS
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, c)| format!("{c} = ${}", i + 1))
        .collect();
    format!("UPDATE sandboxes SET {} WHERE id = $1", sets.join(", "))
});

/// `SELECT <columns> FROM sandboxes`.
pub(super) static SELECT: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM sandboxes", COLUMNS.join(", ")));

/// Nanoseconds, fixed width: a sandbox read back equals the one written, and the text sorts
/// as the time does.
fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn corrupt(id: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: format!("sandbox {id}"),
        source: serde::de::Error::custom(e),
    }
}

fn json<T: Serialize>(id: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| corrupt(id, e))
}

/// An enum's serde name (`"gvisor"`, `"delete"`).
fn name<T: Serialize>(id: &str, v: &T) -> Result<String, StoreError> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => Err(corrupt(id, format!("{other} is not a name"))),
        Err(e) => Err(corrupt(id, e)),
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>;

/// Binds every column of `rec`, `id` first, to `sql` ([`INSERT`] or [`UPDATE`]).
pub(super) fn bind<'q>(sql: &'q str, rec: &'q SandboxRecord) -> Result<Query<'q>, StoreError> {
    let s: &Sandbox = &rec.sandbox;
    let id = s.id.as_str();
    Ok(sqlx::query(sql)
        .bind(id)
        .bind(s.state.as_str())
        .bind(&s.image)
        .bind(&s.image_digest)
        .bind(name(id, &s.runtime)?)
        .bind(s.cpu)
        .bind(int(s.memory_mb))
        .bind(int(s.disk_mb))
        .bind(int(s.pids))
        .bind(json(id, &s.env)?)
        .bind(json(id, &s.cmd)?)
        .bind(&s.cwd)
        .bind(&s.user)
        .bind(json(id, &s.metadata)?)
        .bind(json(id, &s.volumes)?)
        .bind(json(id, &s.egress)?)
        .bind(i64::from(s.public))
        .bind(s.traffic_token.as_deref())
        .bind(s.request_host.as_deref())
        .bind(s.ip.as_deref())
        .bind(ts(&s.created_at))
        .bind(s.started_at.as_ref().map(ts))
        .bind(s.expires_at.as_ref().map(ts))
        .bind(name(id, &s.on_timeout)?)
        .bind(i64::from(s.auto_resume))
        .bind(s.error.as_deref())
        .bind(json(id, &s.urls)?)
        .bind(json(id, &s.exposed_ports)?)
        .bind(json(id, &s.ports)?)
        .bind(s.pause.as_ref().map(|p| json(id, p)).transpose()?)
        .bind(s.pool.as_deref())
        .bind(&rec.token)
        .bind(rec.net_index.map(i64::from))
        .bind(&s.team)
        .bind(&s.server))
}

/// A sandbox read back from its columns.
pub(super) fn from_row(row: &DbRow) -> Result<SandboxRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let text = |col: &str| -> Result<String, StoreError> { Ok(row.try_get::<String, _>(col)?) };
    let opt = |col: &str| -> Result<Option<String>, StoreError> {
        Ok(row.try_get::<Option<String>, _>(col)?)
    };
    let parsed = |col: &str| -> Result<serde_json::Value, StoreError> {
        serde_json::from_str(&text(col)?).map_err(|e| corrupt(&id, format!("{col}: {e}")))
    };
    fn from<T: DeserializeOwned>(
        id: &str,
        col: &str,
        v: serde_json::Value,
    ) -> Result<T, StoreError> {
        serde_json::from_value(v).map_err(|e| corrupt(id, format!("{col}: {e}")))
    }
    let named = |col: &str| -> Result<serde_json::Value, StoreError> {
        Ok(serde_json::Value::String(text(col)?))
    };
    let time = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| corrupt(&id, e))
    };
    let uint = |col: &str| -> Result<u64, StoreError> {
        u64::try_from(row.try_get::<i64, _>(col)?).map_err(|e| corrupt(&id, format!("{col}: {e}")))
    };
    let sandbox = Sandbox {
        state: text("state")?.parse().map_err(|e| corrupt(&id, e))?,
        image: text("image")?,
        image_digest: text("image_digest")?,
        runtime: from(&id, "runtime", named("runtime")?)?,
        cpu: row.try_get("cpu")?,
        memory_mb: uint("memory_mb")?,
        disk_mb: uint("disk_mb")?,
        pids: uint("pids")?,
        env: from(&id, "env", parsed("env")?)?,
        cmd: from(&id, "cmd", parsed("cmd")?)?,
        cwd: text("cwd")?,
        user: text("user_name")?,
        metadata: from(&id, "metadata", parsed("metadata")?)?,
        volumes: from(&id, "volumes", parsed("volumes")?)?,
        egress: from(&id, "egress", parsed("egress")?)?,
        public: row.try_get::<i64, _>("public")? != 0,
        traffic_token: opt("traffic_token")?,
        request_host: opt("request_host")?,
        ip: opt("ip")?,
        created_at: time(&text("created_at")?)?,
        started_at: opt("started_at")?.as_deref().map(time).transpose()?,
        expires_at: opt("expires_at")?.as_deref().map(time).transpose()?,
        on_timeout: from(&id, "on_timeout", named("on_timeout")?)?,
        auto_resume: row.try_get::<i64, _>("auto_resume")? != 0,
        error: opt("error")?,
        urls: from(&id, "urls", parsed("urls")?)?,
        exposed_ports: from(&id, "exposed_ports", parsed("exposed_ports")?)?,
        ports: from(&id, "ports", parsed("ports")?)?,
        pause: opt("pause")?
            .map(|p| serde_json::from_str(&p).map_err(|e| corrupt(&id, format!("pause: {e}"))))
            .transpose()?,
        pool: opt("pool")?,
        team: text("team")?,
        server: text("host")?,
        id: id.parse().map_err(|e| corrupt(&id, e))?,
    };
    let net_index: Option<i64> = row.try_get("net_index")?;
    Ok(SandboxRecord {
        sandbox,
        token: text("token")?,
        net_index: net_index.and_then(|i| u32::try_from(i).ok()),
    })
}
