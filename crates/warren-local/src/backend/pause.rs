//! Pause and resume: a sandbox's processes, memory and kernel state written to disk by the
//! runtime's checkpoint, its filesystem unmounted, nothing of it running; and back, at the same
//! address, from an image checked against its receipt first.
//!
//! On disk, in the sandbox's directory: `pausing/` while a checkpoint is written, renamed to
//! `paused/` once its `manifest.json` (the receipt) is written and synced. A crash leaves
//! either a running container and a `pausing/` to discard, or a container that has exited
//! after its checkpoint (runsc stops it only once the image is written) and a `pausing/`
//! to finish; [`LocalBackend::finish_pause`] finishes that.
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;
use warren_api::{PauseReceipt, Runtime};

use super::{step, LocalBackend, LocalError, Provisioned, SandboxSpec, STDERR_LOG, STDOUT_LOG};
use crate::bundle::AGENT_PORT;
use crate::cgroup;
use crate::receipt::{hash_extents, hash_files, MANIFEST};

/// Version of the receipt's format.
const RECEIPT_VERSION: u32 = 1;

fn image_error(e: impl std::fmt::Display) -> LocalError {
    LocalError::PauseImage(e.to_string())
}

/// Writes `receipt` into `dir` and syncs it, so a receipt on disk is a whole one.
fn write_manifest(dir: &Path, receipt: &PauseReceipt) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(receipt).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(MANIFEST))?;
    fs::File::open(dir)?.sync_all()
}

/// A scoped thread's result, a panic in it as an error.
fn joined<T>(r: std::thread::Result<std::io::Result<T>>) -> std::io::Result<T> {
    r.unwrap_or_else(|_| Err(std::io::Error::other("a pause thread panicked")))
}

fn sync_dir_files(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::File::open(entry.path())?.sync_all()?;
        }
    }
    Ok(())
}

/// Whether any process holds a file under `dir` open.
fn open_under(dir: &Path) -> bool {
    if !dir.exists() {
        return false;
    }
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(dir)))
        })
    })
}

/// Gives `dir` and the files in it to `owner`.
fn chown_tree(dir: &Path, owner: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(owner), Some(owner))?;
    for entry in fs::read_dir(dir)? {
        std::os::unix::fs::lchown(entry?.path(), Some(owner), Some(owner))?;
    }
    Ok(())
}

impl LocalBackend {
    /// Where a sandbox's last complete pause image is.
    pub fn pause_dir(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("paused")
    }

    fn pausing_dir(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("pausing")
    }

    /// Whether a checkpoint or restore of the sandbox is running now (one a dead server began
    /// goes on without it).
    pub fn pause_busy(&self, id: &str, runtime: Runtime) -> bool {
        let rt = self.runtime(runtime);
        // The runsc command may be gone while the sandbox still writes the image it was
        // handed: its files are open then.
        rt.busy("checkpoint", id) || rt.busy("restore", id) || open_under(&self.pausing_dir(id))
    }

    /// How long ago the unfinished checkpoint's files last changed (`None` without one).
    pub fn pause_begun_ago(&self, id: &str) -> Option<std::time::Duration> {
        let newest = fs::read_dir(self.pausing_dir(id))
            .ok()?
            .flatten()
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .max()?;
        Some(newest.elapsed().unwrap_or_default())
    }

    /// Whether a checkpoint of the sandbox was begun and not finished.
    pub fn pause_begun(&self, id: &str) -> bool {
        self.pausing_dir(id).exists()
    }

    /// Checkpoints a running sandbox and finishes the pause ([`Self::finish_pause`]), sending
    /// the image to the object store when there is one and `offsite` (not for a pause that
    /// only holds the sandbox still for a copy). When the checkpoint fails the sandbox is left
    /// running as it was.
    pub async fn pause(
        &self,
        id: &str,
        runtime: Runtime,
        net_index: Option<u32>,
        offsite: bool,
    ) -> Result<PauseReceipt, LocalError> {
        let began = Instant::now();
        let dir = self.pausing_dir(id);
        // A checkpoint begun before a crash whose container still runs: it never took.
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| step("checkpoint")(e.to_string()))?;
        }
        let lease = net_index.map(|i| self.net.lease(i));
        let runc = runtime == Runtime::Runc;
        if let Some(lease) = lease.as_ref().filter(|_| runc) {
            lease
                .before_checkpoint()
                .await
                .map_err(|e| step("checkpoint")(e.to_string()))?;
        }
        if let Err(e) = self.runtime(runtime).checkpoint(id, &dir).await {
            self.discard_unfinished_pause(id);
            if let Some(lease) = lease.as_ref().filter(|_| runc) {
                if let Err(e) = lease.after_checkpoint().await {
                    tracing::warn!(sandbox = id, "its ping range after a failed pause: {e}");
                }
            }
            return Err(match e.kind() {
                std::io::ErrorKind::Unsupported => LocalError::Unsupported(e.to_string()),
                _ => step("checkpoint")(e.to_string()),
            });
        }
        self.finish_pause(id, runtime, began, offsite).await
    }

    /// After a checkpoint (also one a crash interrupted, once its container has exited):
    /// removes the container and its cgroup, unmounts its filesystem, hashes both parts,
    /// writes the receipt and makes the image the sandbox's pause image. Keeps the network.
    pub async fn finish_pause(
        &self,
        id: &str,
        runtime: Runtime,
        began: Instant,
        offsite: bool,
    ) -> Result<PauseReceipt, LocalError> {
        let rt = self.runtime(runtime);
        rt.delete(id)
            .await
            .map_err(|e| step("checkpoint")(format!("removing the container: {e}")))?;
        self.wait_processes_gone(id).await;
        cgroup::remove(self.cgroups, &self.cgroups_path(id));
        self.unmount_rootfs(id).map_err(step("rootfs"))?;
        self.wait_disk_closed(id).await;
        let runtime_version = rt
            .version()
            .await
            .map_err(|e| step("checkpoint")(e.to_string()))?;
        let dir = self.pausing_dir(id);
        let disk = self.disk(id).image;
        let done = self.pause_dir(id);
        let (done_dir, disk_image) = (done.clone(), disk.clone());
        let mut receipt = tokio::task::spawn_blocking(move || -> std::io::Result<PauseReceipt> {
            // Written to disk and hashed at once: both read the same page cache.
            let (synced, memory, filesystem) = std::thread::scope(|s| {
                let synced = s.spawn(|| {
                    sync_dir_files(&dir)?;
                    fs::File::open(&disk)?.sync_all()
                });
                let filesystem = s.spawn(|| hash_extents(&disk));
                let memory = hash_files(&dir);
                (joined(synced.join()), memory, joined(filesystem.join()))
            });
            synced?;
            let (memory, filesystem) = (memory?, filesystem?);
            let receipt = PauseReceipt {
                version: RECEIPT_VERSION,
                paused_at: Utc::now(),
                took_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
                runtime,
                runtime_version,
                memory,
                filesystem,
                stored: None,
            };
            write_manifest(&dir, &receipt)?;
            if done.exists() {
                fs::remove_dir_all(&done)?;
            }
            fs::rename(&dir, &done)?;
            Ok(receipt)
        })
        .await
        .map_err(|e| step("receipt")(e.to_string()))?
        .map_err(|e| step("receipt")(e.to_string()))?;
        if let Some(offsite) = self.cfg.offsite.as_ref().filter(|_| offsite) {
            // The pause holds locally either way; a store that fails is named in the log and
            // the receipt says the image is only here.
            let key = pause_key(id);
            let t = Instant::now();
            match offsite.put(&key, &done_dir, None, &disk_image).await {
                Ok(sent) => {
                    tracing::info!(
                        sandbox = id,
                        "pause image sent to {}: {} bytes in {} objects, {} ms",
                        offsite.url_of(&key),
                        sent.bytes,
                        sent.objects,
                        t.elapsed().as_millis()
                    );
                    receipt.stored = Some(offsite.url_of(&key));
                }
                Err(e) => tracing::warn!(sandbox = id, "pause image kept only here: {e}"),
            }
        }
        Ok(receipt)
    }

    /// Fetches the pause image from the object store when this host has none (the sandbox
    /// was paused by another server sharing the store and the database). Nothing to fetch is
    /// no error here: the receipt check names what is missing.
    async fn fetch_pause(&self, id: &str) -> Result<(), LocalError> {
        let Some(offsite) = &self.cfg.offsite else {
            return Ok(());
        };
        if self.pause_dir(id).join(MANIFEST).is_file() {
            return Ok(());
        }
        let key = pause_key(id);
        let (done, staging) = (self.pause_dir(id), self.sandbox_dir(id).join("fetching"));
        let fetched = offsite
            .fetch_whole(&key, &done, &staging, &self.disk(id).image)
            .await;
        match fetched {
            Ok(true) => {
                tracing::info!(
                    sandbox = id,
                    "pause image fetched from {}",
                    offsite.url_of(&key)
                );
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => Err(image_error(format!(
                "fetching the pause image from {}: {e}",
                offsite.url_of(&key)
            ))),
        }
    }

    /// The receipt of the sandbox's pause image, as written.
    pub fn pause_receipt(&self, id: &str) -> Result<PauseReceipt, LocalError> {
        let path = self.pause_dir(id).join(MANIFEST);
        let text = fs::read(&path).map_err(|e| {
            image_error(format!(
                "the pause image has no receipt ({}: {e})",
                path.display()
            ))
        })?;
        serde_json::from_slice(&text).map_err(|e| image_error(format!("its receipt: {e}")))
    }

    /// The receipt, checked to be by this runtime's version.
    async fn trusted_receipt(
        &self,
        id: &str,
        runtime: Runtime,
    ) -> Result<PauseReceipt, LocalError> {
        let receipt = self.pause_receipt(id)?;
        let version = self
            .runtime(runtime)
            .version()
            .await
            .map_err(|e| step("verify")(e.to_string()))?;
        if receipt.runtime != runtime || receipt.runtime_version != version {
            return Err(image_error(format!(
                "the pause image was written by {} ({}); this server runs {runtime} ({version})",
                receipt.runtime, receipt.runtime_version
            )));
        }
        Ok(receipt)
    }

    /// Hashes one part of the pause image (blocking work on its own threads) and compares it
    /// with the receipt's.
    async fn check_part(
        &self,
        id: &str,
        what: &'static str,
        want: &warren_api::ImagePart,
    ) -> Result<(), LocalError> {
        let (dir, disk) = (self.pause_dir(id), self.disk(id).image);
        let got = tokio::task::spawn_blocking(move || match what {
            "memory" => hash_files(&dir),
            _ => hash_extents(&disk),
        })
        .await
        .map_err(|e| step("verify")(e.to_string()))?
        .map_err(|e| image_error(format!("reading the pause image: {e}")))?;
        if *want != got {
            return Err(image_error(format!(
                "the pause image's {what} does not match its receipt ({} bytes, sha256 {}; \
                 the receipt says {} bytes, sha256 {}): refusing to restore it",
                got.bytes, got.sha256, want.bytes, want.sha256
            )));
        }
        Ok(())
    }

    /// Restores a paused sandbox from its pause image, verified first, at its address. On
    /// failure nothing of it runs or is mounted, and the image is kept.
    pub async fn resume(&self, spec: &SandboxSpec) -> Result<Provisioned, LocalError> {
        let began = Instant::now();
        let mut steps = Vec::new();
        self.fetch_pause(&spec.id).await?;
        let receipt = self.trusted_receipt(&spec.id, spec.runtime).await?;
        // The disk first: mounting it writes to it. The memory image is hashed meanwhile the
        // rest is readied, and the restore waits for both.
        self.check_part(&spec.id, "filesystem", &receipt.filesystem)
            .await?;
        let lease = self.net.lease(spec.net_index);
        if !lease.exists() {
            // Paused on another server (or this host restarted): made again, rules and all.
            // What a runc restore that failed left of it (its readied link) goes first.
            lease.release().await;
            self.ready_network(spec).await?;
        }
        // Connections the host kept from before the pause would meet the restored stack's
        // resets: gVisor's stack ends without closing them, and CRIU's lock on the network
        // during a dump keeps the sandbox's closing packets from the host.
        let cut = lease.cut_host_connections();
        // gVisor restores into the lease's namespace, its addresses put back first; CRIU
        // makes the namespace anew and takes a link the host readies for it.
        let relink = async {
            match spec.runtime {
                Runtime::Gvisor => lease.readdress().await,
                Runtime::Runc => lease.ready_for_restore().await,
            }
        };
        let (memory, readdressed, ()) = tokio::join!(
            self.check_part(&spec.id, "memory", &receipt.memory),
            relink,
            cut
        );
        memory?;
        readdressed.map_err(|e| step("network")(e.to_string()))?;
        steps.push(("verify", began.elapsed()));
        // Only now: mounting the disk writes to it (its superblock, its journal).
        let t = Instant::now();
        let res = self.restore(spec).await;
        if res.is_err() {
            self.undo_restore(&spec.id, spec.runtime).await;
        }
        res?;
        steps.push(("restore", t.elapsed()));
        Ok(Provisioned {
            ip: lease.sandbox_ip,
            agent_addr: std::net::SocketAddr::from((lease.sandbox_ip, AGENT_PORT)),
            steps,
        })
    }

    /// Removes what a failed or cut-off restore made (container, cgroup, mounts), keeping
    /// the network and the pause image.
    ///
    /// Its disk was verified before it was mounted, and mounting it wrote to it (superblock,
    /// journal): the receipt's filesystem part is hashed again from what is there now, so the
    /// next resume does not take that for corruption.
    pub async fn undo_restore(&self, id: &str, runtime: Runtime) {
        if let Err(e) = self.runtime(runtime).delete(id).await {
            tracing::warn!(sandbox = id, "removing a failed restore: {e}");
        }
        self.wait_processes_gone(id).await;
        cgroup::remove(self.cgroups, &self.cgroups_path(id));
        let mounted = crate::rootfs::is_mounted(&self.disk(id).mount);
        if self.unmount_rootfs(id).is_err() || !mounted {
            return;
        }
        self.wait_disk_closed(id).await;
        let Ok(mut receipt) = self.pause_receipt(id) else {
            return;
        };
        let (disk, dir) = (self.disk(id).image, self.pause_dir(id));
        let rewritten = tokio::task::spawn_blocking(move || {
            receipt.filesystem = hash_extents(&disk)?;
            write_manifest(&dir, &receipt)
        })
        .await;
        if !matches!(rewritten, Ok(Ok(()))) {
            tracing::warn!(
                sandbox = id,
                "re-hashing its disk after a failed restore: {rewritten:?}"
            );
        }
    }

    async fn restore(&self, spec: &SandboxSpec) -> Result<(), LocalError> {
        self.mount_rootfs(spec)?;
        self.fetch_volumes(spec).await?;
        let binds = self.mount_volumes(spec)?;
        let dir = self.sandbox_dir(&spec.id);
        let lease = self.net.lease(spec.net_index);
        let runc = spec.runtime == Runtime::Runc;
        // Paused by another server, this host has only what it fetched; a runc sandbox's
        // bound files went with its mounts.
        if runc || !dir.join("bundle/config.json").is_file() {
            self.write_bundle_for(spec, &lease, &binds)?;
        }
        let image = self.pause_dir(&spec.id);
        if runc {
            // CRIU reads parts of the image, and opens again the output files it is handed,
            // as the sandbox's root, which is not the host's. (Both stay in the sandbox's
            // 0700 directory.)
            let owner = crate::confinement::USERNS_HOST_BASE;
            let logs = [dir.join(STDOUT_LOG), dir.join(STDERR_LOG)];
            chown_tree(&image, owner)
                .and_then(|()| {
                    logs.iter().try_for_each(|l| {
                        // A fork's are new.
                        fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .mode(0o600)
                            .open(l)?;
                        std::os::unix::fs::chown(l, Some(owner), Some(owner))
                    })
                })
                .map_err(|e| step("restore")(e.to_string()))?;
        }
        if runc {
            let parent = format!("/warren-{}", self.cfg.tag);
            cgroup::ready_parent(self.cgroups, &parent)
                .map_err(|e| step("restore")(format!("the cgroup {parent}: {e}")))?;
        }
        let link = runc.then(|| lease.restore_link());
        let rt = self.runtime(spec.runtime);
        rt.restore(
            &spec.id,
            &dir.join("bundle"),
            &image,
            &dir.join(STDOUT_LOG),
            &dir.join(STDERR_LOG),
            link.as_deref(),
        )
        .await
        .map_err(|e| step("restore")(e.to_string()))?;
        if runc {
            let pid = rt
                .pid(&spec.id)
                .await
                .map_err(|e| step("restore")(e.to_string()))?;
            lease
                .adopt_restored(pid)
                .await
                .map_err(|e| step("network")(e.to_string()))?;
        }
        Ok(())
    }

    /// Runc, after a pause or resume a crash cut off, once its container runs: a restored
    /// one gets its namespace's name and its addresses (`restored`), one whose checkpoint
    /// never took its namespace's settings back.
    pub async fn renew_network(
        &self,
        id: &str,
        runtime: Runtime,
        net_index: Option<u32>,
        restored: bool,
    ) -> Result<(), LocalError> {
        let Some(lease) = net_index.map(|i| self.net.lease(i)) else {
            return Ok(());
        };
        if runtime != Runtime::Runc {
            return Ok(());
        }
        let renewed = if restored {
            let pid = self
                .runtime(runtime)
                .pid(id)
                .await
                .map_err(|e| step("restore")(e.to_string()))?;
            lease.adopt_restored(pid).await
        } else {
            lease.after_checkpoint().await
        };
        renewed.map_err(|e| step("network")(e.to_string()))
    }

    /// Drops the pause image once the sandbox runs again (its files have moved on from it).
    pub fn discard_pause(&self, id: &str) {
        self.discard_offsite(pause_key(id));
        self.discard_unfinished_pause(id);
        for dir in [
            self.pause_dir(id),
            crate::criu::work_dir(&self.pause_dir(id)),
        ] {
            if let Err(e) = fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(sandbox = id, "removing {}: {e}", dir.display());
                }
            }
        }
    }

    /// Waits (up to 10 s) for the killed processes of a sandbox to be gone from its cgroup:
    /// they may still be exiting, and its disk unmounted under them would go lazily and be
    /// written (its journal) after a receipt hashed it.
    pub(crate) async fn wait_processes_gone(&self, id: &str) {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while cgroup::occupied(self.cgroups, &self.cgroups_path(id)) && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Waits (up to 30 s) for the sandbox's disk to be shut down once unmounted: an unmount
    /// goes lazy while anything still holds the filesystem (a process exiting, a copy of the
    /// mount in a namespace another sandbox's runtime is setting up), and ext4 writes its
    /// journal and superblock when it finally goes, which must come before the receipt hashes
    /// the disk.
    async fn wait_disk_closed(&self, id: &str) {
        let disk = self.disk(id);
        let began = Instant::now();
        let deadline = began + std::time::Duration::from_secs(30);
        if !disk.attached() {
            return;
        }
        while disk.attached() {
            if Instant::now() > deadline {
                tracing::warn!(
                    sandbox = id,
                    "its disk is still in use 30 s after its unmount; hashing it as it is"
                );
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tracing::info!(
            sandbox = id,
            "its disk closed {} ms after its unmount",
            began.elapsed().as_millis()
        );
    }

    /// Removes what a checkpoint that never took left (its image directory and CRIU's work
    /// directory), once it is known not to be running.
    pub fn discard_unfinished_pause(&self, id: &str) {
        let dir = self.pausing_dir(id);
        for d in [crate::criu::work_dir(&dir), dir] {
            if let Err(e) = fs::remove_dir_all(&d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(sandbox = id, "removing {}: {e}", d.display());
                }
            }
        }
    }

    /// Removes an image from the object store, in the background (a store that fails is
    /// logged; what it keeps is unreachable garbage, never a sandbox's state).
    pub fn discard_offsite(&self, key: String) {
        let Some(offsite) = self.cfg.offsite.clone() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            if let Err(e) = offsite.delete(&key).await {
                tracing::warn!("removing {}: {e}", offsite.url_of(&key));
            }
        });
    }
}

/// The object-store key of a sandbox's pause image.
pub(super) fn pause_key(id: &str) -> String {
    format!("pauses/{id}")
}
