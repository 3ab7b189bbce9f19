//! Warren's local backend: everything a sandbox needs on this host and nothing of HTTP.
//! Images (tar import, safe unpack), the overlay rootfs, network namespaces and veths, the OCI
//! bundle, the `runsc`/`crun` driver and cgroups, each with one owner type whose `release` is
//! idempotent, so cleanup after a failure or a crash is the same path as a normal delete.
#![deny(missing_docs)]

pub mod backend;
pub mod bundle;
pub mod cgroup;
pub mod confinement;
pub mod criu;
pub mod disk;
pub mod egress;
pub mod firewall;
pub mod host;
pub mod idmap;
pub mod images;
pub mod net;
pub mod netpool;
pub mod offsite;
pub mod pull;
pub mod receipt;
pub mod rootfs;
pub mod runtime;
pub mod unpack;
pub mod volumes;

pub use backend::{
    ForkFrom, LocalBackend, LocalConfig, LocalError, LocalLayers, Provisioned, SandboxSpec,
    SpecVolume,
};
pub use firewall::{EgressPolicy, EgressRules};
