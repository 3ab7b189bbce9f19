//! The exec shim: a started process that needs a new session with a controlling terminal, or
//! another user with supplementary groups, first runs as a copy of this binary which sets that
//! up and then `exec`s the real command. std's `Command` can do neither without `unsafe`
//! `pre_exec` hooks, which this crate forbids; an extra exec of a small static binary is cheap.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use nix::unistd::{setgid, setgroups, setpgid, setsid, setuid, Gid, Pid, Uid};

use super::users::User;

/// Environment variable carrying the shim's instructions; removed before the real exec.
pub const SPEC_VAR: &str = "WARREN_AGENT_EXEC";

/// What the shim does before exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Switch to this user id, primary group and supplementary groups.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
    /// New session with stdin (a terminal) as controlling terminal; else a new process group.
    pub terminal: bool,
}

impl Spec {
    /// The shim's instructions for running as `user`.
    pub fn new(user: &User, terminal: bool) -> Spec {
        Spec {
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            terminal,
        }
    }

    /// `uid gid g1,g2 tty|pgrp`.
    pub fn encode(&self) -> String {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        let mode = if self.terminal { "tty" } else { "pgrp" };
        format!("{} {} {} {mode}", self.uid, self.gid, groups.join(","))
    }

    fn decode(text: &str) -> Option<Spec> {
        let mut parts = text.split(' ');
        let uid = parts.next()?.parse().ok()?;
        let gid = parts.next()?.parse().ok()?;
        let groups = parts
            .next()?
            .split(',')
            .filter(|g| !g.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let terminal = parts.next()? == "tty";
        Some(Spec {
            uid,
            gid,
            groups,
            terminal,
        })
    }
}

/// The shim's instructions if this process is a shim.
pub fn wanted() -> Option<Spec> {
    std::env::var(SPEC_VAR).ok().and_then(|s| Spec::decode(&s))
}

fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("warren-agent: {what}: {e}");
    // 127 and 126 mean to shells what they mean here: could not find, could not run.
    ExitCode::from(126)
}

/// Sets up the process as `spec` says and execs argv[1..]; returns only on failure.
pub fn run(spec: Spec) -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        return fail("exec shim", "no command given");
    };
    if spec.terminal {
        if let Err(e) = setsid() {
            return fail("setsid", e);
        }
        // A session leader without a controlling terminal acquires the first terminal it opens
        // (without O_NOCTTY): reopening stdin, the pty's child side, does exactly that.
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/self/fd/0")
        {
            return fail("cannot make the pty the controlling terminal", e);
        }
    } else if let Err(e) = setpgid(Pid::from_raw(0), Pid::from_raw(0)) {
        return fail("setpgid", e);
    }
    let groups: Vec<Gid> = spec.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    // Groups before gid before uid: each step needs the privilege the next one drops.
    if let Err(e) = setgroups(&groups) {
        return fail("setgroups", e);
    }
    if let Err(e) = setgid(Gid::from_raw(spec.gid)) {
        return fail("setgid", e);
    }
    if let Err(e) = setuid(Uid::from_raw(spec.uid)) {
        return fail("setuid", e);
    }
    let e = Command::new(&program)
        .args(args)
        .env_remove(SPEC_VAR)
        .exec();
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    eprintln!(
        "warren-agent: cannot run {}: {e}",
        program.to_string_lossy()
    );
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips() {
        let spec = Spec {
            uid: 1000,
            gid: 100,
            groups: vec![100, 27],
            terminal: true,
        };
        assert_eq!(Spec::decode(&spec.encode()), Some(spec));
        let bare = Spec {
            uid: 0,
            gid: 0,
            groups: vec![],
            terminal: false,
        };
        assert_eq!(Spec::decode(&bare.encode()), Some(bare));
        assert_eq!(Spec::decode("x"), None);
    }
}
