//! `warren volume`: named volumes that outlive sandboxes.
use clap::Subcommand;
use warren_api::{CreateVolume, Volume, VolumeBackup, VolumeList, VolumeMount};

use crate::{named, ClientOpts};

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Make a volume of a fixed size (writes past it fail with "no space left on device").
    Create {
        /// Its name (a-z, 0-9, '-', '_').
        name: String,
        /// Its size in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mb: u64,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List volumes, with their use and the sandboxes mounting them.
    Ls {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Send a copy of a volume to the server's object store (`serve --object-store`), where
    /// another server sharing the store and the database finds it; a pause sends the
    /// volumes of the sandbox it pauses too. Writes to the volume wait while it is copied.
    Backup {
        /// Its name.
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Remove a volume and its files (refused while a sandbox mounts it).
    Rm {
        /// Its name.
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

/// `NAME:/path` or `NAME:/path:ro`.
pub fn parse_mount(s: &str) -> Result<VolumeMount, String> {
    let mut parts = s.splitn(3, ':');
    let (Some(name), Some(path)) = (parts.next(), parts.next()) else {
        return Err(format!("{s:?}: expected NAME:/path or NAME:/path:ro"));
    };
    let read_only = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => return Err(format!("{s:?}: {other:?} is neither ro nor rw")),
    };
    Ok(VolumeMount {
        name: name.to_owned(),
        path: path.to_owned(),
        read_only,
    })
}

fn line(v: &Volume) -> String {
    let used = v
        .used_bytes
        .map_or("-".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6));
    format!(
        "{:<24} {:>8} MiB {:>10}  {}",
        v.name,
        v.size_mb,
        used,
        if v.used_by.is_empty() {
            "-".to_owned()
        } else {
            v.used_by.join(",")
        }
    )
}

pub async fn run(c: VolumeCommand) -> anyhow::Result<()> {
    match c {
        VolumeCommand::Create {
            name,
            size_mb,
            opts,
        } => {
            let body = CreateVolume {
                name,
                size_mb: Some(size_mb),
            };
            named::create(&opts, "/v1/volumes", &body, line).await
        }
        VolumeCommand::Ls { opts } => {
            let header = format!("{:<24} {:>12} {:>10}  USED BY", "NAME", "SIZE", "USED");
            named::list(
                &opts,
                "/v1/volumes",
                &header,
                |l: &VolumeList| &l.volumes,
                line,
            )
            .await
        }
        VolumeCommand::Backup { name, opts } => {
            let path = format!("/v1/volumes/{name}/backup");
            named::post(&opts, &path, None::<&()>, |b: &VolumeBackup| {
                format!(
                    "{} sent to {}: {:.1} MB in {} ms",
                    b.name,
                    b.stored,
                    b.bytes as f64 / 1e6,
                    b.took_ms
                )
            })
            .await
        }
        VolumeCommand::Rm { name, opts } => named::remove(&opts, "/v1/volumes", &name).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse() {
        let m = parse_mount("data:/mnt/data:ro").expect("parses");
        assert_eq!(
            (m.name.as_str(), m.path.as_str(), m.read_only),
            ("data", "/mnt/data", true)
        );
        assert!(!parse_mount("data:/x").expect("parses").read_only);
        assert!(parse_mount("data").is_err());
        assert!(parse_mount("data:/x:rx").is_err());
    }
}
