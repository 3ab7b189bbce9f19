//! Files in a sandbox, through its agent: streamed down and up (flat memory in the server),
//! listed, removed. Paths resolve inside the sandbox, where the agent runs.
use bytes::Bytes;
use futures::{Stream, StreamExt};
use warren_agent::{AgentClient, AgentError, FileType};
use warren_api::{FileEntry, FileKind, SandboxId};

use super::Service;
use crate::error::ApiError;

/// Chunks in flight between the client's upload and the agent.
const UPLOAD_QUEUE: usize = 8;

fn check_path(path: &str) -> Result<(), ApiError> {
    if !path.starts_with('/') {
        return Err(ApiError::Invalid(format!(
            "path must be absolute, got {path:?}"
        )));
    }
    if path.contains('\0') {
        return Err(ApiError::Invalid("path must not contain NUL".into()));
    }
    Ok(())
}

/// The agent's answer about a path, as an API error.
fn file_error(id: &SandboxId, path: &str, e: AgentError) -> ApiError {
    match e.rpc_code() {
        Some("not_found") => ApiError::NotFound(format!("{path}: no such file in sandbox {id}")),
        Some("invalid_argument") | Some("already_exists") | Some("failed_precondition") => {
            ApiError::Invalid(format!("{path}: {e}"))
        }
        Some("permission_denied") => ApiError::Forbidden(format!("{path}: {e}")),
        _ => ApiError::Unavailable(format!("sandbox {id}: {e}")),
    }
}

impl Service {
    async fn files_agent(
        &self,
        id: &SandboxId,
        user: Option<&str>,
    ) -> Result<AgentClient, ApiError> {
        Ok(self.running_agent(id, user).await?.1)
    }

    /// A file's bytes as they arrive from the sandbox.
    pub async fn read_file(
        &self,
        id: &SandboxId,
        path: &str,
        user: Option<&str>,
    ) -> Result<impl Stream<Item = Result<Bytes, AgentError>> + Send + 'static, ApiError> {
        check_path(path)?;
        let agent = self.files_agent(id, user).await?;
        agent
            .download(path)
            .await
            .map_err(|e| file_error(id, path, e))
    }

    /// Writes `body` to `path` as it arrives (parents created).
    pub async fn write_file<S, E>(
        &self,
        id: &SandboxId,
        path: &str,
        user: Option<&str>,
        mut body: S,
    ) -> Result<(), ApiError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        check_path(path)?;
        let agent = self.files_agent(id, user).await?;
        // A bounded queue between the two connections: the server holds a few chunks at most.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(UPLOAD_QUEUE);
        let pump = tokio::spawn(async move {
            while let Some(chunk) = body.next().await {
                let item =
                    chunk.map_err(|e| std::io::Error::other(format!("reading the upload: {e}")));
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        let result = agent
            .upload(path, tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|e| file_error(id, path, e));
        pump.abort();
        result
    }

    /// Removes a file or directory (recursively).
    pub async fn remove_file(
        &self,
        id: &SandboxId,
        path: &str,
        user: Option<&str>,
    ) -> Result<(), ApiError> {
        check_path(path)?;
        let agent = self.files_agent(id, user).await?;
        agent
            .remove(path)
            .await
            .map_err(|e| file_error(id, path, e))
    }

    /// A directory's entries.
    pub async fn list_files(
        &self,
        id: &SandboxId,
        path: &str,
        user: Option<&str>,
    ) -> Result<Vec<FileEntry>, ApiError> {
        check_path(path)?;
        let agent = self.files_agent(id, user).await?;
        let entries = agent
            .list_dir(path, 1)
            .await
            .map_err(|e| file_error(id, path, e))?;
        Ok(entries
            .into_iter()
            .map(|e| FileEntry {
                kind: if e.is_symlink {
                    FileKind::Symlink
                } else if e.file_type == FileType::Directory {
                    FileKind::Dir
                } else {
                    FileKind::File
                },
                size: u64::try_from(e.size).unwrap_or(0),
                mode: e.mode,
                modified_at: e
                    .modified_time
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc)),
                name: e.name,
                path: e.path,
            })
            .collect())
    }
}
