//! Pulling images from OCI registries with `oci-client`: the manifest (a multi-arch index
//! resolved to linux/amd64) and config, then every layer not already stored, streamed from the
//! registry through its decompressor straight into a staging tree, verified, and renamed into
//! the layer store. Nothing appears in the store before its digest checked out.
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio_util::io::{StreamReader, SyncIoBridge};
use warren_api::image::{LayerProgress, LayerStatus};

use crate::images::layer::unpack_blob;
use crate::images::{ImageError, ImageStore};
use crate::unpack::UnpackError;

mod auth;
pub mod config;

pub use auth::RegistryAuths;

/// How many layers of one image are fetched at once.
const PARALLEL_LAYERS: usize = 4;
/// Progress is reported at most once per this many bytes of a layer.
const PROGRESS_STEP: u64 = 512 * 1024;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference does not parse.
    #[error("invalid image reference {reference:?}: {message}")]
    InvalidReference {
        /// As given.
        reference: String,
        /// Why.
        message: String,
    },
    /// The registry has no such repository, tag or digest.
    #[error("{0}")]
    NotFound(String),
    /// The registry refused our credentials (or their absence).
    #[error("{0}")]
    Unauthorized(String),
    /// A blob's content did not match its digest.
    #[error("{0}")]
    DigestMismatch(String),
    /// The registry could not be reached, or answered something that is not a registry's.
    #[error("{0}")]
    Registry(String),
    /// The manifest is not a container image this host can run.
    #[error("{0}")]
    Unsupported(String),
    /// A layer is hostile or malformed.
    #[error("layer {digest}: {source}")]
    BadLayer {
        /// Which.
        digest: String,
        /// What was wrong with it.
        source: UnpackError,
    },
    /// Writing the layer store failed.
    #[error(transparent)]
    Store(#[from] ImageError),
    /// The puller's own configuration is wrong (`--registry-auth`).
    #[error("{0}")]
    Config(String),
    /// The registry is not among those the server may pull from (`--allowed-registry`).
    #[error("registry {0} is not one this server pulls from (--allowed-registry)")]
    NotAllowed(String),
}

pub use warren_backend::images::{LayerRef, Resolved};

/// Where to pull from and as whom.
#[derive(Debug, Clone, Default)]
pub struct PullConfig {
    /// Docker `config.json` with credentials.
    pub auth_file: Option<PathBuf>,
    /// Registries spoken to over plain HTTP, besides loopback ones (`host:port`).
    pub insecure: Vec<String>,
    /// The only registries pulls may reach (`host[:port]`, `docker.io` for Docker Hub); empty
    /// is any.
    pub allowed: Vec<String>,
}

pub use warren_backend::images::Progress;

/// Pulls images into an [`ImageStore`]. One per server: it shares HTTP clients (and their
/// cached registry tokens) between pulls and makes concurrent pulls of a layer fetch it once.
pub struct Puller {
    store: ImageStore,
    auths: RegistryAuths,
    insecure: Vec<String>,
    allowed: Vec<String>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller").finish_non_exhaustive()
    }
}

/// Whether `registry` (`host[:port]`) is on this machine: spoken to over plain HTTP, as Docker
/// does for `localhost` registries.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Puller {
    /// A puller storing into `store`.
    pub fn new(store: ImageStore, cfg: &PullConfig) -> Result<Self, PullError> {
        // A URL or a path would never equal a registry's name: refused, not silently inert.
        if let Some(bad) = cfg
            .allowed
            .iter()
            .find(|h| h.is_empty() || h.contains("://") || h.contains('/'))
        {
            return Err(PullError::Config(format!(
                "--allowed-registry {bad:?}: give a registry as host[:port] (docker.io, ghcr.io, 127.0.0.1:5000)"
            )));
        }
        let auths = match &cfg.auth_file {
            Some(path) => RegistryAuths::load(path)?,
            None => RegistryAuths::default(),
        };
        Ok(Puller {
            store,
            auths,
            insecure: cfg.insecure.clone(),
            // Docker Hub is spoken to as index.docker.io, and named docker.io by everyone.
            allowed: cfg
                .allowed
                .iter()
                .map(|h| match h.as_str() {
                    "docker.io" => "index.docker.io".to_owned(),
                    h => h.to_owned(),
                })
                .collect(),
            clients: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// The client for `registry`, refused before any connection when the registry is not
    /// an allowed one.
    fn client_for(&self, registry: &str) -> Result<Arc<Client>, PullError> {
        if !self.allowed.is_empty() && !self.allowed.iter().any(|h| h == registry) {
            return Err(PullError::NotAllowed(registry.to_owned()));
        }
        let plain = is_loopback(registry) || self.insecure.iter().any(|h| h == registry);
        let key = if plain { registry } else { "" };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        Ok(clients
            .entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(Client::new(ClientConfig {
                    protocol: if plain {
                        ClientProtocol::HttpsExcept(vec![registry.to_owned()])
                    } else {
                        ClientProtocol::Https
                    },
                    platform_resolver: Some(Box::new(linux_amd64_resolver)),
                    max_concurrent_download: PARALLEL_LAYERS,
                    connect_timeout: Some(std::time::Duration::from_secs(10)),
                    read_timeout: Some(std::time::Duration::from_secs(60)),
                    user_agent: concat!("warren/", env!("CARGO_PKG_VERSION")),
                    ..Default::default()
                }))
            })
            .clone())
    }

    /// Parses a reference as Docker does (`alpine` is `docker.io/library/alpine:latest`).
    pub fn parse_reference(reference: &str) -> Result<Reference, PullError> {
        reference
            .trim()
            .parse::<Reference>()
            .map_err(|e| PullError::InvalidReference {
                reference: reference.to_owned(),
                message: e.to_string(),
            })
    }

    /// Fetches the manifest (for linux/amd64) and config of `reference`.
    pub async fn resolve(&self, reference: &Reference) -> Result<Resolved, PullError> {
        let registry = reference.resolve_registry().to_owned();
        let client = self.client_for(&registry)?;
        let auth = self.auths.for_registry(&registry);
        let (manifest, digest, config) =
            match client.pull_manifest_and_config(reference, &auth).await {
                Ok(found) => found,
                Err(OciDistributionError::UnauthorizedError { url }) => {
                    return Err(refused(reference, &url, &auth).await)
                }
                Err(e) => return Err(classify(e, reference, "manifest")),
            };
        let layers = manifest
            .layers
            .iter()
            .map(|l| {
                if !is_tar_layer(&l.media_type) {
                    return Err(PullError::Unsupported(format!(
                        "{} is not a container image: layer {} has media type {}",
                        reference.whole(),
                        l.digest,
                        l.media_type
                    )));
                }
                Ok(LayerRef {
                    digest: l.digest.clone(),
                    size: u64::try_from(l.size).unwrap_or(0),
                    media_type: l.media_type.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = config::parse(&config).map_err(|e| {
            PullError::Unsupported(format!(
                "{}: the image config is not valid JSON: {e}",
                reference.whole()
            ))
        })?;
        Ok(Resolved {
            reference: reference.whole(),
            digest,
            layers,
            config,
        })
    }

    /// Makes sure every layer of `image` is stored, fetching those that are not (a few at a
    /// time), and reports each layer's progress.
    pub async fn fetch_layers(
        &self,
        reference: &Reference,
        image: &Resolved,
        progress: Progress,
    ) -> Result<(), PullError> {
        // Owned layers and an iterator (not a stream) of futures: a closure over borrowed
        // items trips the compiler's higher-ranked lifetime check inside `async_trait`s.
        let fetches = image.layers.iter().cloned().map(|layer| {
            let progress = progress.clone();
            async move { self.fetch_layer(reference, &layer, progress).await }
        });
        // Every fetch runs to its end even when another fails: one dropped halfway would
        // leave its unpacker writing into a scratch tree nobody removes.
        let results: Vec<_> = futures::stream::iter(fetches)
            .buffer_unordered(PARALLEL_LAYERS)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<_>, _>>().map(drop)
    }

    /// Stores one layer unless it is stored already; what happened to it.
    pub async fn fetch_layer(
        &self,
        reference: &Reference,
        layer: &LayerRef,
        progress: Progress,
    ) -> Result<LayerStatus, PullError> {
        let report = |status, current| {
            progress(LayerProgress {
                digest: layer.digest.clone(),
                status,
                current,
                total: layer.size,
            })
        };
        if self.store.has_layer(&layer.digest) {
            report(LayerStatus::Present, layer.size);
            return Ok(LayerStatus::Present);
        }
        let lock = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(layer.digest.clone()).or_default().clone()
        };
        let result = {
            let _turn = lock.lock().await;
            if self.store.has_layer(&layer.digest) {
                report(LayerStatus::Shared, layer.size);
                Ok(LayerStatus::Shared)
            } else {
                self.download(reference, layer, progress.clone())
                    .await
                    .map(|()| {
                        report(LayerStatus::Done, layer.size);
                        LayerStatus::Done
                    })
            }
        };
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and this function hold it: nobody else is waiting.
        if Arc::strong_count(&lock) == 2 {
            map.remove(&layer.digest);
        }
        result
    }

    async fn download(
        &self,
        reference: &Reference,
        layer: &LayerRef,
        progress: Progress,
    ) -> Result<(), PullError> {
        let registry = reference.resolve_registry();
        let client = self.client_for(registry)?;
        client
            .store_auth_if_needed(registry, &self.auths.for_registry(registry))
            .await;
        let desc = OciDescriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: i64::try_from(layer.size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let blob = client
            .pull_blob_stream(reference, &desc)
            .await
            .map_err(|e| classify(e, reference, "layer"))?;
        let staging = Staging(self.store.staging()?);
        let digest = layer.digest.clone();
        let total = layer.size;
        let mut fetched = 0u64;
        let mut reported = 0u64;
        let fault: Arc<Mutex<Option<PullError>>> = Arc::default();
        let seen = fault.clone();
        let layer_digest = layer.digest.clone();
        let counted = blob.stream.inspect_err(move |e| {
            let mut slot = seen.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| stream_error(&layer_digest, e));
        });
        let counted = counted.inspect_ok(move |chunk| {
            fetched += chunk.len() as u64;
            if fetched - reported >= PROGRESS_STEP {
                reported = fetched;
                progress(LayerProgress {
                    digest: digest.clone(),
                    status: LayerStatus::Downloading,
                    current: fetched,
                    total,
                });
            }
        });
        let reader = SyncIoBridge::new(StreamReader::new(counted));
        let dir = staging.0.clone();
        let unpacked = tokio::task::spawn_blocking(move || unpack_blob(reader, &dir))
            .await
            .map_err(|e| PullError::Registry(format!("unpacking {}: {e}", layer.digest)));
        // The stream's own failure, if it had one, explains whatever the unpacker made of it.
        let fault = fault.lock().unwrap_or_else(|p| p.into_inner()).take();
        let outcome = match (unpacked, fault) {
            (_, Some(e)) => Err(e),
            (Ok(Ok(_)), None) => Ok(()),
            (Ok(Err(e)), None) => Err(PullError::BadLayer {
                digest: layer.digest.clone(),
                source: e,
            }),
            (Err(e), None) => Err(e),
        };
        outcome?;
        Ok(self.store.commit_layer(&staging.take(), &layer.digest)?)
    }
}

/// A layer's scratch tree, removed when dropped unless taken for the store: on an error, and
/// when the pull is dropped halfway (a create request whose client went away).
struct Staging(PathBuf);

impl Staging {
    fn take(mut self) -> PathBuf {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Layer media types that hold a filesystem tar (Docker's and OCI's, any compression).
fn is_tar_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.diff.tar")
}

/// What a layer's byte stream failed with: a digest mismatch found by oci-client's verifying
/// stream, or the registry breaking off.
fn stream_error(digest: &str, e: &io::Error) -> PullError {
    match e.get_ref().and_then(|i| i.downcast_ref::<DigestError>()) {
        Some(DigestError::VerificationError { actual, .. }) => PullError::DigestMismatch(format!(
            "layer {digest} does not match its digest (the registry sent content hashing to \
             {actual}); nothing of it was kept"
        )),
        _ => PullError::Registry(format!("fetching layer {digest}: {e}")),
    }
}

/// A registry's 401, with the registry's own words: oci-client keeps only the URL, so the
/// request is made once more, as oci-client made it, to read the error body.
async fn refused(reference: &Reference, url: &str, auth: &RegistryAuth) -> PullError {
    let registry = reference.resolve_registry();
    let who = match auth {
        RegistryAuth::Anonymous => "no credentials (none for it in --registry-auth)".to_owned(),
        RegistryAuth::Basic(user, _) => format!("the credentials of {user:?}"),
        RegistryAuth::Bearer(_) => "the bearer token from --registry-auth".to_owned(),
    };
    let said = async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .ok()?;
        let request = match auth {
            RegistryAuth::Basic(user, pass) => client.get(url).basic_auth(user, Some(pass)),
            RegistryAuth::Bearer(token) => client.get(url).bearer_auth(token),
            RegistryAuth::Anonymous => client.get(url),
        };
        let body = request.send().await.ok()?.bytes().await.ok()?;
        let envelope: oci_client::errors::OciEnvelope = serde_json::from_slice(&body).ok()?;
        let words = envelope
            .errors
            .iter()
            .map(|e| format!("{:?}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        (!words.is_empty()).then_some(words)
    }
    .await
    .unwrap_or_else(|| "401 Unauthorized".to_owned());
    PullError::Unauthorized(format!(
        "{registry} refused {who} for {}: {said}",
        reference.whole()
    ))
}

/// Sorts an oci-client error into what the API tells the user.
fn classify(e: OciDistributionError, reference: &Reference, what: &str) -> PullError {
    let registry = reference.resolve_registry();
    let whole = reference.whole();
    match e {
        OciDistributionError::ImageManifestNotFoundError(m) => {
            PullError::NotFound(format!("{whole}: not found in {registry} ({m})"))
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let message = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            let not_found = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            });
            let denied = envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
            if not_found {
                PullError::NotFound(format!("{whole}: {registry} says {message}"))
            } else if denied {
                PullError::Unauthorized(format!(
                    "{registry} refused access to {whole}: {message} (check --registry-auth)"
                ))
            } else {
                PullError::Registry(format!(
                    "{registry} refused the {what} of {whole}: {message}"
                ))
            }
        }
        OciDistributionError::UnauthorizedError { url } => PullError::Unauthorized(format!(
            "{registry} answered 401 Unauthorized for {url}: the credentials for {registry} \
             (from --registry-auth) are missing or wrong"
        )),
        OciDistributionError::AuthenticationFailure(m) => PullError::Unauthorized(format!(
            "{registry} refused the credentials (from --registry-auth): {m}"
        )),
        OciDistributionError::ServerError { code: 404, .. } => {
            PullError::NotFound(format!("{whole}: not found in {registry}"))
        }
        OciDistributionError::ServerError {
            code: code @ (401 | 403),
            message,
            ..
        } => PullError::Unauthorized(format!(
            "{registry} answered {code} for {whole}: {message} (check --registry-auth)"
        )),
        OciDistributionError::DigestError(d) => PullError::DigestMismatch(format!(
            "{whole}: the {what} does not match its digest: {d}"
        )),
        OciDistributionError::ImageIndexParsingNoPlatformResolverError
        | OciDistributionError::UnsupportedMediaTypeError(_)
        | OciDistributionError::UnsupportedSchemaVersionError(_)
        | OciDistributionError::ManifestParsingError(_)
        | OciDistributionError::VersionedParsingError(_) => {
            PullError::Unsupported(format!("{whole}: {e}"))
        }
        OciDistributionError::GenericError(Some(m)) if m.contains("platform") => {
            PullError::Unsupported(format!("{whole}: no linux/amd64 image in its index ({m})"))
        }
        other => PullError::Registry(format!(
            "pulling the {what} of {whole} from {registry}: {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        for r in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.0.0.1",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "registry.example.com",
            "10.0.0.1:5000",
            "ghcr.io",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn references_resolve_as_docker_does() {
        let r = Puller::parse_reference("alpine").expect("parse");
        assert_eq!(r.whole(), "docker.io/library/alpine:latest");
        let r = Puller::parse_reference("127.0.0.1:5000/team/tool:v1").expect("parse");
        assert_eq!(r.resolve_registry(), "127.0.0.1:5000");
        assert!(Puller::parse_reference("Bad Ref!").is_err());
    }
}
