//! The agent binary's internals (not part of the library): configuration, the PID 1 init loop,
//! the HTTP server, the Connect methods, supervision of the processes it starts, the
//! filesystem services, the listening-ports table, and the `demo-http` test server.

pub mod body;
pub mod config;
pub mod demo_http;
pub mod entry;
pub mod exec_shim;
pub mod exit_status;
pub mod files_http;
pub mod fs;
pub mod init;
pub mod ports;
pub mod process;
pub mod pty;
pub mod pump;
pub mod rpc;
pub mod server;
pub mod spawn;
pub mod streams;
pub mod users;
pub mod watch;
