//! Several servers on one database: each sandbox is the server's whose host runs it. Every
//! server notes itself alive each reconciler pass and keeps a view of the others; a call
//! about another live server's sandbox is answered 421 with that server's URL (a sandbox's
//! processes, files and ports are on its host). A server that stops answering for
//! `--server-timeout` is taken over by exactly one other (a lease in the database): its
//! running sandboxes are reported failed with the reason, its unfinished operations failed.
use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use warren_api::SandboxState;

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

/// The start of the error of a sandbox whose server `name` was taken over.
fn taken_over(name: &str) -> String {
    format!("its server {name} stopped answering")
}

/// What a call does to a sandbox of another server's, as [`Service::check_here`] weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Deletes it.
    Delete,
    /// Resumes it (from the object store).
    Resume,
    /// Anything else that acts on it.
    Other,
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

    /// Whether `what` (a call of kind `act` on a sandbox of `host`'s) is this server's to
    /// answer: its own sandbox, yes; another live server's, 421 naming it; a server that is
    /// not answering, 503, but for a delete (of the record: the host releases the rest when
    /// it is back) and a resume (from the object store, which makes the sandbox this
    /// server's).
    pub async fn check_here(&self, host: &str, what: &str, act: Act) -> Result<(), ApiError> {
        if self.is_mine(host) {
            return Ok(());
        }
        match self.elsewhere(host).await? {
            Some(url) => Err(ApiError::Misdirected {
                what: what.to_owned(),
                server: host.to_owned(),
                url,
            }),
            None if act == Act::Other && !host.is_empty() => Err(ApiError::Unavailable(format!(
                "{what} runs on server {host}, which is not answering: it is served again \
                 when that server is back (a delete or a resume from the object store is \
                 served here)"
            ))),
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
                // In a task of its own: a long takeover must not hold up this server's own
                // heartbeat.
                Ok(true) => {
                    let (svc, name, seen) = (self.clone(), dead.name.clone(), dead.seen_at);
                    tokio::spawn(async move { svc.take_over(&name, seen).await });
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(server = %dead.name, "taking over: {e}"),
            }
        }
    }

    /// Settles what server `dead` left: its running sandboxes are lost with it (their
    /// processes were on its host), its unfinished operations failed, its calls' running
    /// idempotency keys let go. Stopped and paused ones stay its own, for when it comes back
    /// (or, paused into an object store, to be resumed here). All in one transaction that
    /// holds the takeover: if `dead` noted itself alive meanwhile, nothing is written.
    async fn take_over(&self, dead: &str, seen: chrono::DateTime<Utc>) {
        let why = format!(
            "{} (last seen {})",
            taken_over(dead),
            seen.format("%Y-%m-%d %H:%M:%S UTC")
        );
        tracing::warn!(server = %dead, "taking over: {why}");
        let settled = self
            .inner
            .store
            .settle_takeover(dead, self.server_name(), &why, Utc::now())
            .await;
        let settled = match settled {
            Ok(Some(s)) => s,
            Ok(None) => {
                return tracing::info!(server = %dead, "taking over: it is back; nothing done")
            }
            Err(e) => return tracing::warn!(server = %dead, "taking over: {e}"),
        };
        tracing::warn!(
            server = %dead,
            sandboxes = settled.sandboxes.len(),
            operations = settled.operations,
            idempotency_keys = settled.keys,
            "taken over"
        );
        for id in &settled.sandboxes {
            match self.inner.store.get_sandbox(id).await {
                Ok(Some(rec)) => {
                    // On a cluster its Pod outlives its server: released here, or it runs on
                    // (with its token and network) if that server never comes back.
                    if self.inner.backend.shared() {
                        let b = &self.inner.backend;
                        b.release(id.as_str(), rec.sandbox.runtime, None).await;
                    }
                    self.previews().refresh_route(&rec);
                    self.sandboxes().announce(&rec);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(sandbox = %id, "taking over: {e}"),
            }
        }
    }

    /// At start: this server's sandboxes another one reported lost while it was away still
    /// hold their containers here; they go now (their leases with the leftovers the network
    /// set-up collects).
    pub async fn release_taken_over(&self) -> Result<usize, ApiError> {
        let mark = taken_over(self.server_name());
        let mut n = 0;
        for rec in self.own_sandboxes().await? {
            let lost = rec.sandbox.state == SandboxState::Failed
                && rec
                    .sandbox
                    .error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(&mark));
            if lost {
                let id = rec.sandbox.id.as_str();
                self.inner
                    .backend
                    .release(id, rec.sandbox.runtime, None)
                    .await;
                n += 1;
            }
        }
        Ok(n)
    }

    /// At a graceful stop: this server is no longer counted alive, so the others answer for
    /// its stopped and paused sandboxes at once.
    pub async fn leave(&self) {
        if let Err(e) = self.inner.store.forget_server(self.server_name()).await {
            tracing::warn!("leaving the servers' list: {e}");
        }
    }
}
