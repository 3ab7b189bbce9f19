//! The listeners' TLS configuration: the user's PEM files, or a local CA kept in the data dir
//! (`<data-dir>/tls/`) that signs this server's certificates.
//!
//! Preview URLs are `<id>-<port>.<domain>`, so a wildcard `*.<domain>` looks like the natural
//! certificate. But verifiers (webpki, OpenSSL, NSS) ignore a wildcard with fewer than two
//! labels after the `*`, so `*.localhost` (the default domain) covers nothing. The local CA
//! therefore also signs, during the handshake, a certificate for the exact name the client
//! asked for when it is `<label>.<domain>` or `<label>.localhost`. Trust `ca.pem` (or
//! `curl --cacert <data-dir>/tls/ca.pem`) and every preview URL verifies.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use crate::TlsSource;

/// Certificates signed during handshakes are kept for reuse, up to this many names (then the
/// cache starts over: a client cycling through names must not grow it without bound).
const MINTED_CACHE: usize = 1024;

/// The local CA's certificate, for users to trust.
pub fn ca_path(data_dir: &Path) -> PathBuf {
    tls_dir(data_dir).join("ca.pem")
}

fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// The rustls configuration of both listeners: ALPN `h2` then `http/1.1`, with the
/// certificate from `source` (for [`TlsSource::SelfSigned`], made under `<data_dir>/tls/`).
pub fn server_config(
    source: &TlsSource,
    data_dir: &Path,
    domain: &str,
) -> anyhow::Result<Arc<ServerConfig>> {
    // Chosen here rather than process-wide, so nothing depends on which crate installs one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth();
    let mut config = match source {
        TlsSource::Files { cert, key } => {
            let chain = load_chain(cert)?;
            let key_der = load_key(key)?;
            builder.with_single_cert(chain, key_der).with_context(|| {
                format!(
                    "using certificate {} with key {} (do they belong together?)",
                    cert.display(),
                    key.display()
                )
            })?
        }
        TlsSource::SelfSigned => {
            builder.with_cert_resolver(Arc::new(LocalCa::open(data_dir, domain, &provider)?))
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificate {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificate {}", path.display()))?;
    if chain.is_empty() {
        bail!("no PEM certificate found in {}", path.display());
    }
    Ok(chain)
}

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => anyhow::anyhow!(
            "no PEM private key (PKCS#8, PKCS#1 or SEC1) found in {}",
            path.display()
        ),
        e => anyhow::Error::new(e).context(format!("reading private key {}", path.display())),
    })
}

/// Signs certificates with the local CA: one made at start for the usual names (and clients
/// that send no name), and one per preview host name on demand.
struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    /// One key for every certificate of this run: signing a certificate is then the only
    /// work a new name costs.
    leaf_key: KeyPair,
    signing_key: Arc<dyn rustls::sign::SigningKey>,
    default: Arc<CertifiedKey>,
    /// Parents under which a single label gets its own certificate.
    parents: Vec<String>,
    minted: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCa")
            .field("parents", &self.parents)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Loads (or makes, the first time) the CA, and writes this start's certificate for
    /// `domain` to `server.pem`/`server-key.pem` for tools that want files.
    fn open(data_dir: &Path, domain: &str, provider: &CryptoProvider) -> anyhow::Result<LocalCa> {
        let dir = tls_dir(data_dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Certificates are public (users copy ca.pem into trust stores); keys are 0600.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("restricting {}", dir.display()))?;
        let issuer = load_or_make_ca(data_dir)?;

        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut names = Vec::new();
        if !domain.is_empty() {
            if domain.parse::<std::net::IpAddr>().is_err() {
                names.push(format!("*.{domain}"));
            }
            names.push(domain.clone());
        }
        for name in ["localhost", "*.localhost", "127.0.0.1", "::1"] {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }

        let leaf_key = KeyPair::generate().context("generating the server key")?;
        let cert = leaf_params(names, &domain)?
            .signed_by(&leaf_key, &issuer)
            .context("signing the server certificate")?;
        write_file(&dir.join("server.pem"), cert.pem().as_bytes(), 0o644)?;
        write_file(
            &dir.join("server-key.pem"),
            leaf_key.serialize_pem().as_bytes(),
            0o600,
        )?;

        let signing_key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()))
            .context("loading the server key")?;
        let default = Arc::new(CertifiedKey::new(
            vec![cert.der().clone()],
            signing_key.clone(),
        ));
        let mut parents = vec!["localhost".to_string()];
        if !domain.is_empty() && domain != "localhost" {
            parents.push(domain);
        }
        Ok(LocalCa {
            issuer,
            leaf_key,
            signing_key,
            default,
            parents,
            minted: Mutex::default(),
        })
    }

    /// Whether `name` is one label under a parent (what a wildcard would cover, if
    /// verifiers honoured it there).
    fn covers(&self, name: &str) -> bool {
        name.split_once('.').is_some_and(|(label, parent)| {
            !label.is_empty() && label != "*" && self.parents.iter().any(|p| p == parent)
        })
    }

    fn mint(&self, name: &str) -> anyhow::Result<Arc<CertifiedKey>> {
        let cert =
            leaf_params(vec![name.to_string()], name)?.signed_by(&self.leaf_key, &self.issuer)?;
        Ok(Arc::new(CertifiedKey::new(
            vec![cert.der().clone()],
            self.signing_key.clone(),
        )))
    }
}

impl ResolvesServerCert for LocalCa {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = match hello.server_name() {
            Some(name) => name.to_ascii_lowercase(),
            None => return Some(self.default.clone()),
        };
        if !self.covers(&name) {
            return Some(self.default.clone());
        }
        let mut minted = self.minted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = minted.get(&name) {
            return Some(key.clone());
        }
        match self.mint(&name) {
            Ok(key) => {
                if minted.len() >= MINTED_CACHE {
                    minted.clear();
                }
                minted.insert(name, key.clone());
                Some(key)
            }
            Err(e) => {
                tracing::warn!(%name, error = %e, "signing a certificate");
                Some(self.default.clone())
            }
        }
    }
}

/// A server certificate for `names`, valid a year (it is remade at every start anyway).
fn leaf_params(names: Vec<String>, common_name: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(names).context("certificate names")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // A day of slack for clocks a little behind ours.
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(365);
    Ok(params)
}

/// The CA, made once: users trust it in their browser or curl, so it must outlive restarts.
fn load_or_make_ca(data_dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let cert_path = ca_path(data_dir);
    let key_path = tls_dir(data_dir).join("ca-key.pem");
    if cert_path.exists() && key_path.exists() {
        let key_pem = fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("parsing the CA key {}", key_path.display()))?;
        let cert_pem = fs::read_to_string(&cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?;
        return Issuer::from_ca_cert_pem(&cert_pem, key)
            .with_context(|| format!("parsing the CA certificate {}", cert_path.display()));
    }

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Warren");
    dn.push(
        DnType::CommonName,
        format!("Warren local CA ({})", ca_owner(data_dir)),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(10 * 365);
    let key = KeyPair::generate().context("generating the CA key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the CA certificate")?;
    // The key first: a crash in between leaves no certificate without its key.
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(path = %cert_path.display(), "made a local CA");
    Ok(Issuer::new(params, key))
}

/// Which machine a CA belongs to, for users who trust several of them.
fn ca_owner(data_dir: &Path) -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| data_dir.display().to_string())
}

/// Writes `path` with `mode` through a temporary file, so a reader never sees half a key and
/// an earlier file with a looser mode is replaced, not reused.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("pem.tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
