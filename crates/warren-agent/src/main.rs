//! `warren-agent`: PID 1 of every Warren sandbox. As PID 1 it is a tiny init that reaps orphans
//! and forwards signals to a second copy of itself, the server; otherwise it is the server.

mod agent;

fn main() -> std::process::ExitCode {
    if agent::init::wanted() {
        agent::init::run()
    } else {
        agent::server::run()
    }
}
