//! Forks: a new sandbox made paused from another's pause image. The image and the disk are
//! copied (the disk extent for extent, so the receipt's hashes hold for the copy), the new
//! sandbox gets its own network and bundle, and a resume restores it at its own address:
//! gVisor's network stack takes the namespace's addresses at restore.
use std::fs;

use warren_api::{PauseReceipt, Runtime};

use super::{step, LocalBackend, LocalError, SandboxSpec};
use crate::receipt::{copy_extents, MANIFEST};

impl LocalBackend {
    /// Makes `spec`'s sandbox a paused copy of `source`'s pause image: its pause image and
    /// disk copied, its network made, its bundle written. Returns the copied receipt. On
    /// failure the caller releases what was made.
    pub async fn prepare_fork(
        &self,
        spec: &SandboxSpec,
        source: &str,
    ) -> Result<PauseReceipt, LocalError> {
        if spec.runtime != Runtime::Gvisor {
            return Err(LocalError::Unsupported(
                "only gVisor sandboxes can be forked with their memory".into(),
            ));
        }
        let (from_image, to_image) = (self.pause_dir(source), self.pause_dir(&spec.id));
        let (from_disk, to_disk) = (self.disk(source).image, self.disk(&spec.id).image);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            fs::create_dir_all(&to_image)?;
            for entry in fs::read_dir(&from_image)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    fs::copy(entry.path(), to_image.join(entry.file_name()))?;
                }
            }
            copy_extents(&from_disk, &to_disk)
        })
        .await
        .map_err(|e| step("fork")(e.to_string()))?
        .map_err(|e| step("fork")(format!("copying the pause image: {e}")))?;
        let receipt = self.pause_receipt(&spec.id)?;
        let lease = self.ready_network(spec).await?;
        let binds = self.mount_volumes(spec)?;
        self.write_bundle_for(spec, &lease, &binds)?;
        debug_assert!(self.pause_dir(&spec.id).join(MANIFEST).exists());
        Ok(receipt)
    }
}
