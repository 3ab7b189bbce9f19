//! Whether a running sandbox's container still runs, without a process spawn: the init
//! process the runtime named once, checked in `/proc` by its pid and start time (a reused
//! pid has another). Only a container not known running, or whose process is gone, costs a
//! `state` call: the reconciler's pass over a thousand idle sandboxes spawns nothing.
use std::collections::HashMap;
use std::sync::Mutex;

use warren_api::Runtime;
use warren_backend::ContainerStatus;

use super::LocalBackend;

/// Container id → (init pid, its start time in clock ticks since boot).
#[derive(Default)]
pub(crate) struct Known(Mutex<HashMap<String, (u32, u64)>>);

impl Known {
    fn get(&self, id: &str) -> Option<(u32, u64)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .copied()
    }

    fn set(&self, id: &str, seen: (u32, u64)) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned(), seen);
    }

    pub(crate) fn forget(&self, id: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

/// A live process's start time (`/proc/<pid>/stat` field 22); `None` when it is gone or a
/// zombie.
fn started(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Field 3 was the state; field 22 is 19 further on.
    fields.nth(18)?.parse().ok()
}

impl LocalBackend {
    /// The runtime's view of a sandbox's container, from `/proc` while its init process is
    /// the one seen running before.
    pub async fn status(&self, id: &str, runtime: Runtime) -> ContainerStatus {
        if let Some((pid, start)) = self.live.get(id) {
            if started(pid) == Some(start) {
                return ContainerStatus::Running;
            }
            self.live.forget(id);
        }
        let rt = self.runtime(runtime);
        let status = match rt.status(id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(sandbox = id, "runtime state: {e}");
                return ContainerStatus::Missing;
            }
        };
        if status == ContainerStatus::Running {
            if let Ok(pid) = rt.pid(id).await {
                if let Some(start) = started(pid) {
                    self.live.set(id, (pid, start));
                }
            }
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_start_time_is_read_and_a_missing_one_is_none() {
        let me = std::process::id();
        let a = started(me).expect("this process runs");
        assert_eq!(started(me), Some(a), "the same process, the same start");
        assert_eq!(started(u32::MAX), None);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        assert!(started(pid).is_some_and(|s| s >= a));
        child.kill().expect("kill");
        child.wait().expect("reaped");
        assert_eq!(started(pid), None, "gone once reaped");
    }
}
