//! The filesystem service, `/files` transfers and acting users, against the real agent binary.
//! Needs root (the agent acts as other users); uses the host's `nobody` (uid 65534) and a
//! private passwd file for a user with supplementary groups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use support::{peak_rss_kib, run, sh, Agent, TOKEN};
use warren_agent::{EventType, FileType, FilesystemEvent, WatchEvent};

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn files_url(agent: &Agent, path: &str) -> String {
    let encoded: String = path
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'.' | b'-' | b'_' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("http://{}/files?path={encoded}", agent.addr)
}

async fn download(agent: &Agent, client: &warren_agent::AgentClient, path: &str) -> Vec<u8> {
    let _ = agent;
    let mut stream = Box::pin(client.download(path).await.unwrap());
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

fn once(data: Vec<u8>) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync {
    futures::stream::iter([Ok(Bytes::from(data))])
}

#[tokio::test]
async fn directory_operations_and_entry_info() {
    let agent = Agent::spawn().await;
    let c = &agent.client;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap().to_owned();

    let made = c.make_dir(&format!("{root}/a/b")).await.unwrap();
    assert_eq!(
        (made.name.as_str(), made.file_type),
        ("b", FileType::Directory)
    );
    assert_eq!(made.path, format!("{root}/a/b"));
    assert!(made.permissions.starts_with('d'), "{}", made.permissions);
    let again = c.make_dir(&format!("{root}/a/b")).await.unwrap_err();
    assert_eq!(again.rpc_code(), Some("already_exists"));

    std::fs::write(format!("{root}/a/f.txt"), b"hello").unwrap();
    std::fs::set_permissions(
        format!("{root}/a/f.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let f = c.stat(&format!("{root}/a/f.txt")).await.unwrap();
    assert_eq!((f.file_type, f.size, f.mode), (FileType::File, 5, 0o640));
    assert_eq!(f.permissions, "-rw-r-----");
    assert_eq!((f.owner.as_str(), f.group.as_str()), ("root", "root"));
    assert!(!f.is_symlink && f.symlink_target.is_none());
    let mtime = f.modified_time.unwrap();
    assert!(mtime.ends_with('Z') && mtime.len() >= 20, "{mtime}");

    std::os::unix::fs::symlink(format!("{root}/a/f.txt"), format!("{root}/link")).unwrap();
    let link = c.stat(&format!("{root}/link")).await.unwrap();
    assert!(link.is_symlink);
    assert_eq!(link.file_type, FileType::File);
    assert_eq!(link.symlink_target, Some(format!("{root}/a/f.txt")));
    assert!(link.permissions.starts_with('L'), "{}", link.permissions);

    let names = |entries: Vec<warren_agent::EntryInfo>| -> Vec<String> {
        entries
            .into_iter()
            .map(|e| e.path[root.len()..].to_owned())
            .collect()
    };
    assert_eq!(names(c.list_dir(&root, 1).await.unwrap()), ["/a", "/link"]);
    assert_eq!(
        names(c.list_dir(&root, 0).await.unwrap()),
        ["/a", "/link"],
        "depth 0 means 1"
    );
    assert_eq!(
        names(c.list_dir(&root, 3).await.unwrap()),
        ["/a", "/a/b", "/a/f.txt", "/link"]
    );

    let moved = c
        .rename(&format!("{root}/a/f.txt"), &format!("{root}/new/dir/g.txt"))
        .await
        .unwrap();
    assert_eq!((moved.name.as_str(), moved.size), ("g.txt", 5));
    assert_eq!(
        std::fs::read(format!("{root}/new/dir/g.txt")).unwrap(),
        b"hello"
    );

    // `..` is ordinary path semantics: it cannot climb above `/`.
    let up = c.stat(&format!("/../../..{root}/new")).await.unwrap();
    assert_eq!(up.path, format!("{root}/new"));

    c.remove(&format!("{root}/a")).await.unwrap();
    assert!(!std::path::Path::new(&format!("{root}/a")).exists());
    c.remove(&format!("{root}/link")).await.unwrap();
    for missing in [format!("{root}/a"), format!("{root}/nope/x")] {
        let e = c.stat(&missing).await.unwrap_err();
        assert_eq!(e.rpc_code(), Some("not_found"), "{e}");
        // As envd (`os.RemoveAll`): what is not there is removed already.
        c.remove(&missing).await.unwrap();
        let e = c.list_dir(&missing, 1).await.unwrap_err();
        assert_eq!(e.rpc_code(), Some("not_found"), "{e}");
    }
    let e = c.stat(&format!("{root}/a\0b")).await.unwrap_err();
    assert_eq!(e.rpc_code(), Some("invalid_argument"), "{e}");
    let e = c
        .list_dir(&format!("{root}/new/dir/g.txt"), 1)
        .await
        .unwrap_err();
    assert_eq!(e.rpc_code(), Some("invalid_argument"), "{e}");
    // Relative paths start at the acting user's home (root's: /root).
    let home = c.stat("").await.unwrap();
    assert_eq!(home.path, "/root");
}

#[tokio::test]
async fn uploads_and_downloads_are_binary_safe_in_every_encoding() {
    let agent = Agent::spawn().await;
    let c = &agent.client;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap().to_owned();
    let all: Vec<u8> = (0..=255u8).cycle().take(256 * 300).collect();

    // Octet-stream through the client, into a directory that does not exist yet.
    let path = format!("{root}/deep/er/all.bin");
    c.upload(&path, once(all.clone())).await.unwrap();
    assert_eq!(download(&agent, c, &path).await, all);

    // Multipart, the way the SDK sends it (part file name = the path).
    let boundary = "XyZboundary";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{root}/m.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&all);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let resp = http()
        .post(files_url(&agent, &format!("{root}/m.bin")))
        .header("x-access-token", TOKEN)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        json,
        serde_json::json!([{"name": "m.bin", "type": "file", "path": format!("{root}/m.bin")}])
    );
    assert_eq!(std::fs::read(format!("{root}/m.bin")).unwrap(), all);

    // Gzip-encoded octet-stream, sent in small chunks.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &all).unwrap();
    let compressed = gz.finish().unwrap();
    let chunks: Vec<Result<Bytes, std::io::Error>> = compressed
        .chunks(777)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let resp = http()
        .post(files_url(&agent, &format!("{root}/z.bin")))
        .header("x-access-token", TOKEN)
        .header("content-type", "application/octet-stream")
        .header("content-encoding", "gzip")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(std::fs::read(format!("{root}/z.bin")).unwrap(), all);

    // Missing file: 404 with envd's JSON error, `not_found` through the client.
    let resp = http()
        .get(files_url(&agent, &format!("{root}/missing")))
        .header("x-access-token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["code"], 404);
    assert!(json["message"].as_str().unwrap().contains("missing"));
    let e = c.download(&format!("{root}/missing")).await.err().unwrap();
    assert_eq!(e.rpc_code(), Some("not_found"));
    let resp = http()
        .get(files_url(&agent, "/etc/hostname"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "/files needs the token too");
}

#[tokio::test]
async fn requests_act_as_the_named_user() {
    let agent = Agent::spawn().await;
    let nobody = agent.client.with_user("nobody");
    let tmp = tempfile::tempdir().unwrap();
    // A directory anyone may write to, as /tmp: the agent acts as nobody, who may not write
    // into root's directories.
    std::fs::set_permissions(tmp.path(), PermissionsExt::from_mode(0o1777)).unwrap();
    let root = tmp.path().to_str().unwrap().to_owned();

    nobody
        .upload(&format!("{root}/n/f"), once(b"x".to_vec()))
        .await
        .unwrap();
    for p in ["n", "n/f"] {
        let meta = std::fs::metadata(format!("{root}/{p}")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{p}");
    }
    let made = nobody.make_dir(&format!("{root}/d")).await.unwrap();
    assert_eq!(made.owner, "nobody");
    let resp = http()
        .post(format!(
            "{}&username=nobody",
            files_url(&agent, &format!("{root}/q"))
        ))
        .header("x-access-token", TOKEN)
        .body("q")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(std::fs::metadata(format!("{root}/q")).unwrap().uid(), 65534);

    let out = run_as(&nobody, "id -u; id -g; echo $HOME $USER $LOGNAME; pwd").await;
    assert_eq!(out, "65534\n65534\n/nonexistent nobody nobody\n/\n");

    let ghost = agent.client.with_user("ghost-user");
    let e = ghost.stat("/").await.unwrap_err();
    assert_eq!(e.rpc_code(), Some("invalid_argument"));
    assert!(e.to_string().contains("ghost-user"), "{e}");
    // Streams report errors in their end-of-stream message.
    let mut stream = ghost.start(&sh("true")).await.unwrap();
    let e = stream.next().await.unwrap().unwrap_err();
    assert_eq!(e.rpc_code(), Some("invalid_argument"));
    let e = ghost.download("/etc/hostname").await.err().unwrap();
    assert_eq!(e.rpc_code(), Some("invalid_argument"));
    assert!(e.to_string().contains("ghost-user"), "{e}");
}

async fn run_as(client: &warren_agent::AgentClient, script: &str) -> String {
    let mut stream = client.start(&sh(script)).await.unwrap();
    let out = support::collect(&mut stream).await;
    assert_eq!(
        out.exit_code(),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn supplementary_groups_and_default_user_from_the_account_files() {
    let tmp = tempfile::tempdir().unwrap();
    // Alice must be able to reach her home.
    std::fs::set_permissions(tmp.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(4321), Some(4321)).unwrap();
    let passwd = tmp.path().join("passwd");
    let group = tmp.path().join("group");
    std::fs::write(
        &passwd,
        format!(
            "root:x:0:0::/root:/bin/sh\nalice:x:4321:4321::{}:/bin/sh\n",
            home.display()
        ),
    )
    .unwrap();
    std::fs::write(&group, "root:x:0:\nalice:x:4321:\ndev:x:777:bob,alice\n").unwrap();
    let agent = Agent::spawn_with(&[
        ("WARREN_AGENT_PASSWD", passwd.to_str().unwrap()),
        ("WARREN_AGENT_GROUP", group.to_str().unwrap()),
        ("WARREN_AGENT_DEFAULT_USER", "alice"),
    ])
    .await;
    let out = run_as(&agent.client, "id -u; id -G; pwd").await;
    assert_eq!(out, format!("4321\n4321 777\n{}\n", home.display()));
    let out = run_as(&agent.client.with_user("root"), "id -u").await;
    assert_eq!(out, "0\n");
    // Relative paths are the acting user's home.
    agent
        .client
        .upload("notes.txt", once(b"n".to_vec()))
        .await
        .unwrap();
    let meta = std::fs::metadata(home.join("notes.txt")).unwrap();
    assert_eq!(meta.uid(), 4321);
    let entry = agent.client.stat("notes.txt").await.unwrap();
    assert_eq!(
        (entry.owner.as_str(), entry.group.as_str()),
        ("alice", "alice")
    );
}

async fn next_change(stream: &mut warren_agent::WatchStream) -> FilesystemEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("no watch event within 5 s")
            .expect("watch stream ended")
            .expect("watch stream failed");
        match event {
            WatchEvent::Filesystem(e) => return e,
            WatchEvent::Keepalive => {}
            WatchEvent::Start => panic!("second start event"),
        }
    }
}

#[tokio::test]
async fn recursive_watch_reports_changes_in_order() {
    let agent = Agent::spawn().await;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut stream = agent
        .client
        .watch_dir(root.to_str().unwrap(), true)
        .await
        .unwrap();
    assert!(matches!(stream.next().await, Some(Ok(WatchEvent::Start))));

    let expect = |e: FilesystemEvent, name: &str, t: EventType| {
        assert_eq!((e.name.as_str(), e.event_type), (name, t), "{e:?}");
    };
    std::fs::create_dir(root.join("sub")).unwrap();
    expect(next_change(&mut stream).await, "sub", EventType::Create);
    std::fs::write(root.join("sub/f"), b"data").unwrap();
    expect(next_change(&mut stream).await, "sub/f", EventType::Create);
    expect(next_change(&mut stream).await, "sub/f", EventType::Write);
    std::fs::rename(root.join("sub/f"), root.join("sub/g")).unwrap();
    expect(next_change(&mut stream).await, "sub/f", EventType::Rename);
    expect(next_change(&mut stream).await, "sub/g", EventType::Create);
    std::fs::set_permissions(
        root.join("sub/g"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    expect(next_change(&mut stream).await, "sub/g", EventType::Chmod);
    std::fs::remove_file(root.join("sub/g")).unwrap();
    expect(next_change(&mut stream).await, "sub/g", EventType::Remove);

    let e = agent.client.watch_dir("/no/such/dir", false).await.unwrap();
    let mut e = e;
    let err = e.next().await.unwrap().unwrap_err();
    assert_eq!(err.rpc_code(), Some("not_found"));
}

async fn unary(agent: &Agent, method: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let resp = http()
        .post(format!(
            "http://{}/filesystem.Filesystem/{method}",
            agent.addr
        ))
        .header("x-access-token", TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn polled_watchers_buffer_events_until_fetched() {
    let agent = Agent::spawn().await;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap();
    let (status, created) = unary(
        &agent,
        "CreateWatcher",
        serde_json::json!({"path": root, "recursive": true, "includeEntry": true}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["watcherId"].as_str().unwrap().to_owned();
    std::fs::write(format!("{root}/one"), b"1").unwrap();
    std::fs::remove_file(format!("{root}/one")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, got) = unary(
        &agent,
        "GetWatcherEvents",
        serde_json::json!({"watcherId": id}),
    )
    .await;
    assert_eq!(status, 200);
    let types: Vec<&str> = got["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["EVENT_TYPE_CREATE", "EVENT_TYPE_WRITE", "EVENT_TYPE_REMOVE"]
    );
    let (_, again) = unary(
        &agent,
        "GetWatcherEvents",
        serde_json::json!({"watcherId": id}),
    )
    .await;
    assert!(
        again["events"].as_array().is_none_or(|a| a.is_empty()),
        "{again}"
    );
    let (status, _) = unary(
        &agent,
        "RemoveWatcher",
        serde_json::json!({"watcherId": id}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = unary(
        &agent,
        "GetWatcherEvents",
        serde_json::json!({"watcherId": id}),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}

const GIB: u64 = 1 << 30;

#[tokio::test]
async fn one_gibibyte_up_and_down_with_flat_agent_memory() {
    let agent = Agent::spawn().await;
    // /dev/shm: a gibibyte on disk is more than a CI machine always has free (one ran out).
    let tmp = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir_in("/var/tmp"))
        .unwrap();
    let path = tmp.path().join("big.bin");
    let path = path.to_str().unwrap().to_owned();
    let chunk = Bytes::from((0..=255u8).cycle().take(1 << 20).collect::<Vec<u8>>());
    let body = futures::stream::iter((0..GIB >> 20).map(move |_| Ok(chunk.clone())));
    let started = std::time::Instant::now();
    agent.client.upload(&path, body).await.unwrap();
    let up = started.elapsed();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), GIB);

    let started = std::time::Instant::now();
    let mut stream = Box::pin(agent.client.download(&path).await.unwrap());
    let (mut total, mut sum) = (0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        sum = chunk.iter().fold(sum, |s, b| s.wrapping_add(u64::from(*b)));
        total += chunk.len() as u64;
    }
    let down = started.elapsed();
    assert_eq!(total, GIB);
    assert_eq!(sum, (GIB / 256) * (255 * 256 / 2));
    let peak = peak_rss_kib(agent.pid());
    eprintln!("1 GiB: upload {up:?}, download {down:?}, agent peak RSS {peak} KiB");
    assert!(peak < 64 * 1024, "agent peak RSS {peak} KiB");
}

#[tokio::test]
async fn root_file_operations_keep_working_for_processes() {
    // A file written through /files is visible to processes the agent starts, and vice versa.
    let agent = Agent::spawn().await;
    let tmp = tempfile::tempdir().unwrap();
    let path = format!("{}/shared.txt", tmp.path().display());
    agent
        .client
        .upload(&path, once(b"from files\n".to_vec()))
        .await
        .unwrap();
    let out = run(&agent, &sh(&format!("cat {path}; echo more >> {path}"))).await;
    assert_eq!(out.stdout, b"from files\n");
    assert_eq!(
        download(&agent, &agent.client, &path).await,
        b"from files\nmore\n"
    );
}
