//! Pause images and snapshots in an object store: Garage, a real S3 server, on 127.0.0.1. A
//! pause or a snapshot sends its image there (the receipt names where); a second server with a
//! data dir of its own, sharing only the database and the store, resumes the sandbox from it
//! with its processes and memory as they were, at an address of its own, and makes sandboxes
//! from the snapshot; a resume removes the stored pause image, a deleted snapshot its copy. A
//! runc sandbox with a volume goes from a second server to a third the same way, its volume
//! with it. A store that does not answer is refused when the server starts.
mod common;

use std::time::{Duration, Instant};

use common::garage::Garage;
use common::state::{count, inside, make, make_from, pause, resume};
use common::{busybox_tar, free_port, unique_subnet, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// A server with a data dir of its own, `args` (the shared database and store) and the admin
/// key of the others, with the same busybox image (by digest) as they have.
async fn another_server(key: &str, args: &[&str]) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::Builder::new()
        .prefix("warren-test-")
        .tempdir_in("/var/tmp")
        .expect("a data dir");
    std::fs::write(dir.path().join("admin.key"), key).expect("admin.key");
    let s = TestServer::start_on_with(
        dir.path().to_path_buf(),
        "127.0.0.1",
        free_port(),
        unique_subnet(),
        args,
    )
    .await;
    let resp = s.import_tar("busybox", busybox_tar()).await;
    assert!(resp.status().is_success(), "importing busybox");
    (dir, s)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_paused_on_one_server_resumes_on_another_from_the_store() {
    let garage = Garage::start("warren-test");
    // The servers this test starts read the store's endpoint and keys from AWS_*, as a user's
    // would; nothing else in this test binary starts a server.
    for (k, v) in garage.env() {
        std::env::set_var(k, v);
    }
    let shared = tempfile::tempdir().expect("shared dir");
    let db = shared.path().join("warren.db");
    let db = db.to_str().expect("utf-8 path");
    let store = format!("s3://{}/servers", garage.bucket);
    let args = ["--database", db, "--object-store", store.as_str()];

    let a = TestServer::start_with(&args).await;
    let id = make(&a).await;
    let before = inside(&a, &id).await;
    let resp = a
        .post(
            &format!("/v1/sandboxes/{id}/snapshots"),
            Some(json!({"name": "kept"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let snap: serde_json::Value = resp.json().await.expect("snapshot");
    assert_eq!(
        snap["receipt"]["stored"],
        format!("{store}/snapshots/kept"),
        "{snap}"
    );
    let snapshot_objects = garage.objects();
    let counted = count(&a, &id).await;
    let (status, paused) = pause(&a, &id).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(
        paused["pause"]["stored"],
        format!("{store}/pauses/{id}"),
        "{paused}"
    );
    // The 32 MiB blob alone is 4 parts of 8 MiB; and a listing.
    let objects = garage.objects() - snapshot_objects;
    assert!(
        snapshot_objects >= 5 && objects >= 5,
        "{snapshot_objects} + {objects} objects in the store"
    );
    let key = std::fs::read_to_string(a.data_dir.join("admin.key")).expect("admin.key");
    let a_ip = paused["ip"].as_str().expect("ip").to_owned();
    // Its data dir (pause image, disk) goes with it.
    a.stop_keeping_sandboxes();

    let (b_dir, b) = another_server(&key, &args).await;
    let (status, resumed) = resume(&b, &id).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["state"], "running");
    assert_ne!(resumed["ip"], a_ip, "b gives it an address of its own");
    assert_eq!(
        inside(&b, &id).await,
        before,
        "processes and memory as they were"
    );
    assert!(count(&b, &id).await >= counted, "the counter went on");
    let settled = |want: u64, what: &'static str| {
        let garage = &garage;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while garage.objects() != want {
                assert!(
                    Instant::now() < deadline,
                    "{what}: {} objects",
                    garage.objects()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    settled(snapshot_objects, "the pause image outlived the resume").await;

    // A's snapshot, fetched by b: its processes with their memory.
    let sb = b.create(json!({"snapshot": "kept"})).await;
    let from = sb["id"].as_str().expect("id");
    assert_eq!(inside(&b, from).await, before);
    b.delete(from).await;
    let resp = b
        .req(Method::DELETE, "/v1/snapshots/kept")
        .send()
        .await
        .expect("delete snapshot");
    assert!(resp.status().is_success());
    settled(0, "the snapshot's copy outlived the snapshot").await;

    // A runc sandbox with a volume, paused on b: the volume goes to the store with the pause
    // image (and on request), and a third server with a data dir of its own resumes the
    // sandbox with its processes, its memory and the volume's files.
    let resp = b
        .post("/v1/volumes", Some(json!({"name": "notes", "size_mb": 64})))
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let rid = make_from(
        &b,
        json!({"image": "busybox", "runtime": "runc",
               "volumes": [{"name": "notes", "path": "/data"}]}),
    )
    .await;
    b.sh(&rid, "echo kept > /data/note").await;
    let rbefore = inside(&b, &rid).await;
    let (status, paused) = pause(&b, &rid).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["pause"]["stored"], format!("{store}/pauses/{rid}"));
    let resp = b.post("/v1/volumes/notes/backup", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let backup: serde_json::Value = resp.json().await.expect("backup");
    assert_eq!(
        backup["stored"],
        format!("{store}/volumes/notes"),
        "{backup}"
    );
    assert!(backup["bytes"].as_u64().is_some_and(|b| b > 0), "{backup}");
    b.stop_keeping_sandboxes();
    // Its volume stays mounted for the paused sandbox: b's host is gone with it.
    let _ = nix::mount::umount2(
        &b_dir.path().join("volumes/notes"),
        nix::mount::MntFlags::MNT_DETACH,
    );

    let (_c_dir, c) = another_server(&key, &args).await;
    let (status, resumed) = resume(&c, &rid).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(
        inside(&c, &rid).await,
        rbefore,
        "runc: processes and memory"
    );
    assert_eq!(c.sh(&rid, "cat /data/note").await, "kept\n", "the volume");
    c.delete(&rid).await;
    let resp = c
        .req(Method::DELETE, "/v1/volumes/notes")
        .send()
        .await
        .expect("delete volume");
    assert!(resp.status().is_success());
    settled(0, "the volume's copy outlived the volume").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_does_not_answer_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--object-store", "s3://nowhere/x"])
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("AWS_ACCESS_KEY_ID", "GK0")
        .env("AWS_SECRET_ACCESS_KEY", "0")
        .env("AWS_REGION", "garage")
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .expect("warren serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--object-store s3://nowhere/x: the store does not answer"),
        "{err}"
    );
}
