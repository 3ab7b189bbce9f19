//! PID 1 duties, the tini way: with every handled signal blocked, start the server as a child
//! (a second copy of this binary), then `sigwait` forever: reap every exited child on SIGCHLD
//! (orphans of the whole sandbox land here), forward termination signals to the server, and exit
//! with the server's status when it exits. No threads and no async runtime in this process.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use nix::errno::Errno;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, Pid};

const ROLE_VAR: &str = "WARREN_AGENT_ROLE";
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Whether this process must act as init: it is PID 1 and not already the server child.
pub fn wanted() -> bool {
    getpid().as_raw() == 1 && std::env::var_os(ROLE_VAR).is_none_or(|role| role != "server")
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs the init loop; returns only when the server has exited (or could not be started).
pub fn run() -> ExitCode {
    let mut handled = SigSet::empty();
    handled.add(Signal::SIGCHLD);
    for sig in FORWARDED {
        handled.add(sig);
    }
    // Blocked rather than handled: PID 1 only receives signals it handles or blocks, and a
    // blocked signal waits for `sigwait` instead of interrupting us at a random point.
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled), None) {
        eprintln!("warren-agent: init: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }

    let arg0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| "warren-agent".into());
    // The child inherits our signal mask; the server unblocks everything first thing.
    let spawned = Command::new("/proc/self/exe")
        .arg0(&arg0)
        .env(ROLE_VAR, "server")
        .spawn()
        .or_else(|_| Command::new(&arg0).env(ROLE_VAR, "server").spawn());
    let server = match spawned {
        Ok(child) => child.id(),
        Err(e) => {
            eprintln!("warren-agent: init: cannot start the server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(server) = i32::try_from(server).map(Pid::from_raw) else {
        return ExitCode::FAILURE;
    };

    loop {
        let sig = match handled.wait() {
            Ok(sig) => sig,
            Err(e) => {
                eprintln!("warren-agent: init: sigwait failed: {e}");
                continue;
            }
        };
        if sig != Signal::SIGCHLD {
            // The server may already be gone and unreaped; nothing to do then.
            let _ = kill(server, sig);
            continue;
        }
        if let Some(code) = reap_all(server) {
            return exit_code(code);
        }
    }
}

/// Reaps every exited child; the server's exit code if the server was among them.
fn reap_all(server: Pid) -> Option<i32> {
    let mut server_code = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == server => server_code = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == server => {
                server_code = Some(128 + sig as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return server_code,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("warren-agent: init: waitpid failed: {e}");
                return server_code;
            }
        }
    }
}
