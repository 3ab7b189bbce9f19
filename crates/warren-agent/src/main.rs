//! `warren-agent`: PID 1 of every Warren sandbox: the server, which as PID 1 also reaps the
//! sandbox's orphans (or, briefly, the exec shim in front of a process the server starts).
//! `warren-agent demo-http` is something else: a demo HTTP server run as an ordinary process
//! inside a sandbox.

mod agent;

fn main() -> std::process::ExitCode {
    // The shim comes first: it runs as root before dropping to the requested user, and its
    // argv is the user's command, which may well be named `demo-http`. It is chosen only by an
    // environment variable the agent sets, so checking it first changes nothing else.
    if let Some(spec) = agent::exec_shim::wanted() {
        agent::exec_shim::run(spec)
    } else if let Some(dest) = agent::install::wanted() {
        agent::install::run(&dest)
    } else if let Some((paths, into)) = agent::seed::wanted() {
        agent::seed::run(&paths, &into)
    } else if let Some(args) = agent::demo_http::wanted() {
        agent::demo_http::run(&args)
    } else {
        agent::server::run()
    }
}
