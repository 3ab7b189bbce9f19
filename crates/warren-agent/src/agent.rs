//! The agent binary's internals (not part of the library): configuration, the PID 1 init loop,
//! the HTTP server, and supervision of the processes it starts.

pub mod body;
pub mod config;
pub mod exit_status;
pub mod init;
pub mod process;
pub mod rpc;
pub mod server;
