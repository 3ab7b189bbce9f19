//! Who a request acts as: the Unix user named by `Authorization: Basic base64("<user>:")` (or
//! `?username=` on `/files`), looked up in the sandbox's own `/etc/passwd` and `/etc/group`.
//! Read on every request: the files are small and images or processes may change them.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use hyper::header::HeaderMap;

use warren_agent::connect::{code, ConnectError, HEADER_AUTHORIZATION};

/// A Unix account a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids (primary included), from the group file.
    pub groups: Vec<u32>,
    /// Home directory: default cwd, and base of relative paths.
    pub home: PathBuf,
}

impl User {
    /// Whether this is the agent's own identity, so nothing needs to change for it.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Where the account files are and who acts when a request names no one.
#[derive(Debug, Clone)]
pub struct Accounts {
    /// The passwd file (`WARREN_AGENT_PASSWD`, for tests; else `/etc/passwd`).
    pub passwd: PathBuf,
    /// The group file (`WARREN_AGENT_GROUP`, for tests; else `/etc/group`).
    pub group: PathBuf,
    /// `WARREN_AGENT_DEFAULT_USER`, else `root`.
    pub default_user: String,
}

/// Parsed account files, for name lookups in both directions.
pub struct Table {
    users: Vec<(String, u32, u32, PathBuf)>,
    groups: Vec<(String, u32, Vec<String>)>,
}

fn read_lines(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect()
}

impl Table {
    /// Reads both files; a missing or unreadable file reads as empty.
    pub fn load(accounts: &Accounts) -> Table {
        let users = read_lines(&accounts.passwd)
            .into_iter()
            .filter_map(|f| {
                let name = f.first()?.clone();
                let uid = f.get(2)?.parse().ok()?;
                let gid = f.get(3)?.parse().ok()?;
                let home = PathBuf::from(f.get(5).filter(|h| !h.is_empty())?);
                Some((name, uid, gid, home))
            })
            .collect();
        let groups = read_lines(&accounts.group)
            .into_iter()
            .filter_map(|f| {
                let name = f.first()?.clone();
                let gid = f.get(2)?.parse().ok()?;
                let members = f
                    .get(3)
                    .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_owned))
                    .into_iter()
                    .flatten()
                    .collect();
                Some((name, gid, members))
            })
            .collect();
        Table { users, groups }
    }

    /// The account named `name`. `root` exists even without a passwd entry, so a bare image
    /// still works.
    pub fn user(&self, name: &str) -> Option<User> {
        let found = self.users.iter().find(|(n, ..)| n == name).cloned();
        let (name, uid, gid, home) = match (found, name.parse::<u32>()) {
            (Some(u), _) => u,
            _ if name == "root" => ("root".to_owned(), 0, 0, PathBuf::from("/root")),
            // A numeric user, as image configs often give (`"User": "1000"`): its account if
            // it has one, else the bare id, as Docker runs it.
            (None, Ok(uid)) => self
                .users
                .iter()
                .find(|(_, u, ..)| *u == uid)
                .cloned()
                .unwrap_or_else(|| (name.to_owned(), uid, uid, PathBuf::from("/"))),
            (None, Err(_)) => return None,
        };
        let mut groups = vec![gid];
        groups.extend(
            self.groups
                .iter()
                .filter(|(_, g, members)| *g != gid && members.contains(&name))
                .map(|(_, g, _)| *g),
        );
        Some(User {
            name,
            uid,
            gid,
            groups,
            home,
        })
    }

    /// The name of user id `uid`, or the number itself (as envd reports unknown owners).
    pub fn user_name(&self, uid: u32) -> String {
        self.users
            .iter()
            .find(|(_, u, ..)| *u == uid)
            .map(|(n, ..)| n.clone())
            .unwrap_or_else(|| uid.to_string())
    }

    /// The name of group id `gid`, or the number itself.
    pub fn group_name(&self, gid: u32) -> String {
        self.groups
            .iter()
            .find(|(_, g, _)| *g == gid)
            .map(|(n, ..)| n.clone())
            .unwrap_or_else(|| gid.to_string())
    }
}

fn invalid(message: String) -> ConnectError {
    ConnectError::new(code::INVALID_ARGUMENT, message)
}

/// The user name a `Basic` authorization header carries, if there is such a header.
fn name_from_header(headers: &HeaderMap) -> Result<Option<String>, ConnectError> {
    let Some(value) = headers.get(HEADER_AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| invalid("authorization header is not ASCII".to_owned()))?;
    let Some(encoded) = text
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, rest)| rest.trim())
    else {
        return Err(invalid(
            "authorization header is not Basic <base64(user:)>".to_owned(),
        ));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .ok_or_else(|| invalid("authorization header is not valid base64 UTF-8".to_owned()))?;
    // Only the user part matters: the sandbox token, not a password, authenticates.
    let name = decoded.split(':').next().unwrap_or_default();
    Ok((!name.is_empty()).then(|| name.to_owned()))
}

impl Accounts {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Accounts {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Accounts {
            passwd: var("WARREN_AGENT_PASSWD").map_or_else(|| "/etc/passwd".into(), Into::into),
            group: var("WARREN_AGENT_GROUP").map_or_else(|| "/etc/group".into(), Into::into),
            default_user: var("WARREN_AGENT_DEFAULT_USER")
                .map_or_else(|| "root".to_owned(), |v| v.to_string_lossy().into_owned()),
        }
    }

    /// The user a request acts as: `explicit` (a `username` parameter) first, then the
    /// authorization header, then the default user.
    pub fn acting_user(
        &self,
        headers: &HeaderMap,
        explicit: Option<&str>,
    ) -> Result<User, ConnectError> {
        let name = match explicit.filter(|n| !n.is_empty()) {
            Some(n) => n.to_owned(),
            None => name_from_header(headers)?.unwrap_or_else(|| self.default_user.clone()),
        };
        Table::load(self)
            .user(&name)
            .ok_or_else(|| invalid(format!("user '{name}' does not exist in the sandbox")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_accounts_and_headers() {
        let dir = std::env::temp_dir().join(format!("warren-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("group"),
            "root:x:0:\nalice:x:1000:\ndev:x:50:bob,alice\n",
        )
        .unwrap();
        let accounts = Accounts {
            passwd: dir.join("passwd"),
            group: dir.join("group"),
            default_user: "root".into(),
        };
        let mut headers = HeaderMap::new();
        let user = accounts.acting_user(&headers, None).unwrap();
        assert_eq!((user.uid, user.home.as_path()), (0, Path::new("/root")));
        headers.insert("authorization", "Basic YWxpY2U6".parse().unwrap());
        let alice = accounts.acting_user(&headers, None).unwrap();
        assert_eq!(
            (alice.uid, alice.gid, alice.groups),
            (1000, 1000, vec![1000, 50])
        );
        let err = accounts.acting_user(&headers, Some("mallory")).unwrap_err();
        assert!(err.message.contains("mallory"), "{err}");
        headers.insert("authorization", "Bearer x".parse().unwrap());
        assert!(accounts.acting_user(&headers, None).is_err());
        let table = Table::load(&accounts);
        assert_eq!(table.group_name(50), "dev");
        assert_eq!(table.user_name(4242), "4242");
        let _ = std::fs::remove_dir_all(dir);
    }
}
