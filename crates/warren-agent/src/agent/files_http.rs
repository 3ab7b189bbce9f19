//! `GET /files` and `POST /files`: whole files streamed out and in through bounded buffers, so a
//! transfer of any size costs the agent the same few hundred KiB. The file is opened (and its
//! parents created) with the acting user's credentials, then streamed through the descriptor:
//! permission is checked at open, as for the user's own `cat` or `tee`. Errors are envd's REST
//! shape, `{"code": <HTTP status>, "message": "..."}`.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use async_compression::tokio::bufread::GzipDecoder;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::io::{ReaderStream, StreamReader};

use warren_agent::connect::ConnectError;

use super::as_user;
use super::body::AgentBody;
use super::fs::{ensure_dirs, resolve};
use super::fs_error::{code_for, rest_status, shown};
use super::metadata::{self, Metadata};
use super::rpc::{response, Services};
use super::users::User;

/// Bytes per read and per queued chunk.
const CHUNK: usize = 64 << 10;
/// Chunks queued towards a downloading client.
const QUEUE: usize = 4;
/// Most bytes read from a file that reports no length (`/proc`, `/sys`, a device).
const MAX_UNSIZED: u64 = 64 << 20;

type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A failed transfer: the status and message of its JSON error.
struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    fn response(self) -> Response<AgentBody> {
        let body = serde_json::json!({ "code": self.status.as_u16(), "message": self.message });
        response(
            self.status,
            "application/json",
            AgentBody::full(body.to_string()),
        )
    }
}

/// An error answer in envd's REST shape, `{"code": <status>, "message"}`.
pub fn rest_error(status: StatusCode, message: &str) -> Response<AgentBody> {
    error(status, message).response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Failure {
    Failure {
        status,
        message: message.into(),
    }
}

fn from_io(e: &std::io::Error, what: &str, path: &Path) -> Failure {
    let status =
        StatusCode::from_u16(rest_status(code_for(e))).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, format!("{what} {}: {e}", shown(path)))
}

/// A `/files` failure from a Connect error: the REST status of its code.
fn from_connect(e: &ConnectError) -> Failure {
    let status =
        StatusCode::from_u16(rest_status(&e.code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, e.message.clone())
}

fn hex(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Decodes one `application/x-www-form-urlencoded` value.
fn unescape(s: &str) -> String {
    let raw = s.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => match (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(c),
            },
            _ => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (unescape(k) == name).then(|| unescape(v))
    })
}

/// Serves `/files` for `GET` and `POST`.
pub async fn handle(services: &Services, req: Request<Incoming>) -> Response<AgentBody> {
    // An upload refused before its body was read leaves the body on the connection: the
    // answer says the connection ends, so a client (the server's proxy) does not send its
    // next request on it.
    let refused = |f: Failure, upload: bool| {
        let mut r = f.response();
        if upload {
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
        }
        r
    };
    let upload_req = *req.method() == Method::POST;
    let query = req.uri().query();
    let path = query_param(query, "path").unwrap_or_default();
    let username = query_param(query, "username");
    let user = match services
        .accounts
        .acting_user(req.headers(), username.as_deref())
    {
        Ok(u) => u,
        Err(e) => return refused(from_connect(&e), upload_req),
    };
    let result = match *req.method() {
        Method::GET => download(&path, &user).await,
        Method::POST => upload(&path, &user, req).await,
        _ => Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET or POST on /files",
        )),
    };
    result.unwrap_or_else(|f| refused(f, upload_req))
}

async fn download(path: &str, user: &User) -> Result<Response<AgentBody>, Failure> {
    let path = resolve(path, user).map_err(|e| from_connect(&e))?;
    let (file, len) = as_user::run(user, move || open_for_reading(&path))
        .await
        .map_err(|e| from_connect(&e))??;
    let file = tokio::fs::File::from_std(file);
    let (tx, rx) = mpsc::channel(QUEUE);
    // A length of 0 is what /proc and /sys files (and devices) report whatever they hold:
    // those are read to their end, up to a bound, with no Content-Length.
    let unsized_read = len == 0;
    let limit = if unsized_read { MAX_UNSIZED } else { len };
    tokio::spawn(async move {
        // Exactly the announced length, even if the file grows meanwhile.
        let mut file = file.take(limit);
        let mut buf = vec![0u8; CHUNK];
        loop {
            match file.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let chunk = buf.get(..n).map(Bytes::copy_from_slice).unwrap_or_default();
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let body = if unsized_read {
        AgentBody::Stream(rx)
    } else {
        AgentBody::Sized(rx, len)
    };
    Ok(response(StatusCode::OK, "application/octet-stream", body))
}

/// Opens `path` to read (as the calling thread's user), with its length.
fn open_for_reading(path: &Path) -> Result<(File, u64), Failure> {
    let file = File::open(path).map_err(|e| from_io(&e, "cannot open", path))?;
    match file.metadata() {
        Ok(m) if m.is_dir() => Err(error(
            StatusCode::BAD_REQUEST,
            format!("{} is a directory", shown(path)),
        )),
        Ok(m) => Ok((file, m.len())),
        Err(e) => Err(from_io(&e, "cannot stat", path)),
    }
}

/// The request body as a byte stream, gunzipped on the fly when `Content-Encoding: gzip`.
fn body_stream(headers: &HeaderMap, body: Incoming) -> Result<ByteStream, Failure> {
    let raw = body
        .into_data_stream()
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e));
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("identity") | Some("") => Ok(Box::pin(raw)),
        Some("gzip") | Some("x-gzip") => {
            let mut decoder = GzipDecoder::new(StreamReader::new(raw));
            decoder.multiple_members(true);
            Ok(Box::pin(ReaderStream::with_capacity(decoder, CHUNK)))
        }
        Some(other) => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content encoding {other:?}"),
        )),
    }
}

async fn upload(
    path: &str,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<AgentBody>, Failure> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let (parts, body) = req.into_parts();
    let md =
        metadata::from_headers(&parts.headers).map_err(|m| error(StatusCode::BAD_REQUEST, m))?;
    let stream = body_stream(&parts.headers, body)?;
    let written = if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        upload_multipart(path, user, &content_type, stream, &md).await
    } else {
        let target = target(path, user)?;
        write_file(&target, user, stream, &md)
            .await
            .map(|()| vec![target])
    };
    let entries: Vec<serde_json::Value> = written?
        .iter()
        .map(|p| {
            // Read back: a filesystem without xattrs kept none, and the answer must not say so.
            let kept = metadata::read(p);
            let mut entry = serde_json::json!({
                "name": p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
                "type": "file",
                "path": p.to_string_lossy(),
            });
            if !kept.is_empty() {
                entry["metadata"] = serde_json::json!(kept);
            }
            entry
        })
        .collect();
    let body = serde_json::Value::from(entries).to_string();
    Ok(response(
        StatusCode::OK,
        "application/json",
        AgentBody::full(body),
    ))
}

fn target(path: &str, user: &User) -> Result<PathBuf, Failure> {
    if path.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "no path given for the upload",
        ));
    }
    resolve(path, user).map_err(|e| from_connect(&e))
}

async fn upload_multipart(
    path: &str,
    user: &User,
    content_type: &str,
    stream: ByteStream,
    md: &Metadata,
) -> Result<Vec<PathBuf>, Failure> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad multipart request: {e}"),
        )
    })?;
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut written = Vec::new();
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}")))?;
        let Some(field) = field else { break };
        if field.name() != Some("file") {
            continue;
        }
        // Without a path parameter the part's file name is the path (envd's rule).
        let name = if path.is_empty() {
            field.file_name().unwrap_or_default().to_owned()
        } else {
            path.to_owned()
        };
        let dest = target(&name, user)?;
        let chunks = field.map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e));
        write_file(&dest, user, Box::pin(chunks), md).await?;
        written.push(dest);
    }
    if written.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "multipart body has no \"file\" part",
        ));
    }
    Ok(written)
}

/// Creates or truncates `dest` to write (as the calling thread's user), parents created. An
/// existing file keeps its owner; a new one is the user's. The file is then chowned to the
/// owner it has, as envd chowns every upload: watchers see the same create, chmod, write.
fn open_for_writing(dest: &Path) -> Result<File, Failure> {
    if dest.is_dir() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("{} is a directory", shown(dest)),
        ));
    }
    if let Some(parent) = dest.parent() {
        ensure_dirs(parent).map_err(|e| from_connect(&e))?;
    }
    let file = File::create(dest).map_err(|e| from_io(&e, "cannot create", dest))?;
    if let Ok(meta) = file.metadata() {
        use std::os::unix::fs::MetadataExt;
        // Someone else's file the user may write but not chown: no event, as envd's failing
        // chown would give none either.
        let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
    }
    Ok(file)
}

/// Writes `chunks` to `dest` as `user` (created or truncated, parents created), then makes
/// `md` its whole metadata.
async fn write_file(
    dest: &Path,
    user: &User,
    mut chunks: ByteStream,
    md: &Metadata,
) -> Result<(), Failure> {
    let target = dest.to_path_buf();
    let file = as_user::run(user, move || open_for_writing(&target))
        .await
        .map_err(|e| from_connect(&e))??;
    let mut file = tokio::fs::File::from_std(file);
    while let Some(chunk) = chunks.next().await {
        // A broken body (bad gzip, truncated multipart) is the client's fault.
        let chunk = chunk.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the upload for {}: {e}", shown(dest)),
            )
        })?;
        file.write_all(&chunk)
            .await
            .map_err(|e| from_io(&e, "cannot write", dest))?;
    }
    // tokio's File finishes writes in the background: wait for them before answering.
    file.flush()
        .await
        .map_err(|e| from_io(&e, "cannot write", dest))?;
    let file = file.into_std().await;
    let (md, target) = (md.clone(), dest.to_path_buf());
    let kept = tokio::task::spawn_blocking(move || metadata::replace(&file, &md))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match kept {
        // A filesystem without xattrs (`/proc`, some virtual ones) keeps the body only.
        Err(e) if metadata::unsupported(&e) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Err(error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "not enough space for the metadata of {}: {e}",
                shown(&target)
            ),
        )),
        Err(e) => Err(from_io(&e, "cannot set the metadata of", &target)),
        Ok(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_unescaped() {
        let q = Some("path=%2Ftmp%2Fa+b%25&username=nobody&x");
        assert_eq!(query_param(q, "path").as_deref(), Some("/tmp/a b%"));
        assert_eq!(query_param(q, "username").as_deref(), Some("nobody"));
        assert_eq!(query_param(q, "x").as_deref(), Some(""));
        assert_eq!(query_param(q, "y"), None);
    }
}
