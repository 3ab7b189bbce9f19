//! Forks: a new sandbox made paused from another's pause image. The image and the disk are
//! copied (the disk extent for extent, so the receipt's hashes hold for the copy), the new
//! sandbox gets its own network and bundle, and a resume restores it at its own address:
//! gVisor's network stack takes the namespace's addresses at restore; under runc the fork's
//! address replaces the source's that CRIU restores.
use std::fs;
use std::path::{Path, PathBuf};

use warren_api::PauseReceipt;

use super::{step, LocalBackend, LocalError, SandboxSpec};
use crate::receipt::{copy_extents, MANIFEST};

pub use warren_backend::ForkFrom;

/// Copies `image` (its files; none when absent) into `to_image` and `disk` to `to_disk`.
fn copy_state(image: &Path, disk: &Path, to_image: &Path, to_disk: &Path) -> std::io::Result<()> {
    if image.is_dir() {
        fs::create_dir_all(to_image)?;
        for entry in fs::read_dir(image)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::copy(entry.path(), to_image.join(entry.file_name()))?;
            }
        }
    }
    copy_extents(disk, to_disk)
}

impl LocalBackend {
    /// Where snapshot `name` is kept.
    pub fn snapshot_dir(&self, name: &str) -> PathBuf {
        self.cfg.data_dir.join("snapshots").join(name)
    }

    fn state_of(&self, from: ForkFrom<'_>) -> (PathBuf, PathBuf) {
        match from {
            ForkFrom::Sandbox(id) => (self.pause_dir(id), self.disk(id).image),
            ForkFrom::Snapshot(name) => {
                let dir = self.snapshot_dir(name);
                (dir.join("memory"), dir.join("disk.img"))
            }
        }
    }

    /// Keeps a paused sandbox's disk (and, with `memory`, its pause image) as snapshot
    /// `name`: written aside, then moved into place whole. Its receipt.
    pub async fn save_snapshot(
        &self,
        id: &str,
        name: &str,
        memory: bool,
    ) -> Result<PauseReceipt, LocalError> {
        let receipt = self.pause_receipt(id)?;
        let (image, disk) = self.state_of(ForkFrom::Sandbox(id));
        let done = self.snapshot_dir(name);
        let partial = done.with_extension("partial");
        let keep = receipt.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if partial.exists() {
                fs::remove_dir_all(&partial)?;
            }
            fs::create_dir_all(&partial)?;
            let image = if memory { image } else { PathBuf::new() };
            copy_state(
                &image,
                &disk,
                &partial.join("memory"),
                &partial.join("disk.img"),
            )?;
            let text = serde_json::to_vec_pretty(&keep).map_err(std::io::Error::other)?;
            fs::write(partial.join(MANIFEST), text)?;
            fs::rename(&partial, &done)
        })
        .await
        .map_err(|e| step("snapshot")(e.to_string()))?
        .map_err(|e| step("snapshot")(format!("copying: {e}")))?;
        let mut receipt = receipt;
        if let Some(offsite) = &self.cfg.offsite {
            let (key, dir) = (snapshot_key(name), self.snapshot_dir(name));
            match offsite
                .put(&key, &dir, Some("memory"), &dir.join("disk.img"))
                .await
            {
                Ok(_) => receipt.stored = Some(offsite.url_of(&key)),
                Err(e) => tracing::warn!("snapshot {name} kept only here: {e}"),
            }
        }
        Ok(receipt)
    }

    /// Fetches snapshot `name` from the object store when this host has none (another
    /// server sharing the database and the store made it). Nothing to fetch is no error here.
    async fn fetch_snapshot(&self, name: &str) -> Result<(), LocalError> {
        let Some(offsite) = &self.cfg.offsite else {
            return Ok(());
        };
        let done = self.snapshot_dir(name);
        if done.join(MANIFEST).is_file() {
            return Ok(());
        }
        let key = snapshot_key(name);
        let partial = done.with_extension("partial");
        let disk = partial.join("disk.img");
        let fetched = offsite.fetch_whole(&key, &done, &partial, &disk);
        fetched.await.map(|_| ()).map_err(|e| {
            step("snapshot")(format!(
                "fetching snapshot {name} from {}: {e}",
                offsite.url_of(&key)
            ))
        })
    }

    /// Removes snapshot `name`'s files (and its copy in the object store).
    pub fn remove_snapshot(&self, name: &str) -> std::io::Result<()> {
        self.discard_offsite(snapshot_key(name));
        match fs::remove_dir_all(self.snapshot_dir(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Gives a new sandbox a copy of a snapshot's disk, before it is provisioned.
    pub async fn seed_disk(&self, id: &str, snapshot: &str) -> Result<(), LocalError> {
        self.fetch_snapshot(snapshot).await?;
        let (_, from) = self.state_of(ForkFrom::Snapshot(snapshot));
        let to = self.disk(id).image;
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = to.parent() {
                fs::create_dir_all(dir)?;
            }
            copy_extents(&from, &to)
        })
        .await
        .map_err(|e| step("rootfs")(e.to_string()))?
        .map_err(|e| step("rootfs")(format!("copying the snapshot's disk: {e}")))
    }

    /// Makes `spec`'s sandbox a paused copy of `from`'s state: its pause image and disk
    /// copied, its network made, its bundle written. Returns the copied receipt. On failure
    /// the caller releases what was made.
    pub async fn prepare_fork(
        &self,
        spec: &SandboxSpec,
        from: ForkFrom<'_>,
    ) -> Result<PauseReceipt, LocalError> {
        if let ForkFrom::Snapshot(name) = from {
            self.fetch_snapshot(name).await?;
        }
        let (image, disk) = self.state_of(from);
        let (to_image, to_disk) = (self.pause_dir(&spec.id), self.disk(&spec.id).image);
        tokio::task::spawn_blocking(move || copy_state(&image, &disk, &to_image, &to_disk))
            .await
            .map_err(|e| step("fork")(e.to_string()))?
            .map_err(|e| step("fork")(format!("copying the pause image: {e}")))?;
        let receipt = self.pause_receipt(&spec.id)?;
        let lease = self.ready_network(spec).await?;
        self.fetch_volumes(spec).await?;
        let binds = self.mount_volumes(spec)?;
        self.write_bundle_for(spec, &lease, &binds)?;
        debug_assert!(self.pause_dir(&spec.id).join(MANIFEST).exists());
        Ok(receipt)
    }
}

/// The object-store key of a snapshot.
fn snapshot_key(name: &str) -> String {
    format!("snapshots/{name}")
}
