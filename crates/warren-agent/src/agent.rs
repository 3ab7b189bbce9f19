//! The agent binary's internals (not part of the library): configuration, the PID 1 init loop,
//! the HTTP server, the Connect methods, supervision of the processes it starts, the
//! filesystem services, the listening-ports table, and the `demo-http` test server.

pub mod as_user;
pub mod body;
pub mod config;
pub mod demo_http;
pub mod entry;
pub mod exec_shim;
pub mod exit_status;
pub mod files_http;
pub mod fs;
pub mod fs_error;
pub mod init;
pub mod install;
pub mod limits;
pub mod metadata;
pub mod ports;
pub mod process;
pub mod pty;
pub mod pump;
pub mod rpc;
pub mod seed;
pub mod server;
pub mod signed_url;
pub mod spawn;
pub mod streams;
pub mod users;
pub mod watch;

/// The next connection on `listener`, with Nagle off (small messages must leave at once, not
/// wait for the peer's delayed ACK). Accept errors (typically EMFILE) back off instead of
/// spinning; `who` names the server in their message.
pub async fn accept(listener: &tokio::net::TcpListener, who: &str) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                eprintln!("{who}: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
