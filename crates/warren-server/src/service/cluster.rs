//! Several servers on one database: each sandbox is the server's whose host runs it. Every
//! server notes itself alive each reconciler pass and keeps a view of the others; a call
//! about another live server's sandbox is answered 421 with that server's URL (a sandbox's
//! processes, files and ports are on its host). A server that stops answering for
//! `--server-timeout` is taken over by exactly one other (a lease in the database): its
//! running sandboxes are reported failed with the reason, its unfinished operations failed.
use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use warren_api::{ErrorDetail, OperationState, SandboxState};

use crate::error::ApiError;

/// Who this server is to the others.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its name (`--server-name`), kept in each of its sandboxes' rows.
    pub name: String,
    /// Where its API answers (`--advertise-url`), told to clients of other servers.
    pub url: String,
    /// How long a server may go without noting itself alive before it is taken over.
    pub timeout: Duration,
}

/// The other servers alive when last read (seen within the timeout then): name → URL.
pub(super) type Peers = HashMap<String, String>;

impl crate::service::Service {
    /// This server's name.
    pub fn server_name(&self) -> &str {
        &self.inner.cfg.server.name
    }

    /// Whether `host`'s sandboxes are this server's to act on.
    pub fn is_mine(&self, host: &str) -> bool {
        host == self.server_name()
    }

    /// The URL of the live server that runs `host`'s sandboxes, when that is another one; a
    /// server not seen for its timeout (stopped, or gone) has none: its sandboxes are
    /// answered here. One not alive at the last heartbeat is looked up again (it may have
    /// started since).
    pub async fn elsewhere(&self, host: &str) -> Result<Option<String>, ApiError> {
        if host.is_empty() || self.is_mine(host) {
            return Ok(None);
        }
        if let Some(url) = crate::lock(&self.inner.peers).get(host).cloned() {
            return Ok(Some(url));
        }
        let timeout = chrono::Duration::from_std(self.inner.cfg.server.timeout).unwrap_or_default();
        let servers = self.inner.store.list_servers().await?;
        Ok(servers
            .into_iter()
            .find(|s| s.name == host && Utc::now() - s.seen_at < timeout)
            .map(|s| s.url))
    }

    /// 421 naming the server that runs `host`'s sandbox `what`, when that is another live one.
    pub async fn check_here(&self, host: &str, what: &str) -> Result<(), ApiError> {
        match self.elsewhere(host).await? {
            Some(url) => Err(ApiError::Misdirected {
                what: what.to_owned(),
                server: host.to_owned(),
                url,
            }),
            None => Ok(()),
        }
    }

    /// This server's sandboxes (not deleted), for the work done on its host.
    pub(crate) async fn own_sandboxes(&self) -> Result<Vec<warren_store::SandboxRecord>, ApiError> {
        let all = self.inner.store.list_sandboxes().await?;
        Ok(all
            .into_iter()
            .filter(|r| self.is_mine(&r.sandbox.server))
            .collect())
    }

    /// At start: rows from before servers were named become this server's.
    pub async fn adopt_hostless(&self) -> Result<u64, ApiError> {
        Ok(self.inner.store.adopt_hostless(self.server_name()).await?)
    }

    /// Notes this server alive, reads the others, and takes over those that stopped.
    pub async fn heartbeat(&self) {
        let me = &self.inner.cfg.server;
        let now = Utc::now();
        if let Err(e) = self.inner.store.heartbeat(&me.name, &me.url, now).await {
            tracing::warn!("noting this server alive: {e}");
            return;
        }
        let servers = match self.inner.store.list_servers().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("reading the other servers: {e}");
                return;
            }
        };
        let stale = now - chrono::Duration::from_std(me.timeout).unwrap_or_default();
        {
            let mut peers = crate::lock(&self.inner.peers);
            peers.clear();
            for s in servers.iter().filter(|s| s.seen_at >= stale) {
                peers.insert(s.name.clone(), s.url.clone());
            }
        }
        for dead in servers
            .iter()
            .filter(|s| s.name != me.name && s.seen_at < stale)
        {
            match self
                .inner
                .store
                .take_over(&dead.name, &me.name, stale, now)
                .await
            {
                Ok(true) => self.take_over(&dead.name, dead.seen_at).await,
                Ok(false) => {}
                Err(e) => tracing::warn!(server = %dead.name, "taking over: {e}"),
            }
        }
    }

    /// Settles what server `dead` left: its running sandboxes are lost with it (their
    /// processes were on its host), its unfinished operations failed. Stopped and paused
    /// ones stay its own, for when it comes back (or, paused into an object store, to be
    /// resumed here).
    async fn take_over(&self, dead: &str, seen: chrono::DateTime<Utc>) {
        let why = format!(
            "its server {dead} stopped answering (last seen {})",
            seen.format("%Y-%m-%d %H:%M:%S UTC")
        );
        tracing::warn!(server = %dead, "taking over: {why}");
        let records = match self.inner.store.list_sandboxes().await {
            Ok(r) => r,
            Err(e) => return tracing::warn!(server = %dead, "taking over: {e}"),
        };
        for mut rec in records.into_iter().filter(|r| r.sandbox.server == dead) {
            if matches!(
                rec.sandbox.state,
                SandboxState::Stopped
                    | SandboxState::Paused
                    | SandboxState::Failed
                    | SandboxState::Deleted
            ) {
                continue;
            }
            rec.sandbox.error = Some(why.clone());
            rec.sandbox.ip = None;
            if let Err(e) = self
                .sandboxes()
                .set_state(&mut rec, SandboxState::Failed)
                .await
            {
                tracing::warn!(sandbox = %rec.sandbox.id, "taking over: {e}");
            }
        }
        match self.inner.store.unfinished_operations(dead).await {
            Ok(ops) => {
                for rec in ops {
                    let mut op = rec.op;
                    op.state = OperationState::Failed;
                    op.ended_at = Some(Utc::now());
                    op.error = Some(ErrorDetail {
                        code: "interrupted".into(),
                        message: why.clone(),
                    });
                    if let Err(e) = self.inner.store.update_operation(&op).await {
                        tracing::warn!(operation = %op.id, "taking over: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!(server = %dead, "taking over its operations: {e}"),
        }
        if let Err(e) = self.inner.store.forget_server(dead).await {
            tracing::warn!(server = %dead, "forgetting it: {e}");
        }
    }

    /// At a graceful stop: this server is no longer counted alive, so the others answer for
    /// its stopped and paused sandboxes at once.
    pub async fn leave(&self) {
        if let Err(e) = self.inner.store.forget_server(self.server_name()).await {
            tracing::warn!("leaving the servers' list: {e}");
        }
    }
}
