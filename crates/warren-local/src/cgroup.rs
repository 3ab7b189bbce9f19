//! Host cgroup facts: which hierarchy this host runs, the hybrid-mode hugetlb fix crun needs,
//! and reading a sandbox's OOM count and leftovers.
use std::fs;
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Every cgroup hierarchy mounted under `/sys/fs/cgroup` (v1 controllers, `name=systemd`,
/// `unified`): runtimes make a container's directory in each of them, not only in the ones
/// that hold its limits.
fn v1_hierarchies() -> Vec<PathBuf> {
    fs::read_dir(CGROUP_ROOT)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default()
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only v1 hierarchies.
    V1,
    /// v1 controllers plus a v2 hierarchy at `/sys/fs/cgroup/unified`.
    Hybrid,
    /// One unified v2 hierarchy.
    V2,
}

impl CgroupMode {
    /// Reads the host's mode from `/sys/fs/cgroup`.
    pub fn detect() -> CgroupMode {
        if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
            CgroupMode::V2
        } else if Path::new(CGROUP_ROOT)
            .join("unified/cgroup.controllers")
            .exists()
        {
            CgroupMode::Hybrid
        } else {
            CgroupMode::V1
        }
    }
}

/// crun refuses hybrid hosts ("cgroups in hybrid mode not supported") when the hugetlb
/// controller has no v1 hierarchy; mounting one fixes it. A no-op elsewhere.
pub fn fix_hybrid_hugetlb(mode: CgroupMode) -> Result<bool, String> {
    if mode == CgroupMode::V2 {
        return Ok(false);
    }
    let enabled = fs::read_to_string("/proc/cgroups")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().next() == Some("hugetlb") && l.ends_with('1'))
        })
        .unwrap_or(false);
    let dir = Path::new(CGROUP_ROOT).join("hugetlb");
    if !enabled || dir.join("tasks").exists() {
        return Ok(false);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    nix::mount::mount(
        Some("cgroup"),
        &dir,
        Some("cgroup"),
        nix::mount::MsFlags::empty(),
        Some("hugetlb"),
    )
    .map_err(|e| format!("mounting the hugetlb cgroup at {}: {e}", dir.display()))?;
    Ok(true)
}

/// Options of a cgroup2 mount that are the filesystem's own (kept when remounting it).
const CGROUP2_OPTIONS: [&str; 6] = [
    "nsdelegate",
    "favordynmods",
    "memory_localevents",
    "memory_recursiveprot",
    "memory_hugetlb_accounting",
    "pids_localevents",
];

/// Every sandbox start moves a process into its cgroup, and each such move waits for an RCU
/// grace period (the cgroup threadgroup lock's writer side) unless the cgroup2 hierarchy is
/// mounted with `favordynmods`: on a 6.18 kernel that wait was ~11 ms of a ~21 ms
/// `crun run --detach`. The option is global (it covers the v1 hierarchies of a hybrid host
/// too) and lasts until reboot; the kernel's price is slightly slower forks and exits. Remounts
/// the v2 (or hybrid's `unified`) hierarchy with it, keeping its other options; `Ok(false)`
/// when it already had it or the host has no cgroup2 hierarchy.
pub fn favor_dynmods(mode: CgroupMode) -> Result<bool, String> {
    let target = match mode {
        CgroupMode::V1 => return Ok(false),
        CgroupMode::V2 => Path::new(CGROUP_ROOT).to_path_buf(),
        CgroupMode::Hybrid => Path::new(CGROUP_ROOT).join("unified"),
    };
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let Some((flags, options)) = cgroup2_options(&mountinfo, &target.to_string_lossy()) else {
        return Ok(false);
    };
    if options.iter().any(|o| o == "favordynmods") {
        return Ok(false);
    }
    let mut data: Vec<&str> = options.iter().map(String::as_str).collect();
    data.push("favordynmods");
    // A remount sets the mount's own flags to those given: pass the ones it has (nosuid,
    // nodev, noexec, ...) so that only the filesystem's option changes.
    nix::mount::mount(
        None::<&str>,
        &target,
        None::<&str>,
        nix::mount::MsFlags::MS_REMOUNT | flags,
        Some(data.join(",").as_str()),
    )
    .map_err(|e| format!("remounting {} with favordynmods: {e}", target.display()))?;
    Ok(true)
}

/// Whether the host's cgroup2 hierarchy has `favordynmods` (see [`favor_dynmods`]).
pub fn favors_dynmods() -> bool {
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|info| {
        info.lines()
            .filter_map(|l| l.split_once(" - ").map(|(_, r)| r))
            .any(|r| r.starts_with("cgroup2 ") && r.contains("favordynmods"))
    })
}

/// The mount flags and the cgroup2-specific super options of the cgroup2 mount at `target`,
/// from mountinfo (`None` when no cgroup2 is mounted there).
fn cgroup2_options(mountinfo: &str, target: &str) -> Option<(nix::mount::MsFlags, Vec<String>)> {
    use nix::mount::MsFlags;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut left_fields = left.split_whitespace();
        let mount_point = left_fields.nth(4)?;
        let mount_options = left_fields.next()?;
        let mut fields = right.split_whitespace();
        let (fstype, _source, super_options) = (fields.next()?, fields.next()?, fields.next()?);
        if mount_point != target || fstype != "cgroup2" {
            return None;
        }
        let flags = mount_options
            .split(',')
            .filter_map(|o| match o {
                "ro" => Some(MsFlags::MS_RDONLY),
                "nosuid" => Some(MsFlags::MS_NOSUID),
                "nodev" => Some(MsFlags::MS_NODEV),
                "noexec" => Some(MsFlags::MS_NOEXEC),
                "noatime" => Some(MsFlags::MS_NOATIME),
                "nodiratime" => Some(MsFlags::MS_NODIRATIME),
                "relatime" => Some(MsFlags::MS_RELATIME),
                "strictatime" => Some(MsFlags::MS_STRICTATIME),
                _ => None,
            })
            .fold(MsFlags::empty(), |a, f| a | f);
        let options = super_options
            .split(',')
            .filter(|o| CGROUP2_OPTIONS.contains(o))
            .map(str::to_owned)
            .collect();
        Some((flags, options))
    })
}

/// The directories a container with `cgroups_path` (like `/warren-ab12/<id>`) occupies.
pub fn dirs(mode: CgroupMode, cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    match mode {
        CgroupMode::V2 => vec![Path::new(CGROUP_ROOT).join(rel)],
        CgroupMode::V1 | CgroupMode::Hybrid => {
            v1_hierarchies().into_iter().map(|h| h.join(rel)).collect()
        }
    }
}

/// How many times the kernel's OOM killer struck in this cgroup (0 when unknown).
pub fn oom_kills(mode: CgroupMode, cgroups_path: &str) -> u64 {
    let rel = cgroups_path.trim_start_matches('/');
    let (file, key) = match mode {
        CgroupMode::V2 => (
            Path::new(CGROUP_ROOT).join(rel).join("memory.events"),
            "oom_kill",
        ),
        _ => (
            Path::new(CGROUP_ROOT)
                .join("memory")
                .join(rel)
                .join("memory.oom_control"),
            "oom_kill",
        ),
    };
    fs::read_to_string(file)
        .ok()
        .and_then(|s| stat_value(&s, key))
        .unwrap_or(0)
}

/// Makes the parent of the containers' cgroups (`/warren-<tag>`) in every hierarchy, a v1
/// `cpuset` one with its parent's CPUs and memory nodes: a restore whose CRIU makes the
/// sandbox's cgroup below a parent it makes itself gets `EACCES` writing the child's
/// `cpuset.cpus` (not a subset of the parent's, empty). crun fills these in when it makes a
/// container, so only a server whose first runc sandbox is a restore needs this.
pub fn ready_parent(mode: CgroupMode, parent: &str) -> std::io::Result<()> {
    let rel = parent.trim_start_matches('/');
    let roots = match mode {
        CgroupMode::V2 => vec![PathBuf::from(CGROUP_ROOT)],
        CgroupMode::V1 | CgroupMode::Hybrid => v1_hierarchies(),
    };
    for root in roots {
        let dir = root.join(rel);
        fs::create_dir_all(&dir)?;
        for knob in ["cpuset.cpus", "cpuset.mems"] {
            let (mine, above) = (dir.join(knob), root.join(knob));
            if mode == CgroupMode::V2 || !above.exists() {
                continue;
            }
            if fs::read_to_string(&mine)?.trim().is_empty() {
                fs::write(&mine, fs::read_to_string(&above)?.trim())?;
            }
        }
    }
    Ok(())
}

/// Whether any process is still in the container's cgroup (one killed a moment ago may take
/// a while to exit, and holds its mounts until it has).
pub fn occupied(mode: CgroupMode, cgroups_path: &str) -> bool {
    dirs(mode, cgroups_path)
        .iter()
        .any(|d| fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty()))
}

/// Removes the container's cgroup directories the runtime left behind (idempotent).
pub fn remove(mode: CgroupMode, cgroups_path: &str) {
    for d in dirs(mode, cgroups_path) {
        // rmdir, not remove_dir_all: cgroup files cannot be unlinked, the directory can.
        let _ = fs::remove_dir(&d);
    }
}

/// Removes a cgroup and the child cgroups left in it once their tasks are gone, trying again
/// for up to `patience` while the kernel still tears down tasks that were just killed (their
/// cgroups answer EBUSY meanwhile). Blocks: call it off the async threads.
pub fn remove_patiently(mode: CgroupMode, cgroups_path: &str, patience: std::time::Duration) {
    let deadline = std::time::Instant::now() + patience;
    loop {
        for d in dirs(mode, cgroups_path) {
            for child in fs::read_dir(&d).into_iter().flatten().flatten() {
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir(child.path());
                }
            }
            let _ = fs::remove_dir(&d);
        }
        if leftovers(mode, cgroups_path).is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Which of the container's cgroup directories still exist.
pub fn leftovers(mode: CgroupMode, cgroups_path: &str) -> Vec<PathBuf> {
    dirs(mode, cgroups_path)
        .into_iter()
        .filter(|d| d.exists())
        .collect()
}

pub use warren_backend::Usage;

/// Reads the cgroup's usage; `None` once the cgroup is gone.
pub fn usage(mode: CgroupMode, cgroups_path: &str) -> Option<Usage> {
    let rel = cgroups_path.trim_start_matches('/');
    let root = Path::new(CGROUP_ROOT);
    let (cpu_ns, memory_bytes, stat, cache_key) = match mode {
        CgroupMode::V2 => {
            let dir = root.join(rel);
            let usec = stat_value(
                &fs::read_to_string(dir.join("cpu.stat")).ok()?,
                "usage_usec",
            )?;
            (
                usec.saturating_mul(1000),
                read_u64(&dir.join("memory.current"))?,
                fs::read_to_string(dir.join("memory.stat")).unwrap_or_default(),
                "file",
            )
        }
        CgroupMode::V1 | CgroupMode::Hybrid => {
            let memory = root.join("memory").join(rel);
            (
                read_u64(&root.join("cpuacct").join(rel).join("cpuacct.usage"))?,
                read_u64(&memory.join("memory.usage_in_bytes"))?,
                fs::read_to_string(memory.join("memory.stat")).unwrap_or_default(),
                "total_cache",
            )
        }
    };
    Some(Usage {
        cpu_ns,
        memory_bytes,
        cache_bytes: stat_value(&stat, cache_key).unwrap_or(0),
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed cgroup file (`key value` per line).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next().and_then(|n| n.parse().ok()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup2_remount_keeps_the_mount_flags_and_the_filesystems_options() {
        let info = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n\
                    36 24 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,favordynmods\n\
                    37 24 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";
        use nix::mount::MsFlags;
        let own =
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME;
        assert_eq!(
            cgroup2_options(info, "/sys/fs/cgroup"),
            Some((
                own,
                vec!["nsdelegate".to_owned(), "memory_recursiveprot".to_owned()]
            ))
        );
        assert_eq!(
            cgroup2_options(info, "/sys/fs/cgroup/unified"),
            Some((MsFlags::MS_RELATIME, vec!["favordynmods".to_owned()]))
        );
        assert_eq!(cgroup2_options(info, "/sys/fs/cgroup/memory"), None);
        assert_eq!(cgroup2_options(info, "/nowhere"), None);
    }
}
