//! Builds the in-sandbox agent as a static binary and hands its path to `include_bytes!`, so the
//! `warren` binary carries the agent it mounts into every sandbox. The agent is built by a
//! nested cargo with its own target dir (no lock shared with the outer build) and
//! `+crt-static`, which cannot apply to the host build itself (proc-macros must be dynamic).
//! `WARREN_AGENT_BINARY=/path` skips the nested build and embeds that file instead.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest
        .parent()
        .and_then(|p| p.parent())
        .expect("crate lives in <workspace>/crates/")
        .to_path_buf();
    let agent = workspace.join("crates/warren-agent");
    println!("cargo:rerun-if-changed={}", agent.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        agent.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    println!("cargo:rerun-if-env-changed=WARREN_AGENT_BINARY");
    let dest = out.join("warren-agent");

    if let Ok(prebuilt) = env::var("WARREN_AGENT_BINARY") {
        std::fs::copy(&prebuilt, &dest).expect("copy WARREN_AGENT_BINARY");
        return;
    }

    let target = "x86_64-unknown-linux-gnu";
    let target_dir = workspace.join("target/agent");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--release",
            "-p",
            "warren-agent",
            "--bin",
            "warren-agent",
        ])
        .args(["--target", target])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
    for var in [
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the agent");
    assert!(status.success(), "building the static warren-agent failed");
    let built = target_dir.join(target).join("release/warren-agent");
    std::fs::copy(&built, &dest).expect("copy the built agent");
}
