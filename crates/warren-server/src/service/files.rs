//! Files in a sandbox, through its agent: streamed down and up (flat memory in the server),
//! listed, removed. Paths resolve inside the sandbox, where the agent runs.
use bytes::Bytes;
use futures::{Stream, StreamExt};
use warren_agent::connect::code;
use warren_agent::{AgentClient, AgentError, FileType};
use warren_api::{FileEntry, FileKind, SandboxId};

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

use warren_agent::error::shown_text as shorten;

/// The agent's answer about a path, as an API error. A failure the request caused (a path
/// too long or read-only, a file where a directory should be, the user's own permissions, a
/// full disk) is the caller's 4xx (507 for the disk); only the agent's own failures are 503.
fn file_error(id: &SandboxId, path: &str, e: AgentError) -> ApiError {
    let shown = shorten(path);
    // The agent's message names the path again (cut short by the agent too): the detail goes
    // to the debug log only, so no user-chosen text reaches the error log.
    tracing::debug!(sandbox = %id, path = %shown, "file operation failed: {}", shorten(&e.to_string()));
    let detail = match &e {
        AgentError::Rpc { message, .. } => shorten(message),
        other => shorten(&other.to_string()),
    };
    match e.rpc_code() {
        Some(code::NOT_FOUND) => {
            ApiError::NotFound(format!("{shown}: no such file in sandbox {id}"))
        }
        Some(code::INVALID_ARGUMENT) => ApiError::Invalid(detail),
        Some(code::PERMISSION_DENIED) => ApiError::Forbidden(detail),
        Some(code::ALREADY_EXISTS | code::FAILED_PRECONDITION | code::ABORTED) => {
            ApiError::Conflict(detail)
        }
        Some(code::OUT_OF_RANGE) => ApiError::TooLarge(detail),
        Some(code::RESOURCE_EXHAUSTED) => ApiError::InsufficientStorage(detail),
        _ => ApiError::Unavailable(format!("sandbox {id}: {detail}")),
    }
}

impl crate::service::Files<'_> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(code: &str, path: &str) -> (u16, String) {
        let e = AgentError::Rpc {
            code: code.into(),
            message: format!("cannot create {}: os error", shorten(path)),
        };
        let api = file_error(&SandboxId::generate(), path, e);
        (api.status().as_u16(), api.to_string())
    }

    #[test]
    fn failures_the_request_caused_are_4xx_with_short_messages() {
        let long = format!("/{}", "a".repeat(5000));
        for (code, status) in [
            (code::INVALID_ARGUMENT, 422),
            (code::PERMISSION_DENIED, 403),
            (code::NOT_FOUND, 404),
            (code::ALREADY_EXISTS, 409),
            (code::FAILED_PRECONDITION, 409),
            (code::OUT_OF_RANGE, 413),
            (code::RESOURCE_EXHAUSTED, 507),
            (code::INTERNAL, 503),
        ] {
            let (got, message) = status_of(code, &long);
            assert_eq!(got, status, "{code}");
            assert!(message.len() < 400, "{code}: {} bytes", message.len());
        }
    }
}
