//! The tools: each a call (or two) of the `/v1` API, answered as JSON text, or as a tool error
//! in the API's own words.
use base64::Engine;
use futures::StreamExt;
use reqwest::Method;
use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{
    CallToolResult, ContentBlock, Extensions, ProgressNotificationParam, RequestMetaObject,
};
use rmcp::{tool, tool_router, ErrorData, Peer, RoleServer};
use serde_json::{json, Value};

use crate::api::{path, Api, ApiError, Call, Output};
use crate::params;

/// What one call answers: the result, or the tool's error.
type Answer = Result<CallToolResult, ErrorData>;

/// At most this much of each stream comes back in a command's result (the rest is said to be
/// cut, and read from a file by the agent if it needs it).
const RESULT_OUTPUT_LIMIT: usize = 64 * 1024;

/// The largest file `read_file` answers (the server holds it while it answers).
const READ_FILE_LIMIT: usize = 10 << 20;

/// Where background commands keep their output and exit status inside the sandbox.
const BACKGROUND_DIR: &str = "/tmp/.warren-mcp";

/// Warren's primitives as MCP tools.
#[derive(Clone)]
pub struct Warren {
    pub(crate) api: Api,
    /// Whether each call brings its own key (the server's `/mcp`: the HTTP request's bearer
    /// token) rather than the one `api` was made with (`warren mcp`, stdio).
    pub(crate) per_request_key: bool,
    pub(crate) tool_router: ToolRouter<Self>,
}

fn ok(v: &Value) -> Answer {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

fn refused(e: ApiError) -> Answer {
    Ok(CallToolResult::error(vec![ContentBlock::text(
        e.to_string(),
    )]))
}

fn invalid(msg: impl Into<String>) -> Answer {
    Ok(CallToolResult::error(vec![ContentBlock::text(msg.into())]))
}

/// The first `limit` bytes of `s` (at a character boundary), and whether it was cut.
fn cut(s: &str, limit: usize) -> (&str, bool) {
    if s.len() <= limit {
        return (s, false);
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// An exec request's JSON: `cmd` with what the tool's caller asked for.
fn exec_body(
    cmd: Value,
    timeout_s: u64,
    cwd: Option<String>,
    user: Option<String>,
    env: Option<std::collections::BTreeMap<String, String>>,
) -> Value {
    let mut exec = json!({"cmd": cmd, "timeout_s": timeout_s});
    for (k, v) in [("cwd", cwd), ("user", user)] {
        if let Some(v) = v {
            exec[k] = Value::from(v);
        }
    }
    if let Some(env) = env {
        exec["env"] = json!(env);
    }
    exec
}

impl Warren {
    /// The API with the key this call should use.
    fn api(&self, ext: &Extensions) -> Api {
        if !self.per_request_key {
            return self.api.clone();
        }
        let key = ext
            .get::<http::request::Parts>()
            .and_then(|p| crate::api::bearer(&p.headers));
        self.api.with_key(key)
    }

    async fn call(&self, ext: &Extensions, call: Call) -> Answer {
        match self.api(ext).json::<Value>(call).await {
            Ok(v) => ok(&v),
            Err(e) => refused(e),
        }
    }
}

#[tool_router(vis = "pub(crate)")]
impl Warren {
    #[tool(
        description = "Create an isolated Linux sandbox (a container under gVisor by default) and wait until it runs. Answers the sandbox: its `id` (for every other tool), state, address, limits and `expires_at`. Defaults: image `base` (Debian with python3, node, git, curl), 1 CPU, 512 MiB, deleted after 300 s unless extended."
    )]
    async fn create_sandbox(
        &self,
        Parameters(p): Parameters<params::Create>,
        ext: Extensions,
    ) -> Answer {
        let body = serde_json::to_value(&p).unwrap_or_else(|_| json!({}));
        self.call(&ext, Call::new(Method::POST, "/v1/sandboxes").json(&body))
            .await
    }

    #[tool(
        description = "List your sandboxes (id, state, image, metadata, expires_at), optionally only those in a state or with given metadata."
    )]
    async fn list_sandboxes(
        &self,
        Parameters(p): Parameters<params::List>,
        ext: Extensions,
    ) -> Answer {
        let mut call = Call::new(Method::GET, "/v1/sandboxes");
        if let Some(s) = p.state {
            call = call.query("state", s);
        }
        for (k, v) in p.metadata.unwrap_or_default() {
            call = call.query(format!("metadata.{k}"), v);
        }
        self.call(&ext, call).await
    }

    #[tool(
        description = "One sandbox: its state, limits, address, the TCP ports listening in it now and their preview URLs (`urls`)."
    )]
    async fn get_sandbox(
        &self,
        Parameters(p): Parameters<params::Sandbox>,
        ext: Extensions,
    ) -> Answer {
        let route = format!("/v1/sandboxes/{}", path(&p.id));
        self.call(&ext, Call::new(Method::GET, route)).await
    }

    #[tool(
        description = "Run a shell command in a sandbox and wait for it: answers exit_code, stdout and stderr (each cut at 64 KiB). Output is also sent as progress notifications while it runs, when the client asks for progress. A non-zero exit code is a result, not an error."
    )]
    async fn run_command(
        &self,
        Parameters(p): Parameters<params::Run>,
        ext: Extensions,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> Answer {
        let cmd = json!(["sh", "-c", p.command]);
        let exec = exec_body(cmd, p.timeout_s.unwrap_or(60), p.cwd, p.user, p.env);
        let api = self.api(&ext);
        let stream = match api.exec_stream(&p.id, &exec).await {
            Ok(s) => s,
            Err(e) => return refused(e),
        };
        futures::pin_mut!(stream);
        let token = meta.get_progress_token();
        let (mut stdout, mut stderr, mut step) = (String::new(), String::new(), 0u32);
        let mut exit = Value::Null;
        while let Some(event) = stream.next().await {
            let (text, is_out) = match event {
                Ok(Output::Stdout(t)) => (t, true),
                Ok(Output::Stderr(t)) => (t, false),
                Ok(Output::Exit(v)) => {
                    exit = v;
                    break;
                }
                Err(e) => return refused(e),
            };
            if let Some(token) = &token {
                step += 1;
                let _ = peer
                    .notify_progress(
                        ProgressNotificationParam::new(token.clone(), f64::from(step))
                            .with_message(text.clone()),
                    )
                    .await;
            }
            let into = if is_out { &mut stdout } else { &mut stderr };
            if into.len() <= RESULT_OUTPUT_LIMIT {
                into.push_str(&text);
            }
        }
        if exit.is_null() {
            return refused(ApiError::Garbled(
                "the command's output ended without its exit status".into(),
            ));
        }
        let (out, out_cut) = cut(&stdout, RESULT_OUTPUT_LIMIT);
        let (err, err_cut) = cut(&stderr, RESULT_OUTPUT_LIMIT);
        ok(&json!({
            "exit_code": exit["exit_code"],
            "timed_out": exit["timed_out"],
            "stdout": out,
            "stderr": err,
            "output_cut": out_cut || err_cut,
        }))
    }

    #[tool(
        description = "Start a shell command in the background of a sandbox (a server, a long job) and return at once with a `handle`; read what it printed so far, and whether it ended, with `read_command_output`."
    )]
    async fn start_command(
        &self,
        Parameters(p): Parameters<params::Run>,
        ext: Extensions,
    ) -> Answer {
        // The command's output and exit status go to files of the sandbox's own, so they
        // outlive this call and the agent's connection; setsid keeps it out of the exec's
        // process group.
        let script = format!(
            "d={BACKGROUND_DIR}; mkdir -p \"$d\" || exit 1; h=$(date +%s)$$; : >\"$d/$h.out\"; \
             run=nohup; command -v setsid >/dev/null 2>&1 && run=setsid; \
             $run sh -c 'sh -c \"$0\" >\"$1.out\" 2>&1 </dev/null; echo $? >\"$1.exit\"' \
             \"$0\" \"$d/$h\" >/dev/null 2>&1 </dev/null & echo $h"
        );
        let cmd = json!(["sh", "-c", script, p.command]);
        let exec = exec_body(cmd, 30, p.cwd, p.user, p.env);
        let route = format!("/v1/sandboxes/{}/exec", path(&p.id));
        match self
            .api(&ext)
            .json::<Value>(Call::new(Method::POST, route).json(&exec))
            .await
        {
            Ok(v) if v["exit_code"] == 0 => ok(&json!({
                "handle": v["stdout"].as_str().unwrap_or_default().trim(),
            })),
            Ok(v) => invalid(format!(
                "the command could not be started: {}",
                v["stderr"].as_str().unwrap_or_default()
            )),
            Err(e) => refused(e),
        }
    }

    #[tool(
        description = "What a background command (from `start_command`) printed after `offset` bytes, whether it is still running, and its exit code once it ended. Pass the returned `next_offset` as `offset` to read on."
    )]
    async fn read_command_output(
        &self,
        Parameters(p): Parameters<params::Background>,
        ext: Extensions,
    ) -> Answer {
        if p.handle.is_empty() || !p.handle.bytes().all(|b| b.is_ascii_digit()) {
            return invalid(format!("{:?} is not a handle from start_command", p.handle));
        }
        let api = self.api(&ext);
        let file = |ext: &str| format!("{BACKGROUND_DIR}/{}.{ext}", p.handle);
        let files = format!("/v1/sandboxes/{}/files", path(&p.id));
        let read = |f: String| Call::new(Method::GET, files.clone()).query("path", f);
        // The exit status first: output written just before the end is then read too.
        let exit = match api.bytes(read(file("exit"))).await {
            Ok(b) => String::from_utf8_lossy(&b).trim().parse::<i64>().ok(),
            Err(ApiError::Refused { code, .. }) if code == "not_found" => None,
            Err(e) => return refused(e),
        };
        let from = p.offset.unwrap_or(0);
        let (out, more) = match api
            .range(read(file("out")), from, RESULT_OUTPUT_LIMIT)
            .await
        {
            Ok(r) => r,
            Err(e) => return refused(e),
        };
        // Whole characters only: a character cut at the end is read next time, whole.
        let whole = match std::str::from_utf8(&out) {
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            _ => out.len(),
        };
        let text = String::from_utf8_lossy(&out[..whole]);
        ok(&json!({
            "output": text,
            "next_offset": from + whole as u64,
            "more": more || whole < out.len(),
            "running": exit.is_none(),
            "exit_code": exit,
        }))
    }

    #[tool(
        description = "Write a file in a sandbox (parent directories are made; an existing file is replaced). Text, or binary as base64."
    )]
    async fn write_file(
        &self,
        Parameters(p): Parameters<params::Write>,
        ext: Extensions,
    ) -> Answer {
        let body = match p.encoding.unwrap_or_default() {
            params::Encoding::Text => p.content.into_bytes(),
            params::Encoding::Base64 => {
                match base64::engine::general_purpose::STANDARD.decode(&p.content) {
                    Ok(b) => b,
                    Err(e) => return invalid(format!("content is not base64: {e}")),
                }
            }
        };
        let size = body.len();
        let route = format!("/v1/sandboxes/{}/files", path(&p.id));
        let call = Call::new(Method::PUT, route)
            .query("path", &p.path)
            .bytes(body);
        match self.api(&ext).send(call).await {
            Ok(_) => ok(&json!({"path": p.path, "size": size})),
            Err(e) => refused(e),
        }
    }

    #[tool(
        description = "Read a file of a sandbox: as text (the default; a file that is not UTF-8 is an error: ask for base64), or as base64."
    )]
    async fn read_file(&self, Parameters(p): Parameters<params::Path>, ext: Extensions) -> Answer {
        let route = format!("/v1/sandboxes/{}/files", path(&p.id));
        let call = Call::new(Method::GET, route).query("path", &p.path);
        let bytes = match self.api(&ext).range(call, 0, READ_FILE_LIMIT).await {
            Ok((_, true)) => {
                return invalid(format!(
                    "{} is larger than {} MiB: read a part of it with run_command (head, tail, \
                     dd), or fetch it from the REST API (GET /v1/sandboxes/{{id}}/files)",
                    p.path,
                    READ_FILE_LIMIT >> 20
                ))
            }
            Ok((b, false)) => b,
            Err(e) => return refused(e),
        };
        match p.encoding.unwrap_or_default() {
            params::Encoding::Base64 => ok(&json!({
                "path": p.path,
                "content": base64::engine::general_purpose::STANDARD.encode(&bytes),
                "encoding": "base64",
            })),
            params::Encoding::Text => match String::from_utf8(bytes.to_vec()) {
                Ok(text) => Ok(CallToolResult::success(vec![ContentBlock::text(text)])),
                Err(_) => invalid(format!(
                    "{} is not UTF-8 text ({} bytes): read it with encoding base64",
                    p.path,
                    bytes.len()
                )),
            },
        }
    }

    #[tool(
        description = "List a directory of a sandbox: name, path, type (file, dir, symlink), size, mode, modified_at of each entry."
    )]
    async fn list_files(&self, Parameters(p): Parameters<params::Path>, ext: Extensions) -> Answer {
        let route = format!("/v1/sandboxes/{}/files/list", path(&p.id));
        self.call(&ext, Call::new(Method::GET, route).query("path", &p.path))
            .await
    }

    #[tool(description = "Remove a file or directory (with what it holds) of a sandbox.")]
    async fn remove_file(
        &self,
        Parameters(p): Parameters<params::Path>,
        ext: Extensions,
    ) -> Answer {
        let route = format!("/v1/sandboxes/{}/files", path(&p.id));
        let call = Call::new(Method::DELETE, route).query("path", &p.path);
        match self.call(&ext, call).await? {
            r if r.is_error == Some(true) => Ok(r),
            _ => ok(&json!({"removed": p.path})),
        }
    }

    #[tool(
        description = "The preview URL of a port of a sandbox: where a server listening on that port inside it is reached over HTTP from outside. The port must be listening (start the server first, e.g. with start_command). A private sandbox's URL takes the `headers` given (or open `browser_url` once in a browser)."
    )]
    async fn preview_url(
        &self,
        Parameters(p): Parameters<params::Port>,
        ext: Extensions,
    ) -> Answer {
        let route = format!("/v1/sandboxes/{}", path(&p.id));
        let sb: Value = match self.api(&ext).json(Call::new(Method::GET, route)).await {
            Ok(v) => v,
            Err(e) => return refused(e),
        };
        match sb["urls"][p.port.to_string()].as_str() {
            // A private port takes the sandbox's traffic token: as a header, or once in the
            // URL for a browser (which then keeps it as a cookie of that host).
            Some(url) => match sb["traffic_token"]
                .as_str()
                .filter(|_| sb["public"] != true)
            {
                Some(token) => ok(&json!({
                    "port": p.port,
                    "url": url,
                    "headers": {"X-Warren-Traffic-Token": token},
                    "browser_url": format!("{url}?warren_token={token}"),
                })),
                None => ok(&json!({"port": p.port, "url": url})),
            },
            None => invalid(format!(
                "nothing listens on port {} of sandbox {} yet (listening now: {})",
                p.port, p.id, sb["ports"]
            )),
        }
    }

    #[tool(
        description = "Change a sandbox's outbound network policy, in force at once: \"allow\", \"deny\", or {\"allow\": [networks, addresses or domain names]}."
    )]
    async fn set_egress(
        &self,
        Parameters(p): Parameters<params::Egress>,
        ext: Extensions,
    ) -> Answer {
        let route = format!("/v1/sandboxes/{}/network", path(&p.id));
        let call = Call::new(Method::PUT, route).json(&json!({"egress": p.egress}));
        self.call(&ext, call).await
    }

    #[tool(description = "Give a sandbox a new lifetime: deleted this many seconds from now.")]
    async fn set_timeout(
        &self,
        Parameters(p): Parameters<params::Timeout>,
        ext: Extensions,
    ) -> Answer {
        let route = format!("/v1/sandboxes/{}/timeout", path(&p.id));
        let call = Call::new(Method::POST, route).json(&json!({"timeout_s": p.timeout_s}));
        self.call(&ext, call).await
    }

    #[tool(
        description = "Pause a sandbox: its processes, memory and files kept on disk, nothing of it running, until resume_sandbox (or any request that reaches it, with auto-resume). Where the server cannot pause, the error says so."
    )]
    async fn pause_sandbox(
        &self,
        Parameters(p): Parameters<params::Sandbox>,
        ext: Extensions,
    ) -> Answer {
        let route = format!("/v1/sandboxes/{}/pause", path(&p.id));
        self.call(&ext, Call::new(Method::POST, route)).await
    }

    #[tool(description = "Resume a paused sandbox, its processes and memory as they were.")]
    async fn resume_sandbox(
        &self,
        Parameters(p): Parameters<params::Sandbox>,
        ext: Extensions,
    ) -> Answer {
        let route = format!("/v1/sandboxes/{}/resume", path(&p.id));
        self.call(&ext, Call::new(Method::POST, route)).await
    }

    #[tool(
        description = "Take a named snapshot of a sandbox (its files, processes and memory); create_sandbox cannot name it yet, the REST API's create with \"snapshot\" can."
    )]
    async fn snapshot_sandbox(
        &self,
        Parameters(p): Parameters<params::Snapshot>,
        ext: Extensions,
    ) -> Answer {
        let route = format!("/v1/sandboxes/{}/snapshots", path(&p.id));
        let call = Call::new(Method::POST, route).json(&json!({"name": p.name}));
        self.call(&ext, call).await
    }

    #[tool(description = "Delete a sandbox and everything in it, at once.")]
    async fn kill_sandbox(
        &self,
        Parameters(p): Parameters<params::Sandbox>,
        ext: Extensions,
    ) -> Answer {
        let route = format!("/v1/sandboxes/{}", path(&p.id));
        match self.call(&ext, Call::new(Method::DELETE, route)).await? {
            r if r.is_error == Some(true) => Ok(r),
            _ => ok(&json!({"deleted": p.id})),
        }
    }
}
