//! Limits the agent holds for the sandbox from inside: the process count under gVisor (whose
//! host threads share the host cgroup's `pids`, so the sandbox's own limit lives in gVisor's
//! cgroupfs), and under runc an OOM score for every process it starts, so that the memory
//! cgroup's OOM killer takes one of them before the agent.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use tokio::process::Command;

/// gVisor's cgroupfs: the sandbox's own pids controller, seen from inside.
const PIDS_MAX: &str = "/sys/fs/cgroup/pids/pids.max";

/// Caps the sandbox's processes at `pids` (from `WARREN_AGENT_PIDS`), so a fork bomb gets
/// `EAGAIN` instead of exhausting the host threads gVisor itself needs. Failure is reported,
/// not fatal: the host cgroup's limit still holds.
pub fn cap_processes(pids: u64) {
    if let Err(e) = std::fs::write(PIDS_MAX, pids.to_string()) {
        eprintln!("warren-agent: cannot set {PIDS_MAX} to {pids}: {e}");
    }
}

/// `/proc/self/oom_score_adj` contents for started processes, as bytes written between fork
/// and exec (`WARREN_AGENT_CHILD_OOM_SCORE_ADJ`).
static CHILD_OOM_SCORE_ADJ: OnceLock<Vec<u8>> = OnceLock::new();

/// Sets the OOM score every started process gets (once, at start).
pub fn set_child_oom_score_adj(score: i32) {
    let _ = CHILD_OOM_SCORE_ADJ.set(score.to_string().into_bytes());
}

/// Gives `cmd` the OOM score set by [`set_child_oom_score_adj`], if any.
pub fn score_child(cmd: &mut Command) {
    let Some(score) = CHILD_OOM_SCORE_ADJ.get() else {
        return;
    };
    let score: &'static [u8] = score.as_slice();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes raw open/write/close system calls on a
    // static NUL-terminated path and a buffer that lives for the whole program, allocating and
    // locking nothing.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                // Raising one's own score needs no privilege.
                let _ = libc::write(fd, score.as_ptr().cast(), score.len());
                libc::close(fd);
            }
            Ok(())
        });
    }
}
