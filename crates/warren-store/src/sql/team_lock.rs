//! [`Store::lock_team`](crate::Store::lock_team): a transaction holding the database's lock
//! for the team (PostgreSQL's advisory lock, ended with the transaction), or nothing where one
//! server is all there is.
use super::Db;

/// The held transaction; rolled back when dropped, which ends the lock.
struct Held(Option<sqlx::Transaction<'static, Db>>);

impl Drop for Held {
    fn drop(&mut self) {
        let Some(tx) = self.0.take() else { return };
        // Ended at once on the runtime rather than whenever the pool next looks at the
        // connection: another server may be waiting for the lock.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = tx.rollback().await;
                });
            }
            Err(_) => drop(tx),
        }
    }
}

impl super::store::SqlStore {
    pub(super) async fn team_lock(&self, team: &str) -> Result<crate::TeamLock, crate::StoreError> {
        let Some(sql) = super::TEAM_LOCK else {
            return Ok(crate::TeamLock(None));
        };
        let mut tx = self.writer.begin().await?;
        sqlx::query(sql).bind(team).execute(&mut *tx).await?;
        Ok(crate::TeamLock(Some(Box::new(Held(Some(tx))))))
    }
}
