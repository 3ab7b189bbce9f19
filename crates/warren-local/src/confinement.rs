//! What a sandbox's processes may do to the kernel beyond their namespaces: capabilities, the
//! devices cgroup's allowlist, the seccomp filter (runc only: gVisor's sentry filters its own
//! host calls) and the user-namespace mapping of runc sandboxes.
use std::collections::HashSet;

use oci_spec::runtime::{
    Arch, Capability, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxIdMapping,
    LinuxIdMappingBuilder, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

/// Docker's default capability set without `MKNOD` (no device nodes: the devices cgroup denies
/// them anyway, and under runc a node of a host device was the way to its contents) and
/// without `NET_RAW` (no raw packets; ICMP echo still works through `ping_group_range`).
pub const CAPABILITIES: [Capability; 12] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The capability set as the builder wants it.
pub fn capabilities() -> HashSet<Capability> {
    CAPABILITIES.into_iter().collect()
}

/// Character devices a sandbox may use, as (major, minor; `None` = any): the OCI runtime
/// spec's default devices (null, zero, full, random, urandom, tty, ptmx) and the pseudo
/// terminals. Everything else (block devices, `/dev/kvm`, `/dev/net/tun`, `/dev/kmsg`, ...)
/// is denied.
pub const ALLOWED_CHAR_DEVICES: [(i64, Option<i64>); 8] = [
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(2)),
    (136, None),
];

/// The devices cgroup's rules: deny all, then allow [`ALLOWED_CHAR_DEVICES`].
pub fn device_rules() -> Result<Vec<LinuxDeviceCgroup>, oci_spec::OciSpecError> {
    let mut rules = vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?];
    for (major, minor) in ALLOWED_CHAR_DEVICES {
        let mut rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(major)
            .access("rwm");
        if let Some(minor) = minor {
            rule = rule.minor(minor);
        }
        rules.push(rule.build()?);
    }
    Ok(rules)
}

/// Syscalls Docker's default profile refuses to a container without extra capabilities:
/// kernel modules and keyrings, clocks, reboot and swap, mounts and namespaces, BPF and perf,
/// handle-based opens (the classic escape through `open_by_handle_at`), NUMA policy,
/// `userfaultfd` and io_uring. Docker allows a
/// list instead; a denylist of the same calls keeps new, harmless syscalls working.
const DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "_sysctl",
];

/// `clone` flags that make namespaces; `clone` with any of them is refused, as in Docker.
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The seccomp filter of runc sandboxes: allow by default, refuse [`DENIED`] with `EPERM`,
/// `clone` with a namespace flag with `EPERM`, and `clone3` with `ENOSYS` (its flags sit in
/// memory a filter cannot read; C libraries fall back to `clone` on `ENOSYS`, as under Docker).
pub fn seccomp() -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    let eperm = |names: Vec<String>| -> Result<LinuxSyscall, oci_spec::OciSpecError> {
        LinuxSyscallBuilder::default()
            .names(names)
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::EPERM as u32)
            .build()
    };
    let mut syscalls = vec![eperm(DENIED.iter().map(|s| (*s).to_owned()).collect())?];
    // Rules for one syscall are alternatives: one rule per flag refuses any of them.
    for flag in CLONE_NAMESPACE_FLAGS {
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_owned()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::EPERM as u32)
                .args(vec![LinuxSeccompArgBuilder::default()
                    .index(0usize)
                    .value(flag)
                    .value_two(flag)
                    .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                    .build()?])
                .build()?,
        );
    }
    syscalls.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_owned()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::ENOSYS as u32)
            .build()?,
    );
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(syscalls)
        .build()
}

/// First host uid (and gid) of runc sandboxes' user namespace: root inside is this uid on the
/// host, so a file a sandbox makes setuid-root is setuid to an unprivileged uid outside. High
/// enough to miss the ranges `useradd` hands out in `/etc/subuid` (100000 + 65536·n).
pub const USERNS_HOST_BASE: u32 = 1_000_000_000;
/// How many ids the namespace maps (0..65535 inside).
pub const USERNS_SIZE: u32 = 65_536;

/// The uid/gid mapping of runc sandboxes: 0..[`USERNS_SIZE`] inside to
/// [`USERNS_HOST_BASE`].. outside.
pub fn id_mappings() -> Result<Vec<LinuxIdMapping>, oci_spec::OciSpecError> {
    Ok(vec![LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(USERNS_HOST_BASE)
        .size(USERNS_SIZE)
        .build()?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_refuses_escapes_and_keeps_clone() {
        let s = seccomp().expect("profile");
        let calls = s.syscalls().clone().unwrap_or_default();
        let denied: Vec<&String> = calls.iter().flat_map(|c| c.names()).collect();
        for name in [
            "mount",
            "unshare",
            "setns",
            "open_by_handle_at",
            "bpf",
            "keyctl",
        ] {
            assert!(denied.iter().any(|n| n.as_str() == name), "{name}");
        }
        // Plain `clone` (fork, threads) stays allowed: only rules with a flag argument.
        assert!(calls
            .iter()
            .filter(|c| c.names().iter().any(|n| n == "clone"))
            .all(|c| c.args().as_ref().is_some_and(|a| a.len() == 1)));
        assert!(!CAPABILITIES.contains(&Capability::Mknod));
        assert!(!CAPABILITIES.contains(&Capability::NetRaw));
    }
}
