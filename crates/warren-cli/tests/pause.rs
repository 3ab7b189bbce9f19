//! Pause and resume with memory: a gVisor sandbox's processes (same pids), the memory they
//! hold, a listening port and its files come back as they were, at the same address; its
//! image is checked against its receipt (a corrupted or truncated part is refused and kept);
//! a `kill -9` of the server in the middle ends with the sandbox running or paused, never
//! lost. Needs root, runsc (the pinned build), crun, busybox-static.
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::state::{count, inside, make_on, pause, resume, through_proxy, token_file, MAIN};
use common::{wait_for, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The processes of the sandbox that run (runsc's own, or under runc the sandbox's): those in
/// its cgroup.
fn processes_of(id: &str) -> Vec<String> {
    let mut n = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // A process killed a moment ago may not be reaped yet: it holds nothing but its pid.
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        if status.contains("State:\tZ") {
            continue;
        }
        if cgroup.contains(id) || cmdline.contains(id) {
            n.push(cmdline);
        }
    }
    n
}

fn image_dir(s: &TestServer, id: &str) -> PathBuf {
    s.data_dir.join("sandboxes").join(id).join("paused")
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_and_resume_keep_processes_memory_files_and_a_listening_port() {
    keeps_its_state("gvisor", "runsc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runc_pause_and_resume_keep_processes_memory_files_and_a_listening_port() {
    keeps_its_state("runc", "crun").await;
}

async fn keeps_its_state(rt: &str, binary: &str) {
    let s = TestServer::start().await;
    let id = make_on(&s, rt).await;
    let before = inside(&s, &id).await;
    let (status, body) = through_proxy(&s, &id).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello\n"));
    let (_, sb) = s.get(&id).await;
    let ip = sb["ip"].clone();
    let counted = count(&s, &id).await;

    let (status, paused) = pause(&s, &id).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["state"], "paused", "{paused}");
    let receipt = &paused["pause"];
    // 32 MiB of random bytes do not compress away.
    assert!(
        receipt["memory"]["bytes"].as_u64().expect("bytes") > 32 << 20,
        "{receipt}"
    );
    assert_eq!(receipt["memory"]["sha256"].as_str().map(str::len), Some(64));
    assert!(
        receipt["filesystem"]["bytes"].as_u64().expect("bytes") > 0,
        "{receipt}"
    );
    assert_eq!(receipt["runtime"], rt);
    assert!(
        receipt["runtime_version"]
            .as_str()
            .is_some_and(|v| v.contains(binary)),
        "{receipt}"
    );
    let (_, got) = s.get(&id).await;
    assert_eq!(got["pause"], *receipt, "GET shows the receipt");
    assert_eq!(got["ip"], ip, "the address is kept");
    // Nothing of it runs: no process, commands refused, its port closed.
    assert_eq!(processes_of(&id), Vec::<String>::new());
    let resp = s
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"cmd": ["true"]})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_ne!(through_proxy(&s, &id).await.0, StatusCode::OK);
    // Pausing twice is a conflict, not a second image.
    assert_eq!(pause(&s, &id).await.0, StatusCode::CONFLICT);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (status, resumed) = resume(&s, &id).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["state"], "running");
    assert_eq!(resumed["ip"], ip);
    assert!(resumed.get("pause").is_none(), "{resumed}");
    assert_eq!(inside(&s, &id).await, before, "memory, pids and files");
    // The same shell goes on counting: a restart would have begun at 1 again.
    let after = count(&s, &id).await;
    assert!(
        after >= counted,
        "count {after} after resume, {counted} before"
    );
    let (status, body) = through_proxy(&s, &id).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello\n"));
    assert!(
        !image_dir(&s, &id).exists(),
        "the image is dropped once running"
    );

    // Twice more, to be sure a resumed sandbox pauses as well as a new one.
    for _ in 0..2 {
        assert_eq!(pause(&s, &id).await.0, StatusCode::OK);
        assert_eq!(resume(&s, &id).await.0, StatusCode::OK);
    }
    assert_eq!(inside(&s, &id).await, before);
    let sb = s.get(&id).await.1;
    s.delete(&id).await;
    assert!(s.leftovers(&sb).is_empty(), "{:?}", s.leftovers(&sb));
    s.shutdown().await;
}

/// Makes a runc resume of `id` fail after its disk is mounted: its output file, which the
/// restore opens then, is a directory until the guard is dropped.
fn corrupt_runc_restore(s: &TestServer, id: &str) -> impl Drop {
    struct Swapped(PathBuf);
    impl Drop for Swapped {
        fn drop(&mut self) {
            std::fs::remove_dir(&self.0).expect("rmdir stdout.log");
            std::fs::rename(self.0.with_extension("keep"), &self.0).expect("stdout.log back");
        }
    }
    let log = s.data_dir.join("sandboxes").join(id).join("stdout.log");
    std::fs::rename(&log, log.with_extension("keep")).expect("move stdout.log");
    std::fs::create_dir(&log).expect("a directory in its place");
    Swapped(log)
}

/// Flips one byte of `path` at `at` (`None`: in its first data extent past the first 4 KiB).
fn flip(path: &Path, at: Option<u64>) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let at = at.unwrap_or_else(|| {
        use std::os::fd::AsRawFd;
        let data = nix::unistd::lseek(f.as_raw_fd(), 4096, nix::unistd::Whence::SeekData)
            .expect("SEEK_DATA");
        u64::try_from(data).expect("offset") + 17
    });
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).expect("read");
    b[0] ^= 0x5a;
    f.write_all_at(&b, at).expect("write");
    at
}

/// The largest file of a pause image, where the 32 MiB blob is: runsc's `pages.img`, CRIU's
/// archive of the sandbox's `/dev/shm`.
fn memory_pages(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .expect("image dir")
        .flatten()
        .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .expect("a file")
        .path()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_truncated_pause_image_is_refused_and_kept() {
    refuses_a_corrupt_image("gvisor").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runc_a_corrupt_or_truncated_pause_image_is_refused_and_kept() {
    refuses_a_corrupt_image("runc").await;
}

async fn refuses_a_corrupt_image(rt: &str) {
    let s = TestServer::start().await;
    let id = make_on(&s, rt).await;
    let before = inside(&s, &id).await;
    assert_eq!(pause(&s, &id).await.0, StatusCode::OK);
    let dir = image_dir(&s, &id);
    let pages = memory_pages(&dir);
    let disk = s.data_dir.join("sandboxes").join(&id).join("disk.img");

    let refused = |what: &'static str| {
        let s = &s;
        let id = id.clone();
        async move {
            let (status, body) = resume(s, &id).await;
            assert_eq!(status, StatusCode::CONFLICT, "{what}: {body}");
            let msg = body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                msg.contains(what) && msg.contains("does not match"),
                "{msg}"
            );
            assert!(msg.contains("stays paused"), "{msg}");
            assert_eq!(s.get(&id).await.1["state"], "paused");
        }
    };
    // A byte of the memory image.
    let at = flip(&pages, Some(1 << 20));
    refused("memory").await;
    flip(&pages, Some(at));
    // A byte of the filesystem layer.
    let at = flip(&disk, None);
    refused("filesystem").await;
    flip(&disk, Some(at));
    // The memory image cut short.
    let whole = std::fs::read(&pages).expect("read pages");
    std::fs::write(&pages, &whole[..whole.len() / 2]).expect("truncate");
    refused("memory").await;
    std::fs::write(&pages, &whole).expect("put back");
    // A restore that fails once the disk is mounted: the mount wrote to the disk, which must
    // not count as corruption at the next resume. gVisor: the runtime cannot read
    // config.json. runc (whose bundle is written again at each resume): its output file
    // cannot be opened.
    if rt == "runc" {
        let wrong = corrupt_runc_restore(&s, &id);
        let (status, body) = resume(&s, &id).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert_eq!(s.get(&id).await.1["state"], "paused");
        drop(wrong);
        let (status, body) = resume(&s, &id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(inside(&s, &id).await, before);
        s.delete(&id).await;
        s.shutdown().await;
        return;
    }
    let config = s
        .data_dir
        .join("sandboxes")
        .join(&id)
        .join("bundle/config.json");
    let good = std::fs::read(&config).expect("config");
    std::fs::write(&config, b"{").expect("config broken");
    let (status, body) = resume(&s, &id).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(s.get(&id).await.1["state"], "paused");
    std::fs::write(&config, good).expect("config back");
    // Whole again: it resumes, as it was.
    let (status, body) = resume(&s, &id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(inside(&s, &id).await, before);
    s.delete(&id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_during_pause_or_resume_leaves_the_sandbox_running_or_paused() {
    survives_kill9("gvisor").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runc_a_server_killed_during_pause_or_resume_leaves_the_sandbox_running_or_paused() {
    survives_kill9("runc").await;
}

async fn survives_kill9(rt: &str) {
    let mut s = TestServer::start().await;
    let id = make_on(&s, rt).await;
    let before = inside(&s, &id).await;
    // Cut at several points of each: as the request arrives, early, midway, late.
    for (i, delay_ms) in [0u64, 150, 600, 1500].into_iter().enumerate() {
        let state = s.get(&id).await.1["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let verb = if state == "paused" { "resume" } else { "pause" };
        let url = format!("{}/v1/sandboxes/{id}/{verb}", s.url);
        let req = s.http.post(url).bearer_auth(&s.key).send();
        let _ = tokio::time::timeout(Duration::from_millis(delay_ms.max(20)), req).await;
        s.kill9();
        s = TestServer::start_on(s.data_dir.clone(), s.port, s.subnet.clone())
            .await
            .adopt_scratch(s);
        let settled = wait_for(&s, &id, Duration::from_secs(60), |v| {
            v["state"] == "running" || v["state"] == "paused"
        })
        .await;
        let state = settled["state"].as_str().unwrap_or_default();
        eprintln!("cut {i} ({verb} after {delay_ms} ms): {state}");
        assert!(
            state == "running" || state == "paused",
            "cut {i} ({verb} after {delay_ms} ms): {settled}"
        );
        if state == "paused" {
            let (status, body) = resume(&s, &id).await;
            if status != StatusCode::OK {
                let log = std::fs::read_to_string(s.data_dir.join("server.log"));
                eprintln!("{}", log.unwrap_or_default());
            }
            assert_eq!(status, StatusCode::OK, "cut {i}: {body}");
        }
        assert_eq!(
            inside(&s, &id).await,
            before,
            "cut {i} ({verb} after {delay_ms} ms)"
        );
        if i % 2 == 0 {
            // Paused for the next cut to hit a resume.
            assert_eq!(pause(&s, &id).await.0, StatusCode::OK);
        }
    }
    s.delete(&id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_timeout_pause_pauses_at_the_deadline() {
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for rt in ["gvisor", "runc"] {
        let sb = s
            .create(json!({
                "image": "busybox", "runtime": rt, "cmd": ["sleep", "600"],
                "timeout_s": 2, "on_timeout": "pause",
            }))
            .await;
        let id = sb["id"].as_str().expect("id").to_owned();
        s.sh(&id, "echo kept > /tmp/mark").await;
        ids.push((rt, id));
    }
    for (rt, id) in &ids {
        let v = wait_for(&s, id, Duration::from_secs(30), |v| v["state"] == "paused").await;
        assert_eq!(v["state"], "paused", "{rt}: {v}");
    }
    // Paused, it outlives its deadline; resumed, it has a lifetime again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (rt, id) in &ids {
        assert_eq!(s.get(id).await.1["state"], "paused", "{rt}");
        let (status, body) = resume(&s, id).await;
        assert_eq!(status, StatusCode::OK, "{rt}: {body}");
        assert!(body["expires_at"].is_string(), "{body}");
        assert_eq!(
            s.sh(id, "cat /tmp/mark; pidof sleep >/dev/null && echo up")
                .await,
            "kept\nup\n",
            "{rt}"
        );
    }
    for (_, id) in &ids {
        s.delete(id).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_resume_brings_a_paused_sandbox_back_for_the_request_that_reaches_it() {
    let s = TestServer::start().await;
    let sb = s
        .create(json!({
            "image": "busybox", "runtime": "gvisor", "auto_resume": true,
            "cmd": ["sh", "-c", MAIN],
        }))
        .await;
    let id = sb["id"].as_str().expect("id").to_owned();
    assert_eq!(sb["auto_resume"], true);
    wait_for(&s, &id, Duration::from_secs(10), |v| {
        v["ports"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    let before = inside(&s, &id).await;

    // Through its agent: the exec waits for the resume.
    assert_eq!(pause(&s, &id).await.0, StatusCode::OK);
    assert_eq!(inside(&s, &id).await, before);
    assert_eq!(s.get(&id).await.1["state"], "running");

    // Through its preview URL.
    assert_eq!(pause(&s, &id).await.0, StatusCode::OK);
    let (status, body) = through_proxy(&s, &id).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello\n"));

    // Many at once: one resume, every request answered.
    assert_eq!(pause(&s, &id).await.0, StatusCode::OK);
    let all = futures::future::join_all((0..6).map(|i| {
        let s = &s;
        let id = id.clone();
        async move {
            if i % 2 == 0 {
                s.sh(&id, "cat /tmp/index.html").await
            } else {
                through_proxy(s, &id).await.1
            }
        }
    }))
    .await;
    assert!(all.iter().all(|a| a == "hello\n"), "{all:?}");
    assert_eq!(inside(&s, &id).await, before);
    s.delete(&id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_runs_the_sources_processes_with_their_memory_at_its_own_address() {
    forks("gvisor").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runc_a_fork_runs_the_sources_processes_with_their_memory_at_its_own_address() {
    forks("runc").await;
}

async fn forks(rt: &str) {
    let s = TestServer::start().await;
    let id = make_on(&s, rt).await;
    let before = inside(&s, &id).await;
    let resp = s
        .post(
            &format!("/v1/sandboxes/{id}/fork"),
            Some(json!({"metadata": {"role": "fork"}})),
        )
        .await;
    let status = resp.status();
    let fork: Value = resp.json().await.expect("fork body");
    assert_eq!(status, StatusCode::CREATED, "{fork}");
    let fid = fork["id"].as_str().expect("id").to_owned();
    assert_ne!(fid, id);
    assert_eq!(fork["state"], "running");
    assert_eq!(fork["metadata"]["role"], "fork");
    let source = s.get(&id).await.1;
    assert_eq!(source["state"], "running", "the source runs on: {source}");
    assert_ne!(fork["ip"], source["ip"], "its own address");
    // The same processes (pids), the same memory, the same files, in both.
    assert_eq!(inside(&s, &fid).await, before);
    assert_eq!(inside(&s, &id).await, before);
    // Its agent is the source's, restored, but answers only to the fork's own token now.
    let token = |x: &str| {
        std::fs::read_to_string(token_file(&s, x))
            .expect("token")
            .trim()
            .to_owned()
    };
    assert_ne!(token(&id), token(&fid));
    let agent_says = |t: String| {
        let url = format!(
            "http://{}:49983/files?path=/tmp/sum",
            fork["ip"].as_str().unwrap_or("")
        );
        let req = s.http.get(url).header("X-Access-Token", t);
        async move { req.send().await.expect("to the fork's agent").status() }
    };
    assert_eq!(agent_says(token(&id)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(agent_says(token(&fid)).await, StatusCode::OK);
    // The fork's web server answers at the fork's own preview URL, and the counter goes on
    // from where the source was (not from 1).
    let (status, body) = through_proxy(&s, &fid).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello\n"));
    assert!(count(&s, &fid).await > 1);
    // From here they part: what one writes the other does not see.
    s.sh(&fid, "echo only-in-fork > /tmp/own").await;
    s.sh(&id, "echo only-in-source > /tmp/own").await;
    assert_eq!(s.sh(&fid, "cat /tmp/own").await, "only-in-fork\n");
    assert_eq!(s.sh(&id, "cat /tmp/own").await, "only-in-source\n");
    // A paused source forks too, and stays paused.
    assert_eq!(pause(&s, &id).await.0, StatusCode::OK);
    let resp = s.post(&format!("/v1/sandboxes/{id}/fork"), None).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let second: Value = resp.json().await.expect("fork body");
    let sid = second["id"].as_str().expect("id").to_owned();
    assert_eq!(s.get(&id).await.1["state"], "paused");
    assert_eq!(s.sh(&sid, "cat /tmp/own").await, "only-in-source\n");
    for x in [&id, &fid, &sid] {
        let sb = s.get(x).await.1;
        s.delete(x).await;
        assert!(s.leftovers(&sb).is_empty(), "{x}: {:?}", s.leftovers(&sb));
    }
    s.shutdown().await;
}
