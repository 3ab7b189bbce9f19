//! How a process's end is reported: the way Go's `os.ProcessState` (and so envd) describes a
//! wait status, which E2B's SDKs show to users verbatim.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use warren_agent::ProcessEvent;

/// Go's names for Linux signals (`syscall.Signal.String()`), indexed by signal number.
const GO_SIGNAL_NAMES: [&str; 32] = [
    "",
    "hangup",
    "interrupt",
    "quit",
    "illegal instruction",
    "trace/breakpoint trap",
    "aborted",
    "bus error",
    "floating point exception",
    "killed",
    "user defined signal 1",
    "segmentation fault",
    "user defined signal 2",
    "broken pipe",
    "alarm clock",
    "terminated",
    "stack fault",
    "child exited",
    "continued",
    "stopped (signal)",
    "stopped",
    "stopped (tty input)",
    "stopped (tty output)",
    "urgent I/O condition",
    "CPU time limit exceeded",
    "file size limit exceeded",
    "virtual timer expired",
    "profiling timer expired",
    "window changed",
    "I/O possible",
    "power failure",
    "bad system call",
];

/// Go's name for signal `signo`.
pub fn go_signal_name(signo: i32) -> String {
    usize::try_from(signo)
        .ok()
        .and_then(|i| GO_SIGNAL_NAMES.get(i))
        .filter(|name| !name.is_empty())
        .map(|name| (*name).to_owned())
        .unwrap_or_else(|| format!("signal {signo}"))
}

/// Go's `ProcessState.String()`: `exit status 3`, `signal: killed`, `signal: aborted (core dumped)`.
pub fn describe(status: ExitStatus) -> String {
    let mut text = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signo)) => format!("signal: {}", go_signal_name(signo)),
        (None, None) => format!("unknown wait status {}", status.into_raw()),
    };
    if status.core_dumped() {
        text.push_str(" (core dumped)");
    }
    text
}

/// The `end` event for a process that was waited for. Like envd, `error` repeats the status
/// whenever the process did not exit with 0 (that is Go's `exec.ExitError` text).
pub fn end_event(status: ExitStatus) -> ProcessEvent {
    let text = describe(status);
    ProcessEvent::End {
        exit_code: status.code().unwrap_or(-1),
        exited: status.code().is_some(),
        error: (!status.success()).then(|| text.clone()),
        status: text,
    }
}

/// The `end` event when waiting for the process failed.
pub fn wait_failed(error: &std::io::Error) -> ProcessEvent {
    ProcessEvent::End {
        exit_code: -1,
        exited: false,
        status: String::new(),
        error: Some(format!("waiting for the process failed: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_signals_read_like_go() {
        // Raw wait statuses: exit code in bits 8..16, signal in bits 0..7, core flag 0x80.
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit status 3");
        assert_eq!(describe(ExitStatus::from_raw(9)), "signal: killed");
        assert_eq!(describe(ExitStatus::from_raw(15)), "signal: terminated");
        assert_eq!(
            describe(ExitStatus::from_raw(6 | 0x80)),
            "signal: aborted (core dumped)"
        );
        assert_eq!(go_signal_name(40), "signal 40");
        assert_eq!(
            end_event(ExitStatus::from_raw(9)),
            ProcessEvent::End {
                exit_code: -1,
                exited: false,
                status: "signal: killed".into(),
                error: Some("signal: killed".into()),
            }
        );
        assert_eq!(
            end_event(ExitStatus::from_raw(0)),
            ProcessEvent::End {
                exit_code: 0,
                exited: true,
                status: "exit status 0".into(),
                error: None,
            }
        );
    }
}
