//! Secret values sealed at rest: ChaCha20-Poly1305 under a key kept in the data dir
//! (`secrets.key`, 0600, made at first start). Each value is sealed with a fresh nonce and
//! bound to its secret's id and version, so a sealed value cannot be moved to another record.
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// Bytes of the nonce stored before each ciphertext.
const NONCE: usize = 12;

/// The server's sealing key.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("secret {0} cannot be opened with this server's key (data dir secrets.key changed?)")]
pub struct Unsealable(pub String);

fn aad(id: &str, version: u64) -> Vec<u8> {
    format!("{id}:{version}").into_bytes()
}

impl Sealer {
    /// The key in `data_dir/secrets.key`, made (random, 0600) when missing.
    pub fn open(data_dir: &Path) -> anyhow::Result<Sealer> {
        use anyhow::Context;
        let path = data_dir.join("secrets.key");
        let key: [u8; 32] = match std::fs::read_to_string(&path) {
            Ok(text) => hex::decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .with_context(|| format!("{} is not 64 hex digits", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                crate::auth::write_private(&path, &format!("{}\n", hex::encode(key)))
                    .with_context(|| format!("writing {}", path.display()))?;
                key
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// `value` sealed for version `version` of secret `id`: nonce, then ciphertext.
    pub fn seal(&self, id: &str, version: u64, value: &str) -> Vec<u8> {
        let nonce: [u8; NONCE] = rand::random();
        let payload = Payload {
            msg: value.as_bytes(),
            aad: &aad(id, version),
        };
        // Encryption fails only past 256 GiB of input.
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        [nonce.as_slice(), &ct].concat()
    }

    /// The value `seal` sealed.
    pub fn unseal(&self, id: &str, version: u64, sealed: &[u8]) -> Result<String, Unsealable> {
        let (nonce, ct) = sealed
            .split_at_checked(NONCE)
            .ok_or_else(|| Unsealable(id.to_owned()))?;
        let payload = Payload {
            msg: ct,
            aad: &aad(id, version),
        };
        self.cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Unsealable(id.to_owned()))
    }
}

/// What opens `${e2b.secrets.NAME}`.
const OPEN: &str = "${e2b.secrets.";

/// The secret names `text` refers to as `${e2b.secrets.NAME}`.
pub fn referenced(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        let after = &rest[at + OPEN.len()..];
        let Some(end) = after.find('}') else { break };
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    out
}

/// Why a `${e2b.secrets.NAME}` could not be filled in.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// No secret has that name.
    #[error("secret {0:?} (in ${{e2b.secrets.{0}}}) not found")]
    Unknown(String),
    /// Its value cannot be opened.
    #[error(transparent)]
    Unsealable(#[from] Unsealable),
    /// The store failed.
    #[error("reading secret {0:?}: {1}")]
    Store(String, String),
}

/// `team`'s secret named exactly `name` (not one whose id happens to be `name`).
pub async fn by_name(
    store: &dyn warren_store::Store,
    name: &str,
    team: &str,
) -> Result<Option<warren_store::SecretRecord>, warren_store::StoreError> {
    Ok(store
        .get_secret(name)
        .await?
        .filter(|r| r.name == name && r.team == team))
}

/// `text` with every `${e2b.secrets.NAME}` replaced by that secret's current value.
pub async fn fill(
    store: &dyn warren_store::Store,
    sealer: &Sealer,
    text: &str,
    team: &str,
) -> Result<String, FillError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        out.push_str(&rest[..at]);
        let after = &rest[at + OPEN.len()..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[at..]);
            return Ok(out);
        };
        let name = &after[..end];
        let rec = by_name(store, name, team)
            .await
            .map_err(|e| {
                let words = crate::error::store_failure(&format!("reading secret {name}"), &e);
                FillError::Store(name.to_owned(), words)
            })?
            .ok_or_else(|| FillError::Unknown(name.to_owned()))?;
        out.push_str(&sealer.unseal(&rec.id, rec.version, &rec.sealed)?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_in_text() {
        assert_eq!(
            referenced("Bearer ${e2b.secrets.a-b} and ${e2b.secrets.c}${e2b.secrets.unclosed"),
            ["a-b", "c"]
        );
        assert!(referenced("plain $HOME").is_empty());
    }

    #[test]
    fn values_are_sealed_bound_to_their_record_and_the_key_is_private() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Sealer::open(dir.path()).expect("sealer");
        let sealed = s.seal("sec_1", 1, "hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(s.unseal("sec_1", 1, &sealed).expect("open"), "hunter2");
        assert!(s.unseal("sec_1", 2, &sealed).is_err());
        assert!(s.unseal("sec_2", 1, &sealed).is_err());
        // The same key again from the file; a changed key opens nothing.
        let again = Sealer::open(dir.path()).expect("sealer");
        assert_eq!(again.unseal("sec_1", 1, &sealed).expect("open"), "hunter2");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secrets.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join("secrets.key"), hex::encode([7u8; 32])).expect("write");
        let other = Sealer::open(dir.path()).expect("sealer");
        assert!(other.unseal("sec_1", 1, &sealed).is_err());
    }
}
