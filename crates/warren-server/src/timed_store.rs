//! The store, timed: each call's duration lands in `warren_store_call_duration_seconds`,
//! by call, whatever the database. One line a call below; a method added to [`Store`] fails
//! to compile here until it is listed.
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use warren_api::*;
use warren_store::*;

use crate::metrics::StoreCall;

/// A [`Store`] that times every call it passes on.
pub struct TimedStore {
    inner: Arc<dyn Store>,
    seconds: Family<StoreCall, Histogram, fn() -> Histogram>,
}

impl TimedStore {
    /// `inner`, timed into `seconds`.
    pub fn new(
        inner: Arc<dyn Store>,
        seconds: Family<StoreCall, Histogram, fn() -> Histogram>,
    ) -> Self {
        TimedStore { inner, seconds }
    }
}

macro_rules! timed {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        #[async_trait]
        impl Store for TimedStore {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    let t = Instant::now();
                    let r = self.inner.$name($($arg),*).await;
                    self.seconds
                        .get_or_create(&StoreCall { call: stringify!($name) })
                        .observe(t.elapsed().as_secs_f64());
                    r
                }
            )*
        }
    };
}

timed! {
    fn ping(&self) -> Result<(), StoreError>;
    fn lock_team(&self, team: &str) -> Result<TeamLock, StoreError>;
    fn insert_api_key(&self, key: &ApiKeyRecord, hash: &str) -> Result<DateTime<Utc>, StoreError>;
    fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    fn count_api_keys(&self) -> Result<u64, StoreError>;
    fn list_api_keys(&self, team: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError>;
    fn revoke_api_key(&self, id: &str) -> Result<Revoked, StoreError>;
    fn touch_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    fn insert_team(&self, team: &TeamRecord) -> Result<(), StoreError>;
    fn get_team(&self, name: &str) -> Result<Option<TeamRecord>, StoreError>;
    fn list_teams(&self) -> Result<Vec<TeamRecord>, StoreError>;
    fn update_team(&self, team: &TeamRecord) -> Result<bool, StoreError>;
    fn delete_team(&self, name: &str) -> Result<TeamDeleted, StoreError>;
    fn append_audit(&self, entry: &warren_api::AuditEntry) -> Result<(), StoreError>;
    fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<warren_api::AuditEntry>, StoreError>;
    fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    fn insert_secret(&self, rec: &SecretRecord) -> Result<bool, StoreError>;
    fn get_secret(&self, id_or_name: &str) -> Result<Option<SecretRecord>, StoreError>;
    fn list_secrets(&self) -> Result<Vec<SecretRecord>, StoreError>;
    fn update_secret(&self, rec: &SecretRecord) -> Result<(), StoreError>;
    fn delete_secret(&self, id: &str) -> Result<bool, StoreError>;
    fn idempotent_sandbox(&self, key: &str) -> Result<Option<SandboxId>, StoreError>;
    fn put_idempotent_sandbox(&self, key: &str, id: &SandboxId) -> Result<(), StoreError>;
    fn insert_volume(&self, name: &str, size_mb: u64, at: DateTime<Utc>, team: &str) -> Result<bool, StoreError>;
    fn get_volume(&self, name: &str) -> Result<Option<(u64, DateTime<Utc>, String)>, StoreError>;
    fn list_volumes(&self) -> Result<Vec<(String, u64, DateTime<Utc>, String)>, StoreError>;
    fn delete_volume(&self, name: &str) -> Result<bool, StoreError>;
    fn insert_snapshot(&self, rec: &SnapshotRecord) -> Result<bool, StoreError>;
    fn get_snapshot(&self, name: &str) -> Result<Option<SnapshotRecord>, StoreError>;
    fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError>;
    fn delete_snapshot(&self, name: &str) -> Result<bool, StoreError>;
    fn insert_pool(&self, pool: &warren_api::CreatePool, at: DateTime<Utc>) -> Result<bool, StoreError>;
    fn list_pools(&self) -> Result<Vec<(warren_api::CreatePool, DateTime<Utc>)>, StoreError>;
    fn delete_pool(&self, name: &str) -> Result<bool, StoreError>;
    fn put_image(&self, image: &Image) -> Result<(), StoreError>;
    fn get_image(&self, name: &str) -> Result<Option<Image>, StoreError>;
    fn list_images(&self) -> Result<Vec<Image>, StoreError>;
    fn delete_image(&self, name: &str) -> Result<bool, StoreError>;
    fn manifest_layers(&self, digest: &str) -> Result<Option<Vec<String>>, StoreError>;
    fn live_layers(&self) -> Result<Vec<String>, StoreError>;
    fn insert_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError>;
    fn update_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError>;
    fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError>;
    fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError>;
    fn count_sandboxes_using_image(&self, image: &str) -> Result<u64, StoreError>;
    fn used_net_indexes(&self, host: &str) -> Result<Vec<u32>, StoreError>;
    fn adopt_hostless(&self, host: &str) -> Result<u64, StoreError>;
    fn heartbeat(&self, name: &str, url: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    fn list_servers(&self) -> Result<Vec<ServerRecord>, StoreError>;
    fn take_over(&self, dead: &str, me: &str, stale: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool, StoreError>;
    fn settle_takeover(&self, dead: &str, me: &str, why: &str, now: DateTime<Utc>) -> Result<Option<Settled>, StoreError>;
    fn forget_server(&self, name: &str) -> Result<(), StoreError>;
    fn insert_exec(&self, sandbox: &SandboxId, rec: &ExecRecord) -> Result<(), StoreError>;
    fn list_execs(&self, sandbox: &SandboxId, limit: u32) -> Result<Vec<ExecRecord>, StoreError>;
    fn prune_execs(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    fn append_logs(&self, sandbox: &SandboxId, lines: &[LogLine], offsets: &[(&str, u64)]) -> Result<(), StoreError>;
    fn list_logs(&self, sandbox: &SandboxId, after: u64, limit: u32) -> Result<Vec<LogLine>, StoreError>;
    fn last_log_seq(&self, sandbox: &SandboxId) -> Result<u64, StoreError>;
    fn first_log_seq(&self, sandbox: &SandboxId) -> Result<u64, StoreError>;
    fn log_size(&self, sandbox: &SandboxId) -> Result<LogSize, StoreError>;
    fn trim_logs(&self, sandbox: &SandboxId, keep_lines: u64, keep_bytes: u64) -> Result<(u64, u64), StoreError>;
    fn log_offsets(&self, sandbox: &SandboxId) -> Result<Vec<(String, u64)>, StoreError>;
    fn delete_logs(&self, sandbox: &SandboxId) -> Result<(), StoreError>;
    fn insert_operation(&self, rec: &OperationRecord) -> Result<(), StoreError>;
    fn update_operation(&self, op: &Operation) -> Result<(), StoreError>;
    fn set_operation_target(&self, id: &str, target: &str) -> Result<(), StoreError>;
    fn get_operation(&self, id: &str) -> Result<Option<OperationRecord>, StoreError>;
    fn operation_by_key(&self, key: &str) -> Result<Option<OperationRecord>, StoreError>;
    fn list_operations(&self, filter: &OperationFilter) -> Result<Vec<Operation>, StoreError>;
    fn unfinished_operations(&self, host: &str) -> Result<Vec<OperationRecord>, StoreError>;
    fn prune_operations(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    fn claim_request_key(&self, key: &str, fingerprint: &str, host: &str, at: DateTime<Utc>) -> Result<KeyClaim, StoreError>;
    fn finish_request_key(&self, key: &str, answer: &StoredAnswer) -> Result<(), StoreError>;
    fn release_request_key(&self, key: &str) -> Result<(), StoreError>;
    fn prune_request_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    fn drop_running_request_keys(&self, host: &str) -> Result<u64, StoreError>;
    fn count_sandboxes(&self) -> Result<Vec<(String, String, u64)>, StoreError>;
}
