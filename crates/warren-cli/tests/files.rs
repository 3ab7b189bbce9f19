//! Files through the API under both runtimes: binary-safe round trips, parents created, list,
//! delete, not-found, bad paths; and 1 GiB up and down with the server's memory flat.
//! Needs root, crun, runsc.
mod common;

use common::{TestServer, RUNTIMES};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn files_suite(s: &TestServer, rt: &str) {
    let sb = s.create(json!({"image": "busybox", "runtime": rt})).await;
    let id = sb["id"].as_str().expect("id");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(256 * 40 + 7).collect();
    let url = |p: &str| format!("/v1/sandboxes/{id}/files?path={p}");

    let r = s
        .req(Method::PUT, &url("/work/deep/dir/blob.bin"))
        .body(bytes.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{rt}: {}",
        r.text().await.unwrap_or_default()
    );
    let r = s
        .req(Method::GET, &url("/work/deep/dir/blob.bin"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        r.bytes().await.expect("body").to_vec(),
        bytes,
        "{rt}: round trip"
    );
    // The sandbox sees the same bytes.
    assert_eq!(
        s.sh(id, "wc -c < /work/deep/dir/blob.bin").await.trim(),
        bytes.len().to_string()
    );

    let list: Value = s
        .get_json(&format!("/v1/sandboxes/{id}/files/list?path=/work/deep"))
        .await;
    let e = &list["entries"][0];
    assert_eq!(
        (e["name"].as_str(), e["type"].as_str(), e["path"].as_str()),
        (Some("dir"), Some("dir"), Some("/work/deep/dir")),
        "{list}"
    );
    s.sh(id, "ln -s /work/deep/dir/blob.bin /work/link").await;
    let list: Value = s
        .get_json(&format!("/v1/sandboxes/{id}/files/list?path=/work"))
        .await;
    let link = list["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["name"] == "link")
        .cloned();
    assert_eq!(
        link.map(|l| l["type"].clone()),
        Some(json!("symlink")),
        "{list}"
    );

    // `..` resolves inside the sandbox: /work/deep/../deep/dir is the same file.
    let r = s
        .req(Method::GET, &url("/work/deep/../deep/dir/blob.bin"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.bytes().await.expect("body").len(), bytes.len());
    // And / is the sandbox's root, not the host's: the host's files are not there.
    let r = s
        .req(
            Method::GET,
            &url(&s.data_dir.join("admin.key").to_string_lossy()),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "{rt}: a host path answered"
    );

    let r = s
        .req(Method::DELETE, &url("/work/deep"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s
        .req(Method::GET, &url("/work/deep/dir/blob.bin"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "not_found");
    let r = s
        .req(Method::GET, &url("relative/path"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = s
        .req(Method::GET, &format!("/v1/sandboxes/{id}/files"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "missing ?path");
    s.delete(id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn files_round_trip_under_both_runtimes() {
    let s = TestServer::start().await;
    for rt in RUNTIMES {
        files_suite(&s, rt).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_default_user_set_at_create_applies_to_everything() {
    let s = TestServer::start().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc", "user": "user"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    assert_eq!(sb["user"], "user");
    assert_eq!(s.sh(id, "id -u").await, "1000\n");
    let r = s
        .req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path=/tmp/f"),
        )
        .body("x")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.sh(id, "stat -c %u /tmp/f").await, "1000\n");
    let r = s
        .post(
            "/v1/sandboxes",
            Some(json!({"image": "busybox", "user": "a:b"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    s.delete(id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_gib_moves_with_flat_server_memory() {
    const SIZE: u64 = 1 << 30;
    let s = TestServer::start().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc", "memory_mb": 256}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let pid = s.pid().expect("server pid");
    let before = vm_hwm_kb(pid);
    // Upload 1 GiB produced on the fly (never held whole by the test either).
    let chunk = bytes::Bytes::from(vec![0x5au8; 1 << 20]);
    let body =
        futures::stream::iter((0..1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let t = std::time::Instant::now();
    let r = s
        .req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path=/tmp/big"),
        )
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let up = t.elapsed();
    assert_eq!(s.sh(id, "wc -c < /tmp/big").await.trim(), SIZE.to_string());
    let t = std::time::Instant::now();
    let r = s
        .req(
            Method::GET,
            &format!("/v1/sandboxes/{id}/files?path=/tmp/big"),
        )
        .send()
        .await
        .expect("get");
    let mut stream = r.bytes_stream();
    let mut got = 0u64;
    while let Some(b) = stream.next().await {
        let b = b.expect("chunk");
        assert!(b.iter().all(|&x| x == 0x5a));
        got += b.len() as u64;
    }
    let down = t.elapsed();
    assert_eq!(got, SIZE);
    let after = vm_hwm_kb(pid);
    eprintln!(
        "1 GiB: upload {:.1} s, download {:.1} s; server peak RSS {} MiB before, {} MiB after",
        up.as_secs_f64(),
        down.as_secs_f64(),
        before / 1024,
        after / 1024
    );
    assert!(
        after < before + 64 * 1024,
        "server peak RSS grew from {before} kB to {after} kB"
    );
    s.delete(id).await;
    s.shutdown().await;
}
