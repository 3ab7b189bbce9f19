//! `warren-agent`: PID 1 of every Warren sandbox. As PID 1 it is a tiny init that reaps orphans
//! and forwards signals to a second copy of itself, the server; otherwise it is the server (or,
//! briefly, the exec shim in front of a process the server starts).

mod agent;

fn main() -> std::process::ExitCode {
    if let Some(spec) = agent::exec_shim::wanted() {
        agent::exec_shim::run(spec)
    } else if agent::init::wanted() {
        agent::init::run()
    } else {
        agent::server::run()
    }
}
