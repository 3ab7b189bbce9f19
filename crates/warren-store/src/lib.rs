//! Warren's durable state: API keys, images, sandboxes, operations, behind the [`Store`]
//! trait, with its SQL implementation beside it, compiled once for SQLite (the embedded
//! default) and once for PostgreSQL (`--database postgres://…`) from the same source.
#![deny(missing_docs)]

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod conformance_access;
#[cfg(test)]
mod conformance_servers;

/// The store in one SQLite file.
#[path = "sql"]
pub mod sqlite {
    type Db = sqlx::Sqlite;
    type DbRow = sqlx::sqlite::SqliteRow;
    /// One writer at a time already: nothing to ask of a transaction.
    const SERIALIZABLE: Option<&str> = None;
    /// One server per file: the server's own lock is the whole of it.
    const TEAM_LOCK: Option<&str> = None;
    mod audit;
    mod credentials;
    mod kept;
    mod keys;
    mod logs;
    #[path = "open_sqlite.rs"]
    mod open;
    mod operations;
    mod request_keys;
    mod rows;
    mod sandbox_rows;
    mod servers;
    mod store;
    mod team_lock;
    #[cfg(test)]
    mod tests;
    pub use store::SqlStore as SqliteStore;
}

/// The store in PostgreSQL: the same source files as [`sqlite`], compiled against
/// PostgreSQL's driver (that is the point, hence the lint's allowance).
#[allow(clippy::duplicate_mod)]
#[path = "sql"]
pub mod postgres {
    type Db = sqlx::Postgres;
    type DbRow = sqlx::postgres::PgRow;
    const SERIALIZABLE: Option<&str> = Some("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE");
    /// Servers sharing the database take a team's lock in the database itself.
    const TEAM_LOCK: Option<&str> = Some("SELECT pg_advisory_xact_lock(hashtext($1))");
    mod audit;
    mod credentials;
    mod kept;
    mod keys;
    mod logs;
    #[path = "open_postgres.rs"]
    mod open;
    mod operations;
    mod request_keys;
    mod rows;
    mod sandbox_rows;
    mod servers;
    mod store;
    mod team_lock;
    pub use store::SqlStore as PostgresStore;
}

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use warren_api::{
    ExecRecord, Image, LogLine, Operation, OperationKind, OperationState, Sandbox, SandboxId,
};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored document no longer parses.
    #[error("stored record {what} is corrupt: {source}")]
    Corrupt {
        /// Which record.
        what: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A row that must be unique already exists.
    #[error("{0} already exists")]
    Exists(String),
}

/// A sandbox as stored: the API's view plus what only the server may know.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    /// What the API shows.
    pub sandbox: Sandbox,
    /// The agent's access token.
    pub token: String,
    /// Index of its network lease within the server's address range, while it holds one.
    pub net_index: Option<u32>,
}

/// A snapshot as stored: what the API shows, and what a sandbox made from it starts from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SnapshotRecord {
    /// What the API shows.
    pub snapshot: warren_api::Snapshot,
    /// The source sandbox as it was (image, limits, command, volumes, ...).
    pub sandbox: Sandbox,
    /// Its agent's token: a sandbox restored from the snapshot's memory has that agent.
    pub token: String,
}

/// How much of one sandbox's log is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogSize {
    /// The lowest `seq` stored (0 when none is): lines before it were dropped.
    pub first_seq: u64,
    /// The highest `seq` stored (0 when none is).
    pub last_seq: u64,
    /// Lines stored.
    pub lines: u64,
    /// Bytes of their text.
    pub bytes: u64,
}

/// What is stored of an API key besides the hash of its secret: what the API lists.
pub type ApiKeyRecord = warren_api::ApiKey;

/// A team as stored (its usage is counted, not stored).
#[derive(Debug, Clone, PartialEq)]
pub struct TeamRecord {
    /// Its name.
    pub name: String,
    /// Its limits.
    pub quotas: warren_api::Quotas,
    /// Requests per second each of its keys may make, when limited.
    pub rate_limit: Option<u32>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A Warren server sharing the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRecord {
    /// Its name (`--server-name`).
    pub name: String,
    /// Where its API answers (`--advertise-url`).
    pub url: String,
    /// When it last noted itself alive.
    pub seen_at: DateTime<Utc>,
}

/// What a takeover settled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// The sandboxes failed.
    pub sandboxes: Vec<SandboxId>,
    /// How many operations failed.
    pub operations: u64,
    /// How many running idempotency keys went.
    pub keys: u64,
}

/// How a revocation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now.
    Done,
    /// It was already.
    Already,
    /// No such key.
    NotFound,
    /// Refused: it is the operator's last key in use that never expires, and nothing could
    /// make another once the rest expired.
    LastOperatorKey,
}

/// How a team's deletion went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamDeleted {
    /// Deleted, its keys revoked.
    Done,
    /// No such team.
    NotFound,
    /// Refused: it still holds these (`("sandboxes", 2)`, `("volumes", 1)`, ...).
    Holds(Vec<(&'static str, u64)>),
}

/// Which audit entries to list (newest first).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this team's.
    pub team: Option<String>,
    /// Only this key's.
    pub key_id: Option<String>,
    /// Only those acting on this target.
    pub target: Option<String>,
    /// Only calls with this method.
    pub method: Option<String>,
    /// Only from this time on.
    pub since: Option<DateTime<Utc>>,
    /// Only before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only entries older than this one (paging back).
    pub before: Option<u64>,
    /// At most this many.
    pub limit: u32,
}

/// A secret: its value sealed (the store never sees it in the clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// Its id.
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// 1 at creation, one more at each update.
    pub version: u64,
    /// The owner's labels.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The value, sealed by the server.
    pub sealed: Vec<u8>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When its value last changed.
    pub updated_at: DateTime<Utc>,
    /// The team it belongs to (only its sandboxes and keys use it).
    pub team: String,
}

/// A team's lock, held by whoever has it until dropped (see [`Store::lock_team`]).
pub struct TeamLock(pub Option<Box<dyn std::any::Any + Send + Sync>>);

/// Durable state of one Warren server.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Waits for `team`'s lock among every server sharing the store and holds it until the
    /// lock is dropped: a team's quota check and the record of what it admits happen under
    /// it, so two servers cannot both give a team its last place. A store only one server
    /// uses gives an empty lock (the server's own lock suffices).
    async fn lock_team(&self, team: &str) -> Result<TeamLock, StoreError>;

    /// Records an API key by the hash of its secret; when it was made (as stored).
    async fn insert_api_key(
        &self,
        key: &ApiKeyRecord,
        hash: &str,
    ) -> Result<DateTime<Utc>, StoreError>;
    /// The key with this hash (revoked and expired ones too).
    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// How many keys exist (revoked ones too).
    async fn count_api_keys(&self) -> Result<u64, StoreError>;
    /// Keys (never their secrets), oldest first: one team's, or all.
    async fn list_api_keys(&self, team: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Revokes a key by id, unless it is the operator's last key in use.
    async fn revoke_api_key(&self, id: &str) -> Result<Revoked, StoreError>;
    /// Notes when a key was last used.
    async fn touch_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Records a new team.
    async fn insert_team(&self, team: &TeamRecord) -> Result<(), StoreError>;
    /// A team by name.
    async fn get_team(&self, name: &str) -> Result<Option<TeamRecord>, StoreError>;
    /// Every team, by name.
    async fn list_teams(&self) -> Result<Vec<TeamRecord>, StoreError>;
    /// Replaces a team's limits; whether it exists.
    async fn update_team(&self, team: &TeamRecord) -> Result<bool, StoreError>;
    /// Deletes a team that holds nothing (sandboxes, volumes, secrets, images), revoking its
    /// keys.
    async fn delete_team(&self, name: &str) -> Result<TeamDeleted, StoreError>;

    /// Records one audited call.
    async fn append_audit(&self, entry: &warren_api::AuditEntry) -> Result<(), StoreError>;
    /// Audited calls, newest first.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<warren_api::AuditEntry>, StoreError>;
    /// Forgets audited calls made before `before`; how many.
    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Records a new secret; `false` when one of that name exists.
    async fn insert_secret(&self, rec: &SecretRecord) -> Result<bool, StoreError>;
    /// A secret by id or, failing that, by name.
    async fn get_secret(&self, id_or_name: &str) -> Result<Option<SecretRecord>, StoreError>;
    /// Every secret, by name.
    async fn list_secrets(&self) -> Result<Vec<SecretRecord>, StoreError>;
    /// Replaces a secret's version, metadata, sealed value and update time.
    async fn update_secret(&self, rec: &SecretRecord) -> Result<(), StoreError>;
    /// Forgets a secret by id; whether it existed.
    async fn delete_secret(&self, id: &str) -> Result<bool, StoreError>;

    /// The sandbox a create with this idempotency key made, if one did.
    async fn idempotent_sandbox(&self, key: &str) -> Result<Option<SandboxId>, StoreError>;
    /// Records (or moves) an idempotency key to the sandbox its create made.
    async fn put_idempotent_sandbox(&self, key: &str, id: &SandboxId) -> Result<(), StoreError>;

    /// Records a new volume of `team`'s; `false` when one of that name exists (names are
    /// the server's, whichever team holds them).
    async fn insert_volume(
        &self,
        name: &str,
        size_mb: u64,
        at: DateTime<Utc>,
        team: &str,
    ) -> Result<bool, StoreError>;
    /// One volume: its size in MiB, when it was made, its team.
    async fn get_volume(
        &self,
        name: &str,
    ) -> Result<Option<(u64, DateTime<Utc>, String)>, StoreError>;
    /// Every volume by name: name, size in MiB, when made, team.
    async fn list_volumes(&self) -> Result<Vec<(String, u64, DateTime<Utc>, String)>, StoreError>;
    /// Forgets a volume; whether it existed.
    async fn delete_volume(&self, name: &str) -> Result<bool, StoreError>;

    /// Records a snapshot; `false` when one of that name exists.
    async fn insert_snapshot(&self, rec: &SnapshotRecord) -> Result<bool, StoreError>;
    /// One snapshot.
    async fn get_snapshot(&self, name: &str) -> Result<Option<SnapshotRecord>, StoreError>;
    /// Every snapshot, by name.
    async fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError>;
    /// Forgets a snapshot; whether it existed.
    async fn delete_snapshot(&self, name: &str) -> Result<bool, StoreError>;

    /// Records a warm pool; `false` when one of that name exists.
    async fn insert_pool(
        &self,
        pool: &warren_api::CreatePool,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Every pool, by name, with when it was made.
    async fn list_pools(&self) -> Result<Vec<(warren_api::CreatePool, DateTime<Utc>)>, StoreError>;
    /// Forgets a pool; whether it existed.
    async fn delete_pool(&self, name: &str) -> Result<bool, StoreError>;

    /// Creates or replaces an image by name.
    async fn put_image(&self, image: &Image) -> Result<(), StoreError>;
    /// One image.
    async fn get_image(&self, name: &str) -> Result<Option<Image>, StoreError>;
    /// Every image, by name.
    async fn list_images(&self) -> Result<Vec<Image>, StoreError>;
    /// Removes an image record; whether it existed.
    async fn delete_image(&self, name: &str) -> Result<bool, StoreError>;
    /// The layers of an image digest, while an image or a sandbox refers to it.
    async fn manifest_layers(&self, digest: &str) -> Result<Option<Vec<String>>, StoreError>;
    /// Forgets image digests no image or live sandbox refers to, and returns every layer the
    /// rest use: whatever else is in the layer store may go.
    async fn live_layers(&self) -> Result<Vec<String>, StoreError>;

    /// Records a new sandbox.
    async fn insert_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError>;
    /// Saves a changed sandbox.
    async fn update_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError>;
    /// One sandbox, deleted ones included.
    async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError>;
    /// Every sandbox not deleted, newest first.
    async fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError>;
    /// How many sandboxes not deleted use this image.
    async fn count_sandboxes_using_image(&self, image: &str) -> Result<u64, StoreError>;
    /// Network lease indexes held by sandboxes not deleted on server `host` (each host has its
    /// own range).
    async fn used_net_indexes(&self, host: &str) -> Result<Vec<u32>, StoreError>;
    /// Makes sandboxes and operations of no server (from before servers were named) `host`'s;
    /// how many sandboxes.
    async fn adopt_hostless(&self, host: &str) -> Result<u64, StoreError>;

    /// Notes server `name` alive now (at `url`), clearing any takeover of it.
    async fn heartbeat(&self, name: &str, url: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Every server noted.
    async fn list_servers(&self) -> Result<Vec<ServerRecord>, StoreError>;
    /// Claims the takeover of server `dead` for `me` if it was last seen before `stale` and
    /// no other server holds a takeover claimed since then: whether `me` won (exactly one
    /// server does).
    async fn take_over(
        &self,
        dead: &str,
        me: &str,
        stale: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Settles the takeover of `dead` by `me`, if `me` still holds it (`dead` has not noted
    /// itself alive since, which ends it): in one transaction, `dead`'s sandboxes that were
    /// not at rest (stopped, paused, failed, deleted) fail with `why` and lose their
    /// addresses, its unfinished operations fail (`interrupted`, `why`), its running
    /// idempotency keys go, and it is forgotten. `None` when the takeover was no longer held.
    async fn settle_takeover(
        &self,
        dead: &str,
        me: &str,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Settled>, StoreError>;
    /// Forgets server `name` (it stopped, or its takeover is done).
    async fn forget_server(&self, name: &str) -> Result<(), StoreError>;

    /// Appends to a sandbox's command history.
    async fn insert_exec(&self, sandbox: &SandboxId, rec: &ExecRecord) -> Result<(), StoreError>;
    /// The last `limit` entries of a sandbox's history, oldest first.
    async fn list_execs(
        &self,
        sandbox: &SandboxId,
        limit: u32,
    ) -> Result<Vec<ExecRecord>, StoreError>;
    /// Deletes history that started before `before`; how many entries went.
    async fn prune_execs(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Appends log lines (numbered by the caller, in one transaction whatever their number)
    /// and, in the same transaction, records how far each output file has been read.
    async fn append_logs(
        &self,
        sandbox: &SandboxId,
        lines: &[LogLine],
        offsets: &[(&str, u64)],
    ) -> Result<(), StoreError>;
    /// Up to `limit` lines with `seq > after`, oldest first.
    async fn list_logs(
        &self,
        sandbox: &SandboxId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LogLine>, StoreError>;
    /// The highest `seq` of a sandbox's log (0 when empty).
    async fn last_log_seq(&self, sandbox: &SandboxId) -> Result<u64, StoreError>;
    /// The lowest `seq` of a sandbox's log (0 when empty).
    async fn first_log_seq(&self, sandbox: &SandboxId) -> Result<u64, StoreError>;
    /// How much of a sandbox's log is stored (reads it all: for a start, not for every line).
    async fn log_size(&self, sandbox: &SandboxId) -> Result<LogSize, StoreError>;
    /// Drops the oldest lines of a sandbox's log until at most `keep_lines` lines and
    /// `keep_bytes` bytes of text are left; returns the lines and bytes dropped.
    async fn trim_logs(
        &self,
        sandbox: &SandboxId,
        keep_lines: u64,
        keep_bytes: u64,
    ) -> Result<(u64, u64), StoreError>;
    /// How far each output file of a sandbox has been read.
    async fn log_offsets(&self, sandbox: &SandboxId) -> Result<Vec<(String, u64)>, StoreError>;
    /// Forgets a sandbox's log.
    async fn delete_logs(&self, sandbox: &SandboxId) -> Result<(), StoreError>;

    /// Records a new operation ([`StoreError::Exists`] when its id or idempotency key is
    /// taken).
    async fn insert_operation(&self, rec: &OperationRecord) -> Result<(), StoreError>;
    /// Saves an operation's progress (target, state, attempts, error, result, times).
    async fn update_operation(&self, op: &Operation) -> Result<(), StoreError>;
    /// Records what an operation acts on (a create's sandbox, once recorded), touching
    /// nothing else, so it never undoes a later update.
    async fn set_operation_target(&self, id: &str, target: &str) -> Result<(), StoreError>;
    /// An operation by id.
    async fn get_operation(&self, id: &str) -> Result<Option<OperationRecord>, StoreError>;
    /// The operation recorded with an idempotency key.
    async fn operation_by_key(&self, key: &str) -> Result<Option<OperationRecord>, StoreError>;
    /// Operations matching `filter`, newest first.
    async fn list_operations(&self, filter: &OperationFilter)
        -> Result<Vec<Operation>, StoreError>;
    /// Server `host`'s operations queued or running, oldest first (what its restart resumes
    /// or rolls back).
    async fn unfinished_operations(&self, host: &str) -> Result<Vec<OperationRecord>, StoreError>;
    /// Forgets operations that ended before `before`; how many.
    async fn prune_operations(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Claims an idempotency key for a call with `fingerprint` on server `host`, or says what
    /// holds it.
    async fn claim_request_key(
        &self,
        key: &str,
        fingerprint: &str,
        host: &str,
        at: DateTime<Utc>,
    ) -> Result<KeyClaim, StoreError>;
    /// Keeps a claimed key's answer.
    async fn finish_request_key(&self, key: &str, answer: &StoredAnswer) -> Result<(), StoreError>;
    /// Lets go of a claimed key whose call never answered (cancelled, or failed to run).
    async fn release_request_key(&self, key: &str) -> Result<(), StoreError>;
    /// Forgets keys claimed before `before`, answered or not; how many.
    async fn prune_request_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Lets go of every key whose call was running on server `host` (at its start: none of
    /// its calls runs then), and of keys of no server; how many.
    async fn drop_running_request_keys(&self, host: &str) -> Result<u64, StoreError>;
    /// How many sandboxes (not deleted) are in each state under each runtime.
    async fn count_sandboxes(&self) -> Result<Vec<(String, String, u64)>, StoreError>;
}

/// What an idempotency key holds when a call claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// Nothing: the key is this call's now.
    Claimed,
    /// A call with the key runs now.
    Running {
        /// That call's fingerprint.
        fingerprint: String,
    },
    /// A call with the key ended.
    Done {
        /// That call's fingerprint.
        fingerprint: String,
        /// What it answered.
        answer: StoredAnswer,
    },
}

/// A call's answer, kept for its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// Its HTTP status.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    /// Its body; `None` when it cannot be replayed (a stream, or too large to keep).
    pub body: Option<Vec<u8>>,
}

/// An operation as stored: what the API shows, the request that resumes it, and the
/// idempotency key it was asked with.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationRecord {
    /// What the API shows.
    pub op: Operation,
    /// The request, as the service serialized it.
    pub request: String,
    /// The client's idempotency key.
    pub key: Option<String>,
    /// The server that took it (and carries it out, or on again after a restart).
    pub host: String,
}

/// Which operations to list.
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    /// Only those acting on this target.
    pub target: Option<String>,
    /// Only of this kind.
    pub kind: Option<OperationKind>,
    /// Only in this state.
    pub state: Option<OperationState>,
    /// Only those a key of this team asked for.
    pub team: Option<String>,
    /// At most this many.
    pub limit: u32,
}
