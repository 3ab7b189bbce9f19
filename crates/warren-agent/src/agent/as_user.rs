//! Filesystem work done with the acting user's own credentials, so that every permission
//! decision (mode bits, ACLs, sticky directories, read-only mounts) is the kernel's, exactly as
//! for that user's own `cat` or `tee`, and what the work creates is born owned by the user.
//!
//! Work for the agent's own user (root, in a sandbox) runs on tokio's blocking pool as it
//! always did. Anyone else's runs on a fresh thread that first drops its credentials to the
//! user's and ends with the work. Credentials are per thread at the kernel level (the C
//! library's process-wide `setuid` is a broadcast done in user space), and rustix's
//! `set_thread_*` make the raw calls, so only that thread changes. It drops real, effective and
//! saved ids alike, losing every capability, so nothing it runs can get root back; and since
//! the thread ends with the work, no other work ever runs on a thread that was not root.
//! `setfsuid` would leave the other ids alone, but gVisor does not implement it (ENOSYS);
//! `setresuid`, `setresgid` and `setgroups` are per task there as in Linux.

use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid, Gid, Uid};
use tokio::sync::oneshot;

use warren_agent::connect::{code, ConnectError};

use super::users::User;

/// Runs `work` as `user` off the async runtime and returns its result.
pub async fn run<T: Send + 'static>(
    user: &User,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ConnectError> {
    if user.uid == nix::unistd::geteuid().as_raw() {
        return tokio::task::spawn_blocking(work).await.map_err(|e| {
            ConnectError::new(code::INTERNAL, format!("filesystem task failed: {e}"))
        });
    }
    let ids = Ids::of(user)?;
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("as-uid-{}", ids.uid))
        .spawn(move || {
            let result = ids.assume().map(|()| work());
            // The receiver is gone only if the request was abandoned; nothing to tell then.
            let _ = tx.send(result);
        })
        .map_err(|e| {
            ConnectError::new(
                code::UNAVAILABLE,
                format!("cannot start a thread to act as {}: {e}", user.name),
            )
        })?;
    rx.await.map_err(|_| {
        ConnectError::new(
            code::INTERNAL,
            format!("the filesystem task acting as {} failed", user.name),
        )
    })?
}

/// The ids a thread takes on.
struct Ids {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Ids {
    fn of(user: &User) -> Result<Ids, ConnectError> {
        // -1 means "leave unchanged" to the set*id calls: the thread would stay root.
        if user.uid == u32::MAX || user.gid == u32::MAX || user.groups.contains(&u32::MAX) {
            return Err(ConnectError::new(
                code::INVALID_ARGUMENT,
                format!("user '{}' has the reserved id -1", user.name),
            ));
        }
        Ok(Ids {
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
        })
    }

    /// Makes the calling thread, and only it, this user for good.
    fn assume(&self) -> Result<(), ConnectError> {
        let failed = |what: &str, e: rustix::io::Errno| {
            ConnectError::new(
                code::PERMISSION_DENIED,
                format!("cannot act as uid {}: {what}: {e}", self.uid),
            )
        };
        let groups: Vec<Gid> = self.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        let gid = Gid::from_raw(self.gid);
        let uid = Uid::from_raw(self.uid);
        // Groups before gid before uid: each step needs the privilege the next one drops.
        set_thread_groups(&groups).map_err(|e| failed("setgroups", e))?;
        set_thread_res_gid(gid, gid, gid).map_err(|e| failed("setresgid", e))?;
        set_thread_res_uid(uid, uid, uid).map_err(|e| failed("setresuid", e))?;
        // getresuid is per thread too: check the switch really took before doing anything.
        let now = nix::unistd::getresuid().map_err(|e| {
            ConnectError::new(code::INTERNAL, format!("cannot read the thread's ids: {e}"))
        })?;
        if [now.real, now.effective, now.saved]
            .iter()
            .any(|id| id.as_raw() != self.uid)
        {
            return Err(ConnectError::new(
                code::INTERNAL,
                format!("the thread did not become uid {}", self.uid),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn nobody() -> User {
        User {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            home: "/".into(),
        }
    }

    #[tokio::test]
    async fn work_runs_as_the_user_and_the_rest_of_the_process_stays_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("warren-as-user-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "s").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();

        let path = secret.clone();
        let read = run(&nobody(), move || std::fs::read(&path)).await.unwrap();
        assert_eq!(
            read.unwrap_err().kind(),
            std::io::ErrorKind::PermissionDenied
        );
        let made = dir.join("made");
        let target = made.clone();
        run(&nobody(), move || std::fs::write(&target, "n"))
            .await
            .unwrap()
            .unwrap();
        let meta = std::fs::metadata(&made).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        // Neither this thread nor the blocking pool changed.
        assert!(nix::unistd::getresuid().unwrap().saved.is_root());
        assert_eq!(std::fs::read(&secret).unwrap(), b"s");
        let root = User {
            uid: 0,
            gid: 0,
            groups: vec![0],
            ..nobody()
        };
        let path = secret.clone();
        let read = run(&root, move || std::fs::read(&path)).await.unwrap();
        assert_eq!(read.unwrap(), b"s");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_reserved_id_is_refused() {
        let user = User {
            uid: u32::MAX,
            ..nobody()
        };
        let e = run(&user, || ()).await.unwrap_err();
        assert_eq!(e.code, code::INVALID_ARGUMENT);
    }
}
