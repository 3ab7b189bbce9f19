//! The `filesystem.Filesystem` messages in their proto3 JSON form: entries, the directory
//! operations' requests and responses, and the watch events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::proto_json::{i64_string, null_default, num, proto_enum};
use crate::protocol::Empty;

proto_enum! {
    /// What an entry is: `FileType`. A symlink reports its target's type and a dangling one
    /// `Unspecified`, as envd does; `is_symlink` tells links apart.
    FileType {
        /// `FILE_TYPE_UNSPECIFIED` (0): something else (device, socket, dangling link).
        Unspecified = 0, "FILE_TYPE_UNSPECIFIED";
        /// `FILE_TYPE_FILE` (1).
        File = 1, "FILE_TYPE_FILE";
        /// `FILE_TYPE_DIRECTORY` (2).
        Directory = 2, "FILE_TYPE_DIRECTORY";
        /// `FILE_TYPE_SYMLINK` (3).
        Symlink = 3, "FILE_TYPE_SYMLINK";
    }
}

proto_enum! {
    /// What happened to a watched entry: `EventType`.
    EventType {
        /// `EVENT_TYPE_UNSPECIFIED` (0).
        Unspecified = 0, "EVENT_TYPE_UNSPECIFIED";
        /// `EVENT_TYPE_CREATE` (1): created, or moved into the watched tree.
        Create = 1, "EVENT_TYPE_CREATE";
        /// `EVENT_TYPE_WRITE` (2).
        Write = 2, "EVENT_TYPE_WRITE";
        /// `EVENT_TYPE_REMOVE` (3).
        Remove = 3, "EVENT_TYPE_REMOVE";
        /// `EVENT_TYPE_RENAME` (4): moved away (its new name, if watched, arrives as a create).
        Rename = 4, "EVENT_TYPE_RENAME";
        /// `EVENT_TYPE_CHMOD` (5): attributes changed.
        Chmod = 5, "EVENT_TYPE_CHMOD";
    }
}

/// One filesystem entry: `EntryInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    /// Base name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// File, directory, or (dangling) symlink.
    #[serde(default, rename = "type")]
    pub file_type: FileType,
    /// Absolute path.
    #[serde(default, deserialize_with = "null_default")]
    pub path: String,
    /// Size in bytes (of the link itself for a symlink).
    #[serde(default, deserialize_with = "num", serialize_with = "i64_string")]
    pub size: i64,
    /// Permission bits (`0o755`), of the target for a symlink.
    #[serde(default, deserialize_with = "num")]
    pub mode: u32,
    /// Go's `FileMode.String()`, like `-rw-r--r--` or `drwxr-xr-x`.
    #[serde(default, deserialize_with = "null_default")]
    pub permissions: String,
    /// Owner's user name (the uid in decimal when it has no name).
    #[serde(default, deserialize_with = "null_default")]
    pub owner: String,
    /// Group name (the gid in decimal when it has no name).
    #[serde(default, deserialize_with = "null_default")]
    pub group: String,
    /// Last modification, RFC 3339 in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<String>,
    /// For a symlink: the resolved target path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    /// User metadata: the file's `user.e2b.*` extended attributes, prefix stripped.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub metadata: BTreeMap<String, String>,
    /// Whether the entry itself is a symlink.
    #[serde(default, deserialize_with = "null_default")]
    pub is_symlink: bool,
}

/// A request naming one path: `StatRequest`, `MakeDirRequest`, `RemoveRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRequest {
    /// Absolute, or relative to the acting user's home.
    #[serde(default, deserialize_with = "null_default")]
    pub path: String,
}

/// A response holding one entry: `StatResponse`, `MakeDirResponse`, `MoveResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryResponse {
    /// The entry.
    #[serde(default)]
    pub entry: Option<EntryInfo>,
}

/// `filesystem.Filesystem/Move` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRequest {
    /// What to move.
    #[serde(default, deserialize_with = "null_default")]
    pub source: String,
    /// Its new path (parents are created).
    #[serde(default, deserialize_with = "null_default")]
    pub destination: String,
}

/// `filesystem.Filesystem/ListDir` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListDirRequest {
    /// The directory.
    #[serde(default, deserialize_with = "null_default")]
    pub path: String,
    /// How deep to descend: 1 (or 0) lists the direct children only.
    #[serde(default, deserialize_with = "num")]
    pub depth: u32,
}

/// `filesystem.Filesystem/ListDir` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListDirResponse {
    /// Entries in walk order (a directory before its children).
    #[serde(default, deserialize_with = "null_default")]
    pub entries: Vec<EntryInfo>,
}

/// `WatchDirRequest` and `CreateWatcherRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchRequest {
    /// The directory to watch.
    #[serde(default, deserialize_with = "null_default")]
    pub path: String,
    /// Watch subdirectories too, including ones created later.
    #[serde(default, deserialize_with = "null_default")]
    pub recursive: bool,
    /// Attach the entry's [`EntryInfo`] to each event (when it still exists).
    #[serde(default, deserialize_with = "null_default")]
    pub include_entry: bool,
    /// Watch a directory on a network filesystem (NFS, CIFS, SMB, FUSE), refused otherwise.
    #[serde(default, deserialize_with = "null_default")]
    pub allow_network_mounts: bool,
}

/// One change under a watched directory: `FilesystemEvent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemEvent {
    /// Path relative to the watched directory (`sub/file.txt`).
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// What happened.
    #[serde(default, rename = "type")]
    pub event_type: EventType,
    /// The entry after the change, when asked for and it still exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryInfo>,
}

/// One message of the `WatchDir` stream: the `event` oneof of `WatchDirResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WatchWire", try_from = "WatchWire")]
// Each event is built, sent and dropped once: a box would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum WatchEvent {
    /// The watch is in place; always first.
    Start,
    /// A change.
    Filesystem(FilesystemEvent),
    /// Nothing happened; sent to keep idle connections open.
    Keepalive,
}

#[derive(Default, Serialize, Deserialize)]
struct WatchWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filesystem: Option<FilesystemEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keepalive: Option<Empty>,
}

impl From<WatchEvent> for WatchWire {
    fn from(event: WatchEvent) -> WatchWire {
        let mut wire = WatchWire::default();
        match event {
            WatchEvent::Start => wire.start = Some(Empty {}),
            WatchEvent::Filesystem(e) => wire.filesystem = Some(e),
            WatchEvent::Keepalive => wire.keepalive = Some(Empty {}),
        }
        wire
    }
}

impl TryFrom<WatchWire> for WatchEvent {
    type Error = &'static str;

    fn try_from(wire: WatchWire) -> Result<WatchEvent, &'static str> {
        match (wire.start, wire.filesystem, wire.keepalive) {
            (Some(_), _, _) => Ok(WatchEvent::Start),
            (_, Some(e), _) => Ok(WatchEvent::Filesystem(e)),
            (_, _, Some(_)) => Ok(WatchEvent::Keepalive),
            _ => Err("watch event has none of start, filesystem, keepalive"),
        }
    }
}

/// `CreateWatcher` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateWatcherResponse {
    /// The id for `GetWatcherEvents` and `RemoveWatcher`.
    #[serde(default, deserialize_with = "null_default")]
    pub watcher_id: String,
}

/// `GetWatcherEvents` and `RemoveWatcher` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatcherRequest {
    /// From `CreateWatcher`.
    #[serde(default, deserialize_with = "null_default")]
    pub watcher_id: String,
}

/// `GetWatcherEvents` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetWatcherEventsResponse {
    /// Events since the last call, oldest first.
    #[serde(default, deserialize_with = "null_default")]
    pub events: Vec<FilesystemEvent>,
}
