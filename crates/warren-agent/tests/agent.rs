//! The agent binary driven through the typed client: process lifecycle, I/O, signals, errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::{group_alive, peak_rss_kib, request, run, sh, Agent};
use warren_agent::{AgentError, ProcessEvent, Signal, StartRequest};

#[tokio::test]
async fn runs_a_command_and_reports_output_and_exit() {
    let agent = Agent::spawn().await;
    agent.client.health().await.unwrap();
    let out = run(&agent, &sh("echo hi; echo err >&2; exit 3")).await;
    assert!(out.pid > 0);
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(
        out.end,
        Some(ProcessEvent::End {
            exit_code: 3,
            exited: true,
            status: "exit status 3".into(),
            error: Some("exit status 3".into()),
        })
    );
    let ok = run(&agent, &request("/bin/true", &[])).await;
    assert_eq!(ok.exit_code(), 0);
    assert!(matches!(
        ok.end,
        Some(ProcessEvent::End {
            error: None,
            exited: true,
            ..
        })
    ));
}

#[tokio::test]
async fn honours_envs_and_cwd_and_hides_agent_config() {
    let agent = Agent::spawn().await;
    let mut req = sh(
        r#"echo "$FOO|$(pwd)|${WARREN_AGENT_TOKEN:-unset}${WARREN_AGENT_TOKEN_FILE:-unset}|$HOME|$PATH""#,
    );
    req.process.envs.insert("FOO".into(), "bar baz".into());
    req.process.cwd = Some("/tmp".into());
    let out = run(&agent, &req).await;
    let line = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = line.trim_end().split('|').collect();
    assert_eq!(fields[..3], ["bar baz", "/tmp", "unsetunset"]);
    assert!(!fields[3].is_empty(), "HOME unset");
    assert!(fields[4].contains("/bin"), "PATH {:?}", fields[4]);

    // No signal is blocked in started processes (under init the agent inherits a blocked set).
    let out = run(&agent, &sh("kill -TERM $$; echo survived")).await;
    assert_eq!(out.status(), "signal: terminated");
    assert!(out.stdout.is_empty());

    // A bare name is looked up in PATH.
    let out = run(&agent, &request("echo", &["found"])).await;
    assert_eq!(out.stdout, b"found\n");
}

#[tokio::test]
async fn stdin_via_send_input_and_close_stdin() {
    let agent = Agent::spawn().await;
    let mut stream = agent.client.start(&request("cat", &[])).await.unwrap();
    let Some(Ok(ProcessEvent::Start { pid })) = stream.next().await else {
        panic!("no start event");
    };
    agent.client.send_input(pid, b"hello ").await.unwrap();
    agent.client.send_input(pid, b"world").await.unwrap();
    agent.client.close_stdin(pid).await.unwrap();
    let out = collect_rest(&mut stream).await;
    assert_eq!(out.stdout, b"hello world");
    assert_eq!(out.exit_code(), 0);

    // stdin: false gives /dev/null: cat ends at once without CloseStdin.
    let mut req = request("cat", &[]);
    req.stdin = Some(false);
    let out = tokio::time::timeout(Duration::from_secs(5), run(&agent, &req))
        .await
        .expect("cat with stdin=false did not end");
    assert!(out.stdout.is_empty());
}

/// `collect` for a stream whose start event was already taken.
async fn collect_rest(stream: &mut warren_agent::ProcessStream) -> support::Outcome {
    let mut out = support::Outcome::default();
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            ProcessEvent::Data(warren_agent::ProcessData::Stdout(b)) => {
                out.stdout.extend_from_slice(&b)
            }
            ProcessEvent::Data(warren_agent::ProcessData::Stderr(b)) => {
                out.stderr.extend_from_slice(&b)
            }
            end @ ProcessEvent::End { .. } => out.end = Some(end),
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

#[tokio::test]
async fn sigkill_ends_the_whole_group_promptly() {
    let agent = Agent::spawn().await;
    // `; true` keeps sh from exec-ing sleep, so there really is a group of two.
    let mut stream = agent.client.start(&sh("sleep 100; true")).await.unwrap();
    let Some(Ok(ProcessEvent::Start { pid })) = stream.next().await else {
        panic!("no start event");
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(group_alive(pid));
    let sent = Instant::now();
    agent
        .client
        .send_signal(pid, Signal::Sigkill)
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(2), collect_rest(&mut stream))
        .await
        .expect("stream did not end after SIGKILL");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(
        out.end,
        Some(ProcessEvent::End {
            exit_code: -1,
            exited: false,
            status: "signal: killed".into(),
            error: Some("signal: killed".into()),
        })
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!group_alive(pid), "sleep survived the group kill");

    // SIGTERM by enum works too.
    let mut stream = agent.client.start(&sh("sleep 100; true")).await.unwrap();
    let Some(Ok(ProcessEvent::Start { pid })) = stream.next().await else {
        panic!("no start event");
    };
    agent
        .client
        .send_signal(pid, Signal::Sigterm)
        .await
        .unwrap();
    let out = collect_rest(&mut stream).await;
    assert_eq!(out.status(), "signal: terminated");
}

#[tokio::test]
async fn ten_megabytes_arrive_complete_with_flat_memory() {
    let agent = Agent::spawn().await;
    let before = peak_rss_kib(agent.pid());
    let out = run(&agent, &sh("head -c 10000000 /dev/zero")).await;
    assert_eq!(out.stdout.len(), 10_000_000);
    assert!(out.stdout.iter().all(|b| *b == 0));
    assert_eq!(out.exit_code(), 0);
    let after = peak_rss_kib(agent.pid());
    eprintln!("agent peak RSS: {before} KiB before, {after} KiB after 10 MB");
    // Buffering the output would cost 13+ MB (base64); the bounded queue costs well under 2.
    assert!(
        after < before + 4096,
        "peak RSS grew from {before} to {after} KiB"
    );
}

#[tokio::test]
async fn a_slow_reader_slows_the_process_instead_of_filling_memory() {
    let agent = Agent::spawn().await;
    let before = peak_rss_kib(agent.pid());
    let mut stream = agent
        .client
        .start(&sh("head -c 50000000 /dev/zero"))
        .await
        .unwrap();
    let mut total = 0usize;
    // Stall the reader, then drain.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Some(event) = stream.next().await {
        if let ProcessEvent::Data(warren_agent::ProcessData::Stdout(b)) = event.unwrap() {
            total += b.len();
        }
    }
    assert_eq!(total, 50_000_000);
    let after = peak_rss_kib(agent.pid());
    eprintln!("agent peak RSS: {before} KiB before, {after} KiB after a stalled 50 MB");
    assert!(
        after < before + 4096,
        "peak RSS grew from {before} to {after} KiB"
    );
}

#[tokio::test]
async fn errors_for_unknown_pids_missing_programs_and_cwds() {
    let agent = Agent::spawn().await;
    let err = agent
        .client
        .send_signal(999_999, Signal::Sigkill)
        .await
        .unwrap_err();
    assert_eq!(err.rpc_code(), Some("not_found"), "{err}");
    let err = agent.client.send_input(999_999, b"x").await.unwrap_err();
    assert_eq!(err.rpc_code(), Some("not_found"), "{err}");
    let err = agent.client.close_stdin(999_999).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some("not_found"), "{err}");

    for req in [request("/no/such/program", &[]), {
        let mut r = request("/bin/true", &[]);
        r.process.cwd = Some("/no/such/dir".into());
        r
    }] {
        let started = Instant::now();
        let mut stream = agent.client.start(&req).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await
            .expect("hang on a failed start");
        match first {
            Some(Err(AgentError::Rpc { code, message })) => {
                assert_eq!(code, "invalid_argument", "{message}");
            }
            other => panic!("expected an end-of-stream error, got {other:?}"),
        }
        assert!(stream.next().await.is_none());
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

#[tokio::test]
async fn list_shows_running_processes_with_tags() {
    let agent = Agent::spawn().await;
    let mut req: StartRequest = request("sleep", &["30"]);
    req.tag = Some("bg".into());
    let mut stream = agent.client.start(&req).await.unwrap();
    let Some(Ok(ProcessEvent::Start { pid })) = stream.next().await else {
        panic!("no start event");
    };
    let list = agent.client.list().await.unwrap();
    let found = list.iter().find(|p| p.pid == pid).expect("not listed");
    assert_eq!(found.tag.as_deref(), Some("bg"));
    assert_eq!(found.config.cmd, "sleep");
    assert_eq!(found.config.args, ["30"]);
    agent
        .client
        .send_signal(pid, Signal::Sigkill)
        .await
        .unwrap();
    collect_rest(&mut stream).await;
    let list = agent.client.list().await.unwrap();
    assert!(
        list.iter().all(|p| p.pid != pid),
        "dead process still listed"
    );
}

#[tokio::test]
async fn a_background_grandchild_does_not_hold_the_stream_open() {
    let agent = Agent::spawn().await;
    let started = Instant::now();
    let out = run(&agent, &sh("sleep 30 & echo done")).await;
    let took = started.elapsed();
    assert_eq!(out.stdout, b"done\n");
    assert_eq!(out.exit_code(), 0);
    eprintln!("stream with a background grandchild ended after {took:?}");
    assert!(took < Duration::from_millis(600), "took {took:?}");
    // The grandchild is still in the shell's group; clean it up.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(out.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[tokio::test]
async fn processes_outlive_a_disconnected_client() {
    let agent = Agent::spawn().await;
    let marker = std::env::temp_dir().join(format!("warren-agent-test-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do head -c 100000 /dev/zero; sleep 0.02; done; touch {}",
        marker.display()
    );
    let mut stream = agent.client.start(&sh(&script)).await.unwrap();
    assert!(matches!(
        stream.next().await,
        Some(Ok(ProcessEvent::Start { .. }))
    ));
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "process died with its client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(&marker);
    agent.client.health().await.unwrap();
}

#[tokio::test]
async fn start_latency() {
    let agent = Agent::spawn().await;
    let req = request("/bin/true", &[]);
    for _ in 0..20 {
        run(&agent, &req).await;
    }
    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let out = run(&agent, &req).await;
        samples.push(t.elapsed());
        assert_eq!(out.exit_code(), 0);
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    eprintln!("Start /bin/true round trip: median {median:?}, p99 {p99:?}");
    assert!(median < Duration::from_millis(50), "median {median:?}");
}

#[tokio::test]
async fn an_unreadable_token_file_stops_the_agent_instead_of_serving_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    // The fallback variable is set too: the file, when named, must win even when unreadable.
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(support::agent_bin())
            .env("WARREN_AGENT_ADDR", addr.to_string())
            .env("WARREN_AGENT_TOKEN_FILE", &missing)
            .env("WARREN_AGENT_TOKEN", "fallback")
            .env_remove("WARREN_AGENT_CMD")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the agent kept running with an unreadable token file")
    .unwrap();
    assert!(!out.status.success(), "{:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARREN_AGENT_TOKEN_FILE") && stderr.contains("no-such-token"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[tokio::test]
async fn the_token_from_the_file_is_required() {
    let agent = Agent::spawn().await;
    let wrong = warren_agent::AgentClient::new(agent.addr, "fallback");
    let e = wrong.list().await.unwrap_err();
    assert_eq!(e.rpc_code(), Some("unauthenticated"), "{e}");
    agent.client.list().await.unwrap();
}
