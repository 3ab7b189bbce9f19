//! The agent's own protocol inside real sandboxes under both runtimes, reached the way Warren's
//! server reaches it (the sandbox address, port 49983, its token): the filesystem service
//! (Stat, MakeDir, Move, ListDir with depth, Remove), a recursive watch whose events arrive in
//! order, Connect to a running process by tag, List, and the token check.
//! Needs root, crun, runsc.
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, RUNTIMES};
use serde_json::{json, Value};
use warren_agent::{
    envelope, AgentClient, EventType, FileType, ProcessConfig, ProcessData, ProcessEvent,
    ProcessInput, ProcessSelector, StartRequest, StreamInputRequest, WatchEvent,
};

/// The sandbox's agent token, read from its file as the server wrote it.
fn token(s: &TestServer, id: &str) -> String {
    // The server hands the agent its token in this file (never in its environment).
    let path = common::state::token_file(s, id);
    std::fs::read_to_string(&path)
        .expect("the agent's token file")
        .trim()
        .to_owned()
}

fn agent(s: &TestServer, sb: &Value) -> AgentClient {
    let id = sb["id"].as_str().expect("id");
    let ip: std::net::Ipv4Addr = sb["ip"].as_str().expect("ip").parse().expect("ip");
    AgentClient::new(SocketAddr::from((ip, 49983)), &token(s, id))
}

async fn filesystem_and_watch(s: &TestServer, rt: &str) {
    let sb = s.create(json!({"image": "busybox", "runtime": rt})).await;
    let a = agent(s, &sb);

    // The token is checked.
    let ip: std::net::Ipv4Addr = sb["ip"].as_str().expect("ip").parse().expect("ip");
    let wrong = AgentClient::new(SocketAddr::from((ip, 49983)), "not-the-token");
    let e = wrong
        .stat("/")
        .await
        .expect_err("a wrong token must be refused");
    assert_eq!(e.rpc_code(), Some("unauthenticated"), "{rt}: {e}");

    let root = a.stat("/").await.expect("stat /");
    assert_eq!(root.file_type, FileType::Directory);
    let made = a.make_dir("/w/a/b").await.expect("mkdir -p");
    assert_eq!(made.path, "/w/a/b");
    let e = a.stat("/w/nope").await.expect_err("missing");
    assert_eq!(e.rpc_code(), Some("not_found"), "{rt}");

    // A recursive watch sees create → write → rename → remove, in order, in a new subdirectory too.
    let mut watch = a.watch_dir("/w", true).await.expect("watch");
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(Ok(WatchEvent::Start))) => {}
        other => panic!("{rt}: first watch event {other:?}"),
    }
    let script = "echo one > /w/a/b/f; echo two >> /w/a/b/f; chmod 600 /w/a/b/f; mv /w/a/b/f /w/a/b/g; rm /w/a/b/g";
    let v = s
        .exec(
            sb["id"].as_str().expect("id"),
            json!({"cmd": ["sh", "-c", script]}),
        )
        .await;
    assert_eq!(v["exit_code"], 0);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(t, n): &(EventType, String)| *t == EventType::Remove && n.ends_with('g'))
    {
        let ev = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap_or_else(|_| panic!("{rt}: watch stalled after {seen:?}"))
            .expect("watch ended")
            .expect("watch event");
        if let WatchEvent::Filesystem(e) = ev {
            seen.push((e.event_type, e.name));
        }
    }
    let order: Vec<EventType> = seen
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| matches!(t, EventType::Create | EventType::Rename | EventType::Remove))
        .collect();
    let first = |t| order.iter().position(|x| *x == t).unwrap_or(usize::MAX);
    assert!(
        first(EventType::Create) < first(EventType::Rename),
        "{rt}: {seen:?}"
    );
    assert!(
        first(EventType::Rename) < first(EventType::Remove),
        "{rt}: {seen:?}"
    );
    assert!(
        seen.iter().any(|(t, _)| *t == EventType::Write),
        "{rt}: no write event in {seen:?}"
    );

    // Move and list with depth.
    a.make_dir("/w/a/c/d").await.expect("mkdir");
    let moved = a.rename("/w/a/c", "/w/moved").await.expect("move");
    assert_eq!(moved.path, "/w/moved");
    let shallow = a.list_dir("/w", 1).await.expect("list");
    let mut names: Vec<&str> = shallow.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "moved"], "{rt}");
    let deep = a.list_dir("/w", 2).await.expect("list depth 2");
    assert!(
        deep.iter().any(|e| e.path == "/w/moved/d"),
        "{rt}: depth 2 misses /w/moved/d"
    );
    a.remove("/w").await.expect("remove");
    assert_eq!(
        a.stat("/w").await.expect_err("gone").rpc_code(),
        Some("not_found")
    );

    // Connect: attach to a running process by tag and see its output from now on.
    let start = StartRequest {
        process: ProcessConfig {
            cmd: "sh".into(),
            args: vec![
                "-c".into(),
                "sleep 1; for i in 1 2 3; do echo tick$i; sleep 0.2; done".into(),
            ],
            ..Default::default()
        },
        tag: Some("ticker".into()),
        ..Default::default()
    };
    let mut started = a.start(&start).await.expect("start");
    let pid = match started.next().await {
        Some(Ok(ProcessEvent::Start { pid })) => pid,
        other => panic!("{rt}: {other:?}"),
    };
    let listed = a.list().await.expect("list processes");
    assert!(
        listed
            .iter()
            .any(|p| p.pid == pid && p.tag.as_deref() == Some("ticker")),
        "{rt}: {listed:?}"
    );
    let mut attached = a
        .connect(ProcessSelector::Tag("ticker".into()))
        .await
        .expect("connect");
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), attached.next())
            .await
            .expect("connect stalled")
        {
            Some(Ok(ProcessEvent::Data(ProcessData::Stdout(b)))) => out.extend_from_slice(&b),
            Some(Ok(ProcessEvent::End { exit_code, .. })) => {
                assert_eq!(exit_code, 0);
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("{rt}: {other:?}"),
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&out),
        "tick1\ntick2\ntick3\n",
        "{rt}"
    );
    s.delete(sb["id"].as_str().expect("id")).await;
}

/// Uploads in the SDK's encodings, polled watchers and StreamInput, over raw HTTP as the SDK
/// speaks it (the typed client has no methods for these).
async fn raw_protocol(s: &TestServer, rt: &str) {
    let sb = s.create(json!({"image": "busybox", "runtime": rt})).await;
    let id = sb["id"].as_str().expect("id");
    let base = format!("http://{}:49983", sb["ip"].as_str().expect("ip"));
    let tok = token(s, id);
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let all: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();

    // Multipart, the way E2B's SDK sends it.
    let boundary = "warrenboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/up/m.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&all);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = http
        .post(format!("{base}/files?path=/up/m.bin"))
        .header("x-access-token", &tok)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("multipart");
    assert_eq!(r.status(), 200, "{rt}");
    // Gzip-encoded octet-stream.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &all).expect("gzip");
    let r = http
        .post(format!("{base}/files?path=/up/z.bin"))
        .header("x-access-token", &tok)
        .header("content-type", "application/octet-stream")
        .header("content-encoding", "gzip")
        .body(gz.finish().expect("gzip"))
        .send()
        .await
        .expect("gzip upload");
    assert_eq!(r.status(), 200, "{rt}");
    for f in ["m.bin", "z.bin"] {
        let got = s
            .req(
                reqwest::Method::GET,
                &format!("/v1/sandboxes/{id}/files?path=/up/{f}"),
            )
            .send()
            .await
            .expect("get");
        assert_eq!(got.bytes().await.expect("body").to_vec(), all, "{rt}: {f}");
    }

    // A polled watcher buffers events until fetched.
    let unary = |method: &str, body: Value| {
        http.post(format!("{base}/filesystem.Filesystem/{method}"))
            .header("x-access-token", &tok)
            .header("connect-protocol-version", "1")
            .json(&body)
            .send()
    };
    let created: Value = unary("CreateWatcher", json!({"path": "/up", "recursive": true}))
        .await
        .expect("create watcher")
        .json()
        .await
        .expect("json");
    let wid = created["watcherId"].as_str().expect("watcherId").to_owned();
    s.sh(id, "touch /up/new; rm /up/new").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: Value = unary("GetWatcherEvents", json!({"watcherId": wid}))
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    let types: Vec<&str> = got["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        types.contains(&"EVENT_TYPE_CREATE") && types.contains(&"EVENT_TYPE_REMOVE"),
        "{rt}: {got}"
    );
    let r = unary("RemoveWatcher", json!({"watcherId": wid}))
        .await
        .expect("remove watcher");
    assert_eq!(r.status(), 200);

    // StreamInput feeds a running `cat` by tag.
    let a = agent(s, &sb);
    let start = StartRequest {
        process: ProcessConfig {
            cmd: "cat".into(),
            ..Default::default()
        },
        tag: Some("cat".into()),
        ..Default::default()
    };
    let mut cat = a.start(&start).await.expect("start cat");
    let Some(Ok(ProcessEvent::Start { pid })) = cat.next().await else {
        panic!("{rt}: no start")
    };
    let mut body = Vec::new();
    for m in [
        StreamInputRequest::Start {
            process: ProcessSelector::Tag("cat".into()),
        },
        StreamInputRequest::Data {
            input: ProcessInput::Stdin(Bytes::from_static(b"streamed\n")),
        },
    ] {
        body.extend_from_slice(&envelope::encode_json(0, &m).expect("envelope"));
    }
    let r = http
        .post(format!("{base}/process.Process/StreamInput"))
        .header("x-access-token", &tok)
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .body(body)
        .send()
        .await
        .expect("stream input");
    assert_eq!(r.status(), 200, "{rt}");
    a.close_stdin(pid).await.expect("close stdin");
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), cat.next())
            .await
            .expect("cat stalled")
        {
            Some(Ok(ProcessEvent::Data(ProcessData::Stdout(b)))) => out.extend_from_slice(&b),
            Some(Ok(ProcessEvent::End { .. })) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{rt}: {e}"),
        }
    }
    assert_eq!(out, b"streamed\n", "{rt}");
    s.delete(id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_protocol_inside_real_sandboxes() {
    let s = TestServer::start().await;
    for rt in RUNTIMES {
        filesystem_and_watch(&s, rt).await;
        raw_protocol(&s, rt).await;
    }
    s.shutdown().await;
}

/// The agent is PID 1 and serves from it: orphans of the sandbox are re-parented to it and must
/// be reaped, while the exit codes of the processes it started stay theirs to report.
#[tokio::test(flavor = "multi_thread")]
async fn pid_1_reaps_orphans_and_keeps_exit_codes() {
    let s = TestServer::start().await;
    for rt in RUNTIMES {
        let sb = s
            .create(json!({"image": "busybox", "runtime": rt, "cmd": ["sh", "-c", "(sleep 0.2 &); exec sleep 1000"]}))
            .await;
        let id = sb["id"].as_str().expect("id");
        assert_eq!(
            s.sh(id, "cat /proc/1/cmdline | tr '\\0' ' '").await,
            "/.warren/agent "
        );
        // Twenty orphans: each `sh` exits at once, leaving its `sleep` to PID 1.
        s.sh(id, "for i in $(seq 20); do sh -c 'sleep 0.3 &'; done")
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let zombies = s
            .sh(id, "grep -ls '^State:.*Z' /proc/[0-9]*/status | wc -l")
            .await;
        assert_eq!(zombies.trim(), "0", "{rt}: zombies left");
        for code in [0, 3, 42] {
            let v = s
                .exec(
                    id,
                    json!({"cmd": ["sh", "-c", format!("sleep 0.05; exit {code}")]}),
                )
                .await;
            assert_eq!(v["exit_code"], code, "{rt}: {v}");
        }
        s.delete(id).await;
    }
    s.shutdown().await;
}
