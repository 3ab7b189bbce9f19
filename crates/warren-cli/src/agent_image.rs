//! `warren agent-image push REF`: the image a Kubernetes backend's init containers copy the
//! agent from. One layer holding `/warren-agent` (the agent this `warren` carries), pushed to
//! a registry the cluster's nodes pull from.
use std::io::Write;

use anyhow::Context;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

/// `warren agent-image` subcommands.
#[derive(clap::Subcommand)]
pub enum AgentImageCommand {
    /// Build the agent image and push it to REF (e.g. registry.example.com/warren/agent:v1);
    /// prints the reference pinned by digest, to give `warren serve --kube-agent-image`.
    Push {
        /// Where to push it.
        reference: String,
        /// Push over plain HTTP (registries on loopback addresses and localhost always are).
        #[arg(long)]
        insecure: bool,
        /// Registry user (with WARREN_REGISTRY_PASSWORD); anonymous without.
        #[arg(long, env = "WARREN_REGISTRY_USER")]
        username: Option<String>,
        /// Print {"reference": ..., "digest": ...}.
        #[arg(long)]
        json: bool,
    },
}

/// The layer: a gzipped tar of `warren-agent`, mode 0755, owned by root; and the digest of
/// the tar itself (the config's diff id).
fn layer(agent: &[u8]) -> anyhow::Result<(Vec<u8>, String)> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(agent.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "warren-agent", agent)?;
    let tar = tar.into_inner()?;
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar)?;
    Ok((gz.finish()?, diff_id))
}

/// This machine's architecture as OCI names it (the agent is built for it).
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn config(diff_id: &str) -> serde_json::Value {
    serde_json::json!({
        "architecture": architecture(),
        "os": "linux",
        "config": {"Entrypoint": ["/warren-agent"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
}

fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Runs `warren agent-image`.
pub async fn run(cmd: AgentImageCommand) -> anyhow::Result<()> {
    let AgentImageCommand::Push {
        reference,
        insecure,
        username,
        json,
    } = cmd;
    let target: Reference = reference
        .parse()
        .with_context(|| format!("{reference:?} is not an image reference"))?;
    let registry = target.resolve_registry().to_owned();
    let protocol = if insecure || is_loopback(&registry) {
        ClientProtocol::HttpsExcept(vec![registry.clone()])
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        ..Default::default()
    });
    let auth = match username {
        Some(user) => {
            let password = std::env::var("WARREN_REGISTRY_PASSWORD")
                .context("--username needs WARREN_REGISTRY_PASSWORD")?;
            RegistryAuth::Basic(user, password)
        }
        None => RegistryAuth::Anonymous,
    };
    let (data, diff_id) = layer(warren_server::agent_bin::bytes())?;
    let layers = [ImageLayer::new(
        data,
        oci_client::manifest::IMAGE_LAYER_GZIP_MEDIA_TYPE.to_owned(),
        None,
    )];
    let config = Config::new(
        serde_json::to_vec(&config(&diff_id))?,
        oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE.to_owned(),
        None,
    );
    client
        .push(&target, &layers, config, &auth, None)
        .await
        .with_context(|| format!("pushing the agent image to {reference}"))?;
    let digest = client
        .fetch_manifest_digest(&target, &auth)
        .await
        .with_context(|| format!("reading back {reference}'s digest"))?;
    let pinned = format!(
        "{}@{digest}",
        reference.split('@').next().unwrap_or(&reference)
    );
    if json {
        println!(
            "{}",
            serde_json::json!({"reference": pinned, "digest": digest})
        );
    } else {
        println!("{pinned}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_holds_the_agent_as_an_executable_root_file() {
        let (gz, diff_id) = layer(b"\x7fELF-agent").expect("layer");
        let tar = {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out)
                .expect("gunzip");
            out
        };
        assert_eq!(
            diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&tar)))
        );
        let mut archive = tar::Archive::new(&tar[..]);
        let mut entries = archive.entries().expect("entries");
        let mut e = entries.next().expect("one").expect("entry");
        assert_eq!(e.path().expect("path").to_str(), Some("warren-agent"));
        assert_eq!(e.header().mode().expect("mode"), 0o755);
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).expect("read");
        assert_eq!(body, b"\x7fELF-agent");
        assert!(entries.next().is_none());
        assert_eq!(config(&diff_id)["rootfs"]["diff_ids"][0], diff_id.as_str());
        assert!(is_loopback("127.0.0.1:5100") && is_loopback("localhost"));
        assert!(!is_loopback("registry.example.com:5000"));
    }
}
