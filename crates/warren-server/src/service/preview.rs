//! What the preview proxy needs to know of a sandbox, kept in memory (a store read per proxied
//! request would cost more than the proxying), and the preview URLs shown on a sandbox.
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use warren_api::{ListeningPort, Sandbox, SandboxId, SandboxState};
use warren_store::SandboxRecord;

use crate::error::ApiError;

/// How long `GET /v1/sandboxes/{id}` waits for the agent's list of ports.
const PORTS_TIMEOUT: Duration = Duration::from_secs(2);

/// A sandbox as the proxy sees it.
#[derive(Debug, Clone)]
pub struct PreviewRoute {
    /// Its state.
    pub state: SandboxState,
    /// Its address, while it has one.
    pub ip: Option<Ipv4Addr>,
    /// Open to anyone.
    pub public: bool,
    /// The traffic token opening its private ports.
    pub token: String,
    /// Whether a request resumes it when it is paused.
    pub auto_resume: bool,
    /// The `Host` its ports are sent (`${PORT}` for the port), when not the client's.
    pub request_host: Option<String>,
    /// Its team (whose API keys open its private ports).
    pub team: String,
    /// The server whose host runs it.
    pub server: String,
}

impl PreviewRoute {
    fn of(rec: &SandboxRecord) -> Self {
        PreviewRoute {
            state: rec.sandbox.state,
            ip: rec.sandbox.ipv4(),
            public: rec.sandbox.public,
            auto_resume: rec.sandbox.auto_resume,
            request_host: rec.sandbox.request_host.clone(),
            team: rec.sandbox.team.clone(),
            server: rec.sandbox.server.clone(),
            // A sandbox from before traffic tokens existed opens to API keys only.
            token: rec
                .sandbox
                .traffic_token
                .clone()
                .unwrap_or_else(|| hex::encode(rand::random::<[u8; 24]>())),
        }
    }
}

/// How preview URLs are spelled.
#[derive(Debug, Clone)]
pub struct PreviewUrls {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The preview domain.
    pub domain: String,
    /// The port browsers connect to.
    pub port: u16,
}

impl PreviewUrls {
    /// The URL of `port` of sandbox `id`.
    pub fn url(&self, id: &SandboxId, port: u16) -> String {
        format!("{}://{id}-{port}.{}/", self.scheme, self.host_suffix())
    }

    /// What follows `<id>-<port>.` in a preview host: the domain, and the port when it is not
    /// the scheme's own (E2B's SDKs take this as the sandbox domain).
    pub fn host_suffix(&self) -> String {
        let default = matches!((self.scheme, self.port), ("http", 80) | ("https", 443));
        if default {
            self.domain.clone()
        } else {
            format!("{}:{}", self.domain, self.port)
        }
    }
}

impl Default for PreviewUrls {
    fn default() -> Self {
        PreviewUrls {
            scheme: "http",
            domain: "localhost".into(),
            port: 8080,
        }
    }
}

/// Whether a listener bound to `address` inside sandbox `ip` is reachable from the host.
fn reachable(address: &str, ip: Option<&str>) -> bool {
    let a = address.strip_prefix("::ffff:").unwrap_or(address);
    a == "0.0.0.0" || a == "::" || Some(a) == ip
}

impl crate::service::Previews<'_> {
    /// How preview URLs are spelled on this server.
    pub fn preview_urls(&self) -> &PreviewUrls {
        &self.inner.cfg.preview
    }

    /// The proxy's view of a sandbox; `None` when there is no such sandbox.
    pub async fn preview_route(
        &self,
        id: &SandboxId,
    ) -> Result<Option<Arc<PreviewRoute>>, ApiError> {
        if let Some(r) = self.cached_preview_route(id) {
            return Ok(r);
        }
        // A write between this read and the insert below (a delete, a stop) must win: the read
        // is cached only if no route changed meanwhile.
        let epoch = self.inner.routes_epoch.load(Ordering::Acquire);
        let Some(rec) = self.inner.store.get_sandbox(id).await? else {
            return Ok(None);
        };
        let route = Arc::new(PreviewRoute::of(&rec));
        let mut routes = self.routes();
        // Deleted sandboxes are not remembered: lookups of old ids must not grow the cache.
        let unchanged = self.inner.routes_epoch.load(Ordering::Acquire) == epoch;
        if unchanged && route.state != SandboxState::Deleted {
            routes.insert(id.to_string(), route.clone());
        }
        Ok((route.state != SandboxState::Deleted).then_some(route))
    }

    /// The proxy's view of a sandbox if it is in memory (`Some(None)`: known to be gone),
    /// without touching the store.
    pub fn cached_preview_route(&self, id: &SandboxId) -> Option<Option<Arc<PreviewRoute>>> {
        let routes = self.routes();
        let r = routes.get(id.as_str())?;
        Some((r.state != SandboxState::Deleted).then(|| r.clone()))
    }

    fn routes(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<PreviewRoute>>> {
        self.inner.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resumes a paused `auto_resume` sandbox for a proxied request (waiting for one being
    /// paused or resumed), and returns its route as it then is.
    pub async fn resume_route(
        &self,
        id: &SandboxId,
    ) -> Result<Option<Arc<PreviewRoute>>, ApiError> {
        let rec = self.record(id).await?;
        let rec = self.sandboxes().resume_for_request(rec).await?;
        Ok(Some(Arc::new(PreviewRoute::of(&rec))))
    }

    /// Keeps the proxy's view in step with a record just written.
    pub(crate) fn refresh_route(&self, rec: &SandboxRecord) {
        let mut routes = self.routes();
        self.inner.routes_epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(r) = routes.get_mut(rec.sandbox.id.as_str()) {
            *r = Arc::new(PreviewRoute::of(rec));
        }
    }

    /// Opens a sandbox's ports to anyone (`true`) or only to holders of its traffic token; in
    /// force from the next proxied request, running or not.
    pub async fn set_public(&self, id: &SandboxId, public: bool) -> Result<Sandbox, ApiError> {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let mut rec = self.record(id).await?;
        rec.sandbox.public = public;
        self.inner.store.update_sandbox(&rec).await?;
        self.refresh_route(&rec);
        let now = if public { "public" } else { "private" };
        self.journal(super::Journal::Event(
            id.clone(),
            format!("network: ports {now}"),
        ));
        Ok(rec.sandbox)
    }

    /// Drops the proxy's view of a sandbox that is gone.
    pub(crate) fn forget_route(&self, id: &SandboxId) {
        let mut routes = self.routes();
        self.inner.routes_epoch.fetch_add(1, Ordering::AcqRel);
        routes.remove(id.as_str());
    }

    /// Adds the URLs of the ports its image declares (whether or not anything listens yet).
    pub fn add_exposed_urls(&self, sandbox: &mut Sandbox) {
        for port in &sandbox.exposed_ports {
            let url = self.inner.cfg.preview.url(&sandbox.id, *port);
            sandbox.urls.insert(port.to_string(), url);
        }
    }

    /// The sandbox with what listens in it now and the URLs of those ports (asked of its
    /// agent; a sandbox that does not answer in time shows none).
    pub async fn with_ports(&self, mut sandbox: Sandbox) -> Sandbox {
        self.add_exposed_urls(&mut sandbox);
        // Another server's sandbox: its agent is on that server's network.
        if sandbox.state != SandboxState::Running || !self.is_mine(&sandbox.server) {
            return sandbox;
        }
        let Ok(rec) = self.record(&sandbox.id).await else {
            return sandbox;
        };
        let Ok(agent) = self.agent(&rec) else {
            return sandbox;
        };
        let ports = match tokio::time::timeout(PORTS_TIMEOUT, agent.ports()).await {
            Ok(Ok(ports)) => ports,
            Ok(Err(e)) => {
                tracing::debug!(sandbox = %sandbox.id, "listing ports: {e}");
                return sandbox;
            }
            Err(_) => return sandbox,
        };
        let urls = &self.inner.cfg.preview;
        for p in ports {
            let open = reachable(&p.address, sandbox.ip.as_deref());
            let url = urls.url(&sandbox.id, p.port);
            if open {
                sandbox.urls.insert(p.port.to_string(), url.clone());
            }
            sandbox.ports.push(ListeningPort {
                port: p.port,
                address: p.address,
                url: open.then_some(url),
            });
        }
        sandbox
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_reachability() {
        let id: SandboxId = "abcdefghijklmnop".parse().expect("id");
        let mut u = PreviewUrls::default();
        assert_eq!(
            u.url(&id, 3000),
            "http://abcdefghijklmnop-3000.localhost:8080/"
        );
        u.port = 80;
        assert_eq!(u.url(&id, 3000), "http://abcdefghijklmnop-3000.localhost/");
        assert!(reachable("0.0.0.0", None));
        assert!(reachable("::", None));
        assert!(reachable("10.0.0.2", Some("10.0.0.2")));
        assert!(reachable("::ffff:10.0.0.2", Some("10.0.0.2")));
        assert!(!reachable("127.0.0.1", Some("10.0.0.2")));
        assert!(!reachable("::1", Some("10.0.0.2")));
    }
}
