//! The client's filesystem calls: the `filesystem.Filesystem` methods and streamed file
//! transfers through `/files`.

use bytes::Bytes;
use futures::{Stream, TryStreamExt};

use super::{read_error_body, AgentClient, WatchStream};
use crate::connect::{self, code, path, ConnectError};
use crate::error::AgentError;
use crate::protocol::{
    Empty, EntryInfo, EntryResponse, ListDirRequest, ListDirResponse, MoveRequest, PathRequest,
    WatchRequest,
};

fn entry(resp: EntryResponse) -> Result<EntryInfo, AgentError> {
    resp.entry
        .ok_or_else(|| AgentError::Protocol("response carries no entry".into()))
}

/// A `/files` error: envd's REST shape `{"code": <status>, "message"}` (or a Connect error from
/// the token check), mapped to the Connect code of the same meaning.
async fn files_error(resp: reqwest::Response) -> AgentError {
    let status = resp.status().as_u16();
    let body = read_error_body(resp).await;
    if let Ok(e) = serde_json::from_slice::<ConnectError>(&body) {
        return e.into();
    }
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
    let code = match status {
        400 | 415 => code::INVALID_ARGUMENT,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::NOT_FOUND,
        409 => code::FAILED_PRECONDITION,
        413 => code::OUT_OF_RANGE,
        429 | 507 => code::RESOURCE_EXHAUSTED,
        502..=504 => code::UNAVAILABLE,
        _ => code::INTERNAL,
    };
    AgentError::Rpc {
        code: code.to_owned(),
        message,
    }
}

impl AgentClient {
    /// `Stat`: the entry at `path` (a symlink itself, described with its target).
    pub async fn stat(&self, path: &str) -> Result<EntryInfo, AgentError> {
        let req = PathRequest { path: path.into() };
        entry(self.unary(path::STAT, &req).await?)
    }

    /// `ListDir`: entries below `path` down to `depth` levels (1: direct children).
    pub async fn list_dir(&self, path: &str, depth: u32) -> Result<Vec<EntryInfo>, AgentError> {
        let req = ListDirRequest {
            path: path.into(),
            depth,
        };
        let resp: ListDirResponse = self.unary(path::LIST_DIR, &req).await?;
        Ok(resp.entries)
    }

    /// `MakeDir`: creates `path` and missing parents; `already_exists` if it is a directory.
    pub async fn make_dir(&self, path: &str) -> Result<EntryInfo, AgentError> {
        let req = PathRequest { path: path.into() };
        entry(self.unary(path::MAKE_DIR, &req).await?)
    }

    /// `Remove`: deletes `path`, a directory with everything in it.
    pub async fn remove(&self, path: &str) -> Result<(), AgentError> {
        let req = PathRequest { path: path.into() };
        let _: Empty = self.unary(path::REMOVE, &req).await?;
        Ok(())
    }

    /// `Move`: renames `from` to `to`; returns the entry at its new path.
    pub async fn rename(&self, from: &str, to: &str) -> Result<EntryInfo, AgentError> {
        let req = MoveRequest {
            source: from.into(),
            destination: to.into(),
        };
        entry(self.unary(path::MOVE, &req).await?)
    }

    /// `WatchDir`: changes under directory `path` (and its subdirectories when `recursive`),
    /// until the stream is dropped.
    pub async fn watch_dir(&self, path: &str, recursive: bool) -> Result<WatchStream, AgentError> {
        let req = WatchRequest {
            path: path.into(),
            recursive,
            ..WatchRequest::default()
        };
        Ok(WatchStream::new(
            self.open_stream(path::WATCH_DIR, &req).await?,
        ))
    }

    /// `GET /files`: the file's bytes as they arrive. A missing file is `not_found`.
    pub async fn download(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, AgentError>> + Send + 'static, AgentError> {
        let resp = self
            .request(reqwest::Method::GET, connect::path::FILES)
            .query(&[("path", path)])
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(files_error(resp).await);
        }
        Ok(resp.bytes_stream().map_err(AgentError::from))
    }

    /// `POST /files` as `application/octet-stream`: writes `body` to `path` as it is produced
    /// (parents created, owned by the acting user).
    pub async fn upload<S>(&self, path: &str, body: S) -> Result<(), AgentError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        let resp = self
            .request(reqwest::Method::POST, connect::path::FILES)
            .query(&[("path", path)])
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(files_error(resp).await);
        }
        Ok(())
    }
}
