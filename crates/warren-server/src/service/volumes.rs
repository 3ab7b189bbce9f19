//! Named volumes: made, listed and removed here; mounted into sandboxes by the backend. A
//! volume in use by any sandbox (running, stopped or paused) cannot be removed.
use chrono::Utc;
use warren_api::{CreateVolume, SandboxState, Volume, VolumeBackup, VolumeMount};
use warren_backend::SpecVolume;
use warren_store::SandboxRecord;

use crate::error::ApiError;

/// A volume's size when the request names none, MiB.
pub const DEFAULT_VOLUME_MB: u64 = 1024;
/// Bounds on a volume's size, MiB: ext4 needs a few MiB; 1 TiB is far past any use here.
const VOLUME_MB: std::ops::RangeInclusive<u64> = 16..=1 << 20;
/// Volumes one sandbox may mount.
const MAX_MOUNTS: usize = 16;

pub(crate) fn valid_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "name {:?}: 1 to 63 of a-z, 0-9, '-' and '_', starting with a letter or digit",
            warren_agent::error::shown_text(name)
        )))
    }
}

/// Checks where a sandbox mounts its volumes: absolute, normal paths, none twice, none over
/// what Warren or the kernel put there.
pub(super) fn valid_mounts(mounts: &[VolumeMount]) -> Result<(), ApiError> {
    if mounts.len() > MAX_MOUNTS {
        return Err(ApiError::Invalid(format!(
            "volumes: {} mounts; at most {MAX_MOUNTS}",
            mounts.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for m in mounts {
        valid_name(&m.name)?;
        let p = &m.path;
        let normal = p.starts_with('/')
            && p.len() > 1
            && p.len() <= 1024
            && !p.ends_with('/')
            && p.split('/')
                .skip(1)
                .all(|c| !c.is_empty() && c != "." && c != "..")
            && !p.contains('\0');
        if !normal {
            return Err(ApiError::Invalid(format!(
                "volume {} path {:?}: an absolute path like /data, without . or .. or a \
                 trailing /",
                m.name,
                warren_agent::error::shown_text(p)
            )));
        }
        let reserved = [
            "/proc",
            "/sys",
            "/dev",
            "/.warren",
            "/etc/hosts",
            "/etc/hostname",
        ];
        if let Some(r) = reserved
            .iter()
            .find(|r| p == *r || p.starts_with(&format!("{r}/")))
        {
            return Err(ApiError::Invalid(format!(
                "volume {} path {p}: {r} is the sandbox's own",
                m.name
            )));
        }
        if !seen.insert(p.as_str()) {
            return Err(ApiError::Invalid(format!("two volumes at {p}")));
        }
    }
    Ok(())
}

impl crate::service::Volumes<'_> {
    /// Makes a volume of `team`'s (its filesystem too, so its size is known to hold). Names
    /// are the server's: one another team holds is taken.
    pub async fn create_volume(&self, req: CreateVolume, team: &str) -> Result<Volume, ApiError> {
        valid_name(&req.name)?;
        let size_mb = req.size_mb.unwrap_or(DEFAULT_VOLUME_MB);
        if !VOLUME_MB.contains(&size_mb) {
            return Err(ApiError::Invalid(format!(
                "size_mb {size_mb}: from {} to {} MiB",
                VOLUME_MB.start(),
                VOLUME_MB.end()
            )));
        }
        let _gc = self.inner.volumes_gc.write().await;
        let at = Utc::now();
        if !self
            .inner
            .store
            .insert_volume(&req.name, size_mb, at, team)
            .await?
        {
            return Err(ApiError::Conflict(format!("volume {} exists", req.name)));
        }
        let backend = self.inner.backend.clone();
        let name = req.name.clone();
        let made = tokio::task::spawn_blocking(move || backend.ensure_volume(&name, size_mb))
            .await
            .map_err(|e| ApiError::Internal(format!("volume task: {e}")))?;
        if let Err(e) = made {
            let _ = self.inner.store.delete_volume(&req.name).await;
            let msg = format!("making volume {}: {e}", req.name);
            // A backend without volumes says so: the call cannot succeed here, not a fault.
            return Err(if e.kind() == std::io::ErrorKind::Unsupported {
                ApiError::Conflict(msg)
            } else {
                ApiError::Internal(msg)
            });
        }
        self.volume(&req.name, team).await
    }

    /// One of `team`'s volumes, with its use (another team's is not found).
    pub async fn volume(&self, name: &str, team: &str) -> Result<Volume, ApiError> {
        let found = self.inner.store.get_volume(name).await?;
        let Some((size_mb, created_at, _)) = found.filter(|(_, _, t)| t == team) else {
            return Err(ApiError::NotFound(format!(
                "volume {} not found",
                warren_agent::error::shown_text(name)
            )));
        };
        let users = self.inner.store.list_sandboxes().await?;
        Ok(self.describe_volume(name.to_owned(), size_mb, created_at, &users))
    }

    fn describe_volume(
        &self,
        name: String,
        size_mb: u64,
        created_at: chrono::DateTime<Utc>,
        sandboxes: &[SandboxRecord],
    ) -> Volume {
        let used_by = sandboxes
            .iter()
            .filter(|r| r.sandbox.state != SandboxState::Deleted)
            .filter(|r| r.sandbox.volumes.iter().any(|v| v.name == name))
            .map(|r| r.sandbox.id.to_string())
            .collect();
        Volume {
            used_bytes: self.inner.backend.volume_usage(&name),
            name,
            size_mb,
            created_at,
            used_by,
        }
    }

    /// Every volume of `team`'s.
    pub async fn list(&self, team: &str) -> Result<Vec<Volume>, ApiError> {
        let sandboxes = self.inner.store.list_sandboxes().await?;
        Ok(self
            .inner
            .store
            .list_volumes()
            .await?
            .into_iter()
            .filter(|(_, _, _, t)| t == team)
            .map(|(name, size, at, _)| self.describe_volume(name, size, at, &sandboxes))
            .collect())
    }

    /// Removes a volume and its files; 409 while a sandbox that is not deleted mounts it.
    pub async fn delete_volume(&self, name: &str, team: &str) -> Result<(), ApiError> {
        let _gc = self.inner.volumes_gc.write().await;
        let v = self.volume(name, team).await?;
        if !v.used_by.is_empty() {
            return Err(ApiError::Conflict(format!(
                "volume {name} is mounted by sandbox {}: delete those first",
                v.used_by.join(", ")
            )));
        }
        let backend = self.inner.backend.clone();
        let owned = name.to_owned();
        tokio::task::spawn_blocking(move || backend.remove_volume(&owned))
            .await
            .map_err(|e| ApiError::Internal(format!("volume task: {e}")))?
            .map_err(|e| ApiError::Internal(format!("removing volume {name}: {e}")))?;
        self.inner.store.delete_volume(name).await?;
        self.inner.backend.discard_volume_backup(name);
        Ok(())
    }

    /// Sends a copy of a volume to the object store, where a server sharing the database and
    /// the store finds it when a sandbox it runs mounts the volume and its host lacks it.
    pub async fn backup_volume(&self, name: &str, team: &str) -> Result<VolumeBackup, ApiError> {
        // A delete waits for the backup (and its copy's removal follows it).
        let _gc = self.inner.volumes_gc.read().await;
        self.volume(name, team).await?;
        let began = std::time::Instant::now();
        let at = Utc::now();
        match self.inner.backend.backup_volume(name).await {
            Ok(b) => Ok(VolumeBackup {
                name: name.to_owned(),
                stored: b.stored,
                bytes: b.bytes,
                backed_up_at: at,
                took_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
            }),
            Err(warren_backend::BackendError::Unsupported(m)) => Err(ApiError::Conflict(m)),
            Err(e) => Err(ApiError::Internal(format!("backing up volume {name}: {e}"))),
        }
    }

    /// After a pause whose image went to the object store: the sandbox's volumes go too, so
    /// another server can resume it with them. A failure is logged; the pause stands.
    pub(super) async fn backup_volumes_of(&self, rec: &SandboxRecord) {
        for v in &rec.sandbox.volumes {
            match self.backup_volume(&v.name, &rec.sandbox.team).await {
                Ok(b) => tracing::info!(
                    sandbox = %rec.sandbox.id,
                    "volume {} sent to {}: {} bytes in {} ms",
                    v.name,
                    b.stored,
                    b.bytes,
                    b.took_ms
                ),
                Err(e) => tracing::warn!(sandbox = %rec.sandbox.id, "volume {}: {e}", v.name),
            }
        }
    }

    /// The volumes of a create, checked to exist (the caller holds `volumes_gc` until the
    /// sandbox is recorded, so none goes meanwhile).
    pub(super) async fn check_volumes(
        &self,
        mounts: &[VolumeMount],
        team: &str,
    ) -> Result<(), ApiError> {
        for m in mounts {
            let found = self.inner.store.get_volume(&m.name).await?;
            // Another team's volume does not exist, as far as this create can tell.
            if found.is_none_or(|(_, _, t)| t != team) {
                return Err(ApiError::Invalid(format!(
                    "volume {} does not exist (POST /v1/volumes makes one)",
                    m.name
                )));
            }
        }
        Ok(())
    }

    /// What the backend needs to mount a sandbox's volumes.
    pub(super) async fn spec_volumes(
        &self,
        mounts: &[VolumeMount],
    ) -> Result<Vec<SpecVolume>, String> {
        let mut out = Vec::new();
        for m in mounts {
            let size_mb = match self.inner.store.get_volume(&m.name).await {
                Ok(Some((size, _, _))) => size,
                Ok(None) => return Err(format!("volume {} is gone", m.name)),
                Err(e) => return Err(e.to_string()),
            };
            out.push(SpecVolume {
                name: m.name.clone(),
                size_mb,
                path: m.path.clone(),
                read_only: m.read_only,
            });
        }
        Ok(out)
    }
}
