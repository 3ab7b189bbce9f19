//! The static agent binary carried inside the `warren` binary, written out once per version
//! to `<data>/bin/` so it can be bind-mounted into sandboxes.
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

static AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/warren-agent"));

/// The agent binary itself (static, for any Linux of this architecture).
pub fn bytes() -> &'static [u8] {
    AGENT
}

/// Writes the agent under `data_dir/bin/` (named by its hash) and returns its path.
pub fn install(data_dir: &Path) -> std::io::Result<PathBuf> {
    let hash = hex::encode(Sha256::digest(AGENT));
    let dir = data_dir.join("bin");
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("warren-agent-{}", &hash[..16]));
    if path.is_file() {
        return Ok(path);
    }
    // Write then rename, so a sandbox never mounts a half-written binary.
    let tmp = dir.join(format!(".warren-agent-{}.tmp", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(AGENT)?;
    f.sync_all()?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, &path)?;
    Ok(path)
}
