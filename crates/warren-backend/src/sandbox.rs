//! What a sandbox is made from and what a backend says of it.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use warren_api::Runtime;

use crate::egress::EgressPolicy;

/// The port Warren's agent listens on inside every sandbox, on the sandbox's own address.
pub const AGENT_PORT: u16 = 49983;

/// What a sandbox is made from.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Sandbox id.
    pub id: String,
    /// Runtime.
    pub runtime: Runtime,
    /// The image's layers by digest (`sha256:<hex>`), bottom first, as the layer store holds
    /// them.
    pub layers: Vec<String>,
    /// The reference a node can pull the image by, pinned to its manifest digest
    /// (`host/repo:tag@sha256:<hex>`), when it came from a registry; `None` for an image
    /// imported or built here. Backends that pull images themselves run this.
    pub image_ref: Option<String>,
    /// The team the sandbox belongs to (backends that keep teams apart by namespace use it).
    pub team: String,
    /// CPU cores.
    pub cpu: f64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Process limit.
    pub pids: u64,
    /// Size of its own disk (what it may write), MiB.
    pub disk_mb: u64,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Main command.
    pub cmd: Vec<String>,
    /// Its working directory.
    pub cwd: String,
    /// The default user inside.
    pub user: String,
    /// The agent's token.
    pub token: String,
    /// Its address slot (see [`crate::Backend::net_ip`]).
    pub net_index: u32,
    /// What it may reach outside.
    pub egress: EgressPolicy,
    /// Volumes to mount.
    pub volumes: Vec<SpecVolume>,
}

/// A volume in a [`SandboxSpec`].
#[derive(Debug, Clone)]
pub struct SpecVolume {
    /// Its name.
    pub name: String,
    /// Its size, MiB (made with it if it does not exist yet).
    pub size_mb: u64,
    /// Where it appears inside.
    pub path: String,
    /// Read-only.
    pub read_only: bool,
}

/// A provisioned, started sandbox.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Where its agent listens.
    pub agent_addr: SocketAddr,
    /// How long each step took, in order (the backend names its steps).
    pub steps: Vec<(&'static str, Duration)>,
}

/// Where a fork or a sandbox made from a snapshot takes its state from.
#[derive(Debug, Clone, Copy)]
pub enum ForkFrom<'a> {
    /// A paused sandbox's pause image and disk.
    Sandbox(&'a str),
    /// A snapshot's.
    Snapshot(&'a str),
}

/// What the runtime says of a sandbox's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    /// Created, not started.
    Created,
    /// Its init process runs.
    Running,
    /// Frozen.
    Paused,
    /// Its init process is gone.
    Stopped,
    /// The runtime knows no such container.
    Missing,
}

/// What a sandbox has used: CPU time so far and memory now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time consumed since the sandbox started, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory charged now (page cache included), in bytes.
    pub memory_bytes: u64,
    /// The page-cache part of `memory_bytes`.
    pub cache_bytes: u64,
}

/// A volume's backup in the object store.
#[derive(Debug, Clone)]
pub struct VolumeBackup {
    /// Where it is.
    pub stored: String,
    /// Bytes sent (its filesystem's data; holes are not sent).
    pub bytes: u64,
}
