//! Warren's primitives as MCP tools (the official Rust SDK, rmcp): one handler, [`Warren`],
//! served over stdio by `warren mcp` (a local agent's) and over streamable HTTP at the
//! server's `/mcp` (authenticated by API key). Each tool is a call of the `/v1` API with the
//! caller's key, so it is checked, limited, audited and answered as that call would be.
mod api;
mod params;
mod tools;

use std::sync::Arc;

use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::{
    session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
};
use rmcp::{tool_handler, ServerHandler, ServiceExt};

pub use api::{Api, ApiError};
pub use tools::Warren;

const INSTRUCTIONS: &str = "Warren runs code in isolated Linux sandboxes. create_sandbox \
makes one (answering its id); run_command runs a shell command in it and waits; \
start_command/read_command_output run one in the background (servers, long jobs); \
write_file/read_file/list_files/remove_file handle its files; preview_url gives the URL of a \
port a server in it listens on; kill_sandbox deletes it. Sandboxes are deleted after their \
timeout (300 s by default; set_timeout extends it).";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Warren {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("warren", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

impl Warren {
    /// The tools, calling `api` with its key.
    pub fn new(api: Api) -> Warren {
        Warren {
            api,
            per_request_key: false,
            tool_router: Self::tool_router(),
        }
    }

    /// The tools, calling `api` with each HTTP request's own bearer key.
    pub fn per_request(api: Api) -> Warren {
        Warren {
            per_request_key: true,
            ..Warren::new(api)
        }
    }
}

/// Serves the tools on standard input and output until the client goes.
pub async fn serve_stdio(api: Api) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let running = Warren::new(api).serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}

/// The tools as an MCP streamable HTTP service (a tower service, for the server's `/mcp`),
/// each call made to `api` with the request's own key.
pub fn http_service(api: Api) -> StreamableHttpService<Warren, LocalSessionManager> {
    // Any Host: DNS rebinding needs an ambient credential, and calls here carry a bearer
    // key a rebinding page cannot send.
    let config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    // A session is dropped after this long without traffic: longer than a quiet command
    // may run (rmcp's default, 5 minutes, would end a silent `run_command` of 6).
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(std::time::Duration::from_secs(3600));
    StreamableHttpService::new(
        move || Ok(Warren::per_request(api.clone())),
        Arc::new(sessions),
        config,
    )
}
