//! Image import: real images keep their absolute symlinks; hostile tars (`..`, writes through
//! a symlink out of the tree, hard links out of it, device nodes) are refused with 422 and
//! nothing is written outside the image's own directory. Needs root.
mod common;

use std::path::Path;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tar::{EntryType, Header};

fn header(kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// Writes `path` into the raw name field, as a hostile tool would (the tar crate's setters
/// refuse `..`).
fn raw_name(h: &mut Header, path: &str) {
    let name = &mut h.as_old_mut().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_cksum();
}

fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().expect("tar")
}

async fn put(s: &TestServer, name: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let r = s
        .req(Method::PUT, &format!("/v1/images/{name}"))
        .header("content-type", "application/x-tar")
        .body(body)
        .send()
        .await
        .expect("put");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_tars_are_refused_and_write_nothing_outside() {
    let s = TestServer::start().await;
    let outside = tempfile::tempdir_in("/var/tmp").expect("outside dir");
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"untouched").expect("victim");

    let dotdot = tar_of(|b| {
        let mut h = header(EntryType::Regular, 5);
        raw_name(&mut h, "../../../../../../../../tmp/warren-escaped");
        b.append(&h, &b"pwned"[..]).expect("append");
    });
    let through_symlink = tar_of(|b| {
        let mut h = header(EntryType::Symlink, 0);
        b.append_link(&mut h, "evil", outside.path()).expect("link");
        let mut h = header(EntryType::Regular, 5);
        b.append_data(&mut h, "evil/victim", &b"pwned"[..])
            .expect("file");
    });
    let hardlink_out = tar_of(|b| {
        let mut h = header(EntryType::Link, 0);
        b.append_link(&mut h, "shadow", &victim).expect("link");
    });
    let device = tar_of(|b| {
        let mut h = header(EntryType::Char, 0);
        h.set_device_major(1).expect("major");
        h.set_device_minor(1).expect("minor");
        b.append_data(&mut h, "dev/mem", std::io::empty())
            .expect("dev");
    });
    for (what, body) in [
        ("dotdot", dotdot),
        ("symlink", through_symlink),
        ("hardlink", hardlink_out),
        ("device", device),
    ] {
        let (status, v) = put(&s, &format!("hostile-{what}"), body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {v}");
        assert_eq!(v["error"]["code"], "invalid", "{what}: {v}");
    }
    assert_eq!(std::fs::read(&victim).expect("victim"), b"untouched");
    assert!(!Path::new("/tmp/warren-escaped").exists());
    // No half-imported trees or temp files stay behind, and no image was recorded.
    let data = s.data_dir.join("images");
    let trees = std::fs::read_dir(data.join("layers"))
        .expect("rootfs dir")
        .count();
    assert_eq!(trees, 1, "only busybox's tree should exist");
    assert_eq!(
        std::fs::read_dir(data.join("tmp"))
            .expect("tmp dir")
            .count(),
        0
    );
    let list: Value = s.get_json("/v1/images").await;
    assert_eq!(list["images"].as_array().map(Vec::len), Some(1), "{list}");

    // Bad names and empty bodies.
    let (status, _) = put(&s, "Bad..Name", vec![1]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = put(&s, "empty", vec![]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_symlinks_resolve_inside_the_sandbox() {
    let s = TestServer::start().await;
    // busybox plus an absolute symlink /opt/sh -> /bin/busybox and /lib -> /usr/lib.
    let tree = tempfile::tempdir_in("/var/tmp").expect("tree");
    warren_cli::rootfs::busybox_tree(tree.path()).expect("busybox");
    std::fs::create_dir_all(tree.path().join("usr/lib")).expect("usr/lib");
    std::fs::write(tree.path().join("usr/lib/marker"), b"inside\n").expect("marker");
    std::os::unix::fs::symlink("/usr/lib", tree.path().join("lib")).expect("lib link");
    let tar = tree.path().join("../links.tar");
    warren_cli::rootfs::tar_dir(tree.path(), &tar).expect("tar");
    let r = s.import_tar("links", &tar).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let _ = std::fs::remove_file(&tar);
    let imported: Value = r.json().await.expect("json");
    assert!(imported["digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    let sb = s.create(json!({"image": "links", "runtime": "runc"})).await;
    let id = sb["id"].as_str().expect("id");
    assert_eq!(
        s.sh(id, "readlink /lib; cat /lib/marker").await,
        "/usr/lib\ninside\n"
    );
    // Writes go to the sandbox's upper dir, never into the shared image tree.
    s.sh(id, "echo changed > /usr/lib/marker").await;
    let digest = imported["digest"]
        .as_str()
        .expect("digest")
        .trim_start_matches("sha256:")
        .to_owned();
    let shared = s
        .data_dir
        .join("images/layers")
        .join(digest)
        .join("usr/lib/marker");
    assert_eq!(std::fs::read(shared).expect("shared marker"), b"inside\n");
    s.delete(id).await;
    s.shutdown().await;
}
