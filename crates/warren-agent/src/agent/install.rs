//! Install mode: the agent copies itself to a path and exits. Where sandboxes are Pods, an init
//! container of the agent's own image runs it so to put the agent in a volume the sandbox's
//! container (of the user's image, which never holds it) starts from.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Environment variable naming where to install the agent.
pub const INSTALL_VAR: &str = "WARREN_AGENT_INSTALL";

/// The destination, when this run is an install.
pub fn wanted() -> Option<PathBuf> {
    std::env::var_os(INSTALL_VAR).map(PathBuf::from)
}

/// Copies this binary to `dest` (mode 0755, written beside it and renamed into place, so a
/// reader never sees half of it).
pub fn run(dest: &Path) -> ExitCode {
    match install(dest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren-agent: installing to {}: {e}", dest.display());
            ExitCode::FAILURE
        }
    }
}

fn install(dest: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let me = std::env::current_exe()?;
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::copy(&me, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_a_runnable_copy_of_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("warren-agent");
        assert_eq!(run(&dest), ExitCode::SUCCESS);
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read me");
        assert_eq!(std::fs::read(&dest).expect("read copy"), me);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(!dir.path().join("warren-agent.partial").exists());
        assert_eq!(
            run(&dir.path().join("no/such/dir/agent")),
            ExitCode::FAILURE
        );
    }
}
