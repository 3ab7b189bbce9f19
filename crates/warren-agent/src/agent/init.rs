//! PID 1 duties inside the server itself: the sandbox's orphans are re-parented to PID 1, and
//! someone must reap them. The server cannot `waitpid(-1)`: that would also collect the
//! processes it started itself, whose exit statuses tokio waits for. So on every SIGCHLD it
//! reaps only zombies it does not own, found in `/proc`. (Serving from PID 1, rather than
//! forking a second copy of the agent to serve while PID 1 only reaps, saves a fork and an exec
//! of this binary on every sandbox start.)

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{getpid, Pid};
use tokio::signal::unix::{signal, SignalKind};

/// How long after a SIGCHLD the orphans are looked for.
const REAP_DELAY: std::time::Duration = std::time::Duration::from_millis(10);

/// Whether this process is the sandbox's init.
pub fn is_init() -> bool {
    getpid().as_raw() == 1
}

/// `(state, ppid)` from the text of `/proc/<pid>/stat`. The command name is in parentheses and
/// may itself hold spaces and parentheses: the fields start after the last `)`.
fn state_and_parent(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Reaps every zombie child of ours that `owned` does not claim.
fn reap_orphans(owned: &dyn Fn(u32) -> bool) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if state_and_parent(&stat) != Some(('Z', 1)) || owned(pid) {
            continue;
        }
        if let Ok(raw) = i32::try_from(pid) {
            let _ = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// Reaps orphans for as long as the server runs. `owned` must claim every process the server
/// started, from the moment its spawn returns: the caller registers children without an await
/// between spawning and registering, so on this single-threaded runtime this task never sees
/// one unregistered.
pub async fn reap_forever(owned: impl Fn(u32) -> bool) {
    let mut children = match signal(SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warren-agent: init: cannot watch SIGCHLD, orphans will stay zombies: {e}");
            return;
        }
    };
    while children.recv().await.is_some() {
        // A moment later, and once for every SIGCHLD meanwhile: the signal mostly announces an
        // exec's own child, whose answer would otherwise wait behind this walk of /proc (about
        // 0.2 ms under gVisor). An orphan's zombie can wait that long.
        tokio::time::sleep(REAP_DELAY).await;
        while let Some(Some(())) = futures_util::FutureExt::now_or_never(children.recv()) {}
        reap_orphans(&owned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_state_and_parent_past_odd_command_names() {
        assert_eq!(
            state_and_parent("42 (sleep) Z 1 42 42 0 -1"),
            Some(('Z', 1))
        );
        assert_eq!(state_and_parent("7 (a) b (c)) S 3 7 7 0"), Some(('S', 3)));
        assert_eq!(state_and_parent("garbage"), None);
    }
}
