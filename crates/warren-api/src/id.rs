//! Sandbox ids: 16 lowercase base32 characters, safe as a DNS label (no `-`).
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Length of a sandbox id in characters.
pub const SANDBOX_ID_LEN: usize = 16;

/// A sandbox id (`[a-z2-7]{16}`, 80 random bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SandboxId(String);

impl SandboxId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let bytes: [u8; 10] = rand::random();
        SandboxId(
            data_encoding::BASE32_NOPAD
                .encode(&bytes)
                .to_ascii_lowercase(),
        )
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a sandbox id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId(pub String);

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a sandbox id (16 characters of a-z, 2-7)",
            self.0
        )
    }
}

impl std::error::Error for InvalidId {}

impl FromStr for SandboxId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        let ok = s.len() == SANDBOX_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
        if ok {
            Ok(SandboxId(s.to_owned()))
        } else {
            Err(InvalidId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for SandboxId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        s.parse()
    }
}

impl From<SandboxId> for String {
    fn from(id: SandboxId) -> String {
        id.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

// On the wire a plain string (`try_from`/`into` `String` above), so its schema is one too.
impl utoipa::PartialSchema for SandboxId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A sandbox id: 16 characters of `a-z` and `2-7` (lowercase base32, 80 random \
                 bits), safe as a DNS label.",
            ))
            .pattern(Some("^[a-z2-7]{16}$"))
            .min_length(Some(SANDBOX_ID_LEN))
            .max_length(Some(SANDBOX_ID_LEN))
            .examples(["k3vq7wz2mtx5nbae"])
            .into()
    }
}

impl utoipa::ToSchema for SandboxId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        for _ in 0..100 {
            let id = SandboxId::generate();
            assert_eq!(id.as_str().len(), SANDBOX_ID_LEN);
            assert_eq!(id.as_str().parse::<SandboxId>(), Ok(id.clone()));
        }
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in [
            "",
            "abc",
            "ABCDEFGHIJKLMNOP",
            "abcdefghijklmno1",
            "abcdefgh-jklmnop",
            "abcdefghijklmnopq",
        ] {
            assert!(bad.parse::<SandboxId>().is_err(), "{bad} parsed");
        }
    }
}
