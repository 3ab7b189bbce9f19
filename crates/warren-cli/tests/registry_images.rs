//! Pulled images in use: the image config as a sandbox's defaults, pulls on create (`pull`:
//! missing, always, never), layer collection (`DELETE`, `prune`), an interrupted pull, and
//! `warren image pull` from the CLI. Needs root, crun, runsc, docker-registry, skopeo.
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::oci_layout::{busybox_layer, Compression, Image, ImageConfig, Layer};
use common::pulls::{image_names, prune, pull_ok, scratch_entries, stored_layers, warren};
use common::registry::Registry;
use common::{TestServer, RUNTIMES};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn push(reg: &Registry, dir: &std::path::Path, repo_tag: &str, image: &Image) -> String {
    common::pulls::push_image(reg, dir, repo_tag, image)
        .manifest
        .digest
}

async fn wait_for(s: &TestServer, id: &str, script: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = s.sh(id, &format!("{script} 2>&1; true")).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{script}: {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_config_is_a_sandbox_s_default() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let image = Image::new(vec![
        busybox_layer(Compression::Gzip),
        Layer::new(Compression::Gzip)
            .dir("srv", 0o777)
            .dir("tmp", 0o1777),
    ])
    .with_config(ImageConfig {
        env: vec![
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "FOO=from-image".into(),
            "BAR=image".into(),
        ],
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec![
            "echo \"$(id -u) $(pwd) $FOO $BAR\" > /tmp/started; exec sleep 1000".into(),
        ]),
        working_dir: Some("/srv".into()),
        user: Some("1000:1000".into()),
        exposed_ports: vec!["8000/tcp".into(), "53/udp".into()],
        ..ImageConfig::default()
    });
    push(&reg, scratch.path(), "cfg:1", &image);
    let s = TestServer::start().await;
    let r = reg.reference("cfg:1");
    for rt in RUNTIMES {
        // Not pulled yet: the create pulls it (`pull` defaults to `missing`).
        let sb = s
            .create(json!({"image": r, "runtime": rt, "env": {"BAR": "request"}}))
            .await;
        let id = sb["id"].as_str().expect("id");
        assert_eq!(sb["image"], r.as_str());
        assert_eq!(sb["cwd"], "/srv", "{sb}");
        assert_eq!(sb["user"], "1000", "{sb}");
        assert_eq!(sb["env"]["FOO"], "from-image", "{sb}");
        assert_eq!(sb["env"]["BAR"], "request", "{sb}");
        assert_eq!(sb["cmd"][0], "/bin/sh", "{sb}");
        assert_eq!(sb["exposed_ports"], json!([8000]), "{sb}");
        let url = sb["urls"]["8000"].as_str().unwrap_or_default();
        assert!(url.contains(&format!("{id}-8000.")), "{sb}");
        wait_for(&s, id, "cat /tmp/started", "1000 /srv from-image request\n").await;
        // Commands act as the image's user too.
        assert_eq!(s.sh(id, "id -u").await, "1000\n", "{rt}");
        let (_, got) = s.get(id).await;
        assert_eq!(got["urls"]["8000"], url, "{got}");
        s.delete(id).await;
    }
    // The request's own values win.
    let sb = s
        .create(json!({"image": r, "runtime": "runc", "cmd": ["sleep", "1000"], "cwd": "/", "user": "root"}))
        .await;
    assert_eq!(sb["cmd"], json!(["sleep", "1000"]));
    assert_eq!(sb["cwd"], "/");
    assert_eq!(sb["user"], "root");
    assert_eq!(s.sh(sb["id"].as_str().expect("id"), "id -u").await, "0\n");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_policies_and_layer_collection() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let version = |v: &str| {
        Image::new(vec![
            busybox_layer(Compression::Gzip),
            Layer::new(Compression::Gzip).file("version", v.as_bytes(), 0o644),
        ])
    };
    let d1 = push(&reg, &scratch.path().join("1"), "app:latest", &version("1"));
    let s = TestServer::start().await;
    let r = reg.reference("app:latest");
    let sb1 = s.create(json!({"image": r, "runtime": "runc"})).await;
    assert_eq!(sb1["image_digest"], d1.as_str());
    let id1 = sb1["id"].as_str().expect("id");

    let d2 = push(&reg, &scratch.path().join("2"), "app:latest", &version("2"));
    // `missing`: the image is here, the registry is not asked.
    let sb = s.create(json!({"image": r, "runtime": "runc"})).await;
    assert_eq!(sb["image_digest"], d1.as_str());
    s.delete(sb["id"].as_str().expect("id")).await;
    // `always`: the new digest.
    let sb2 = s
        .create(json!({"image": r, "runtime": "runc", "pull": "always"}))
        .await;
    assert_eq!(sb2["image_digest"], d2.as_str());
    let id2 = sb2["id"].as_str().expect("id");
    assert_eq!(s.sh(id2, "cat /version").await, "2");
    // The first sandbox still has its old layers, prune or not.
    let pruned = prune(&s).await;
    assert_eq!(pruned["layers_removed"], json!([]), "{pruned}");
    assert_eq!(s.sh(id1, "cat /version").await, "1");
    let layers_before = stored_layers(&s.data_dir);
    s.delete(id1).await;
    let pruned = prune(&s).await;
    let removed = pruned["layers_removed"].as_array().expect("removed").len();
    assert_eq!(removed, 1, "only version 1's own layer goes: {pruned}");
    assert!(pruned["bytes_freed"].as_u64().unwrap_or(0) > 0, "{pruned}");
    assert_eq!(stored_layers(&s.data_dir).len(), layers_before.len() - 1);

    // In use: 409; once free, deleting it takes its layers (busybox's own import stays).
    let del = s
        .req(Method::DELETE, &format!("/v1/images/{r}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), StatusCode::CONFLICT);
    s.delete(id2).await;
    let del = s
        .req(Method::DELETE, &format!("/v1/images/{r}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        stored_layers(&s.data_dir).len(),
        1,
        "only busybox's layer is left"
    );
    assert_eq!(image_names(&s).await, ["busybox"]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_naming_no_image_wants_base() {
    let s = TestServer::start().await;
    let resp = s.post("/v1/sandboxes", Some(json!({}))).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: Value = resp.json().await.expect("json");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("\"base\"") && msg.contains("build-base"),
        "{msg}"
    );
    s.shutdown().await;
}

/// A TCP relay to `127.0.0.1:upstream` that, while stalled, stops passing the upstream's bytes
/// after the first `after` of each connection.
struct Relay {
    port: u16,
    stalled: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
}

fn relay(upstream: u16, after: usize) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let stalled = Arc::new(AtomicBool::new(true));
    let held = Arc::new(AtomicUsize::new(0));
    let (st, hd) = (stalled.clone(), held.clone());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c_in, mut s_out) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
            });
            let (mut s_in, mut c_out) = (server, client);
            let (st, hd) = (st.clone(), hd.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                let mut passed = 0;
                loop {
                    let n = match s_in.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if passed + n > after && st.load(Ordering::SeqCst) {
                        hd.fetch_add(1, Ordering::SeqCst);
                        while st.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    passed += n;
                    if c_out.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Relay {
        port,
        stalled,
        held,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_cut_off_by_a_crash_leaves_nothing_and_the_next_one_completes() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let noise = common::pulls::noise(8 << 20);
    push(
        &reg,
        scratch.path(),
        "big:1",
        &Image::new(vec![
            busybox_layer(Compression::Gzip),
            Layer::new(Compression::Gzip).file("noise", &noise, 0o644),
        ]),
    );
    let relay = relay(reg.port, 2 << 20);
    let via = format!("127.0.0.1:{}/big:1", relay.port);
    let mut s = TestServer::start().await;
    let layers_before = stored_layers(&s.data_dir);
    let pulling = tokio::spawn({
        let req = s
            .req(Method::POST, "/v1/images/pull")
            .json(&json!({ "ref": via }));
        async move { req.send().await.map(|r| r.status()) }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while relay.held.load(Ordering::SeqCst) == 0 || scratch_entries(&s.data_dir).is_empty() {
        assert!(Instant::now() < deadline, "the pull never got under way");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Killed halfway through the big layer, with a partial tree in the store's scratch dir.
    s.kill9();
    let _ = pulling.await;
    let s2 = TestServer::start_on(s.data_dir.clone(), s.port, s.subnet.clone()).await;
    assert!(
        scratch_entries(&s2.data_dir).is_empty(),
        "scratch left behind"
    );
    let after = stored_layers(&s2.data_dir);
    assert!(
        after.len() <= layers_before.len() + 1,
        "at most the small layer, complete: {layers_before:?} -> {after:?}"
    );
    assert!(!image_names(&s2).await.contains(&via));

    relay.stalled.store(false, Ordering::SeqCst);
    pull_ok(&s2, &via).await;
    let sb = s2.create(json!({"image": via, "runtime": "runc"})).await;
    assert_eq!(
        s2.sh(sb["id"].as_str().expect("id"), "wc -c < /noise")
            .await
            .trim(),
        (8u32 << 20).to_string()
    );
    s2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn warren_image_pull_from_the_cli() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let digest = push(
        &reg,
        scratch.path(),
        "cli:1",
        &Image::new(vec![
            busybox_layer(Compression::Gzip),
            Layer::new(Compression::Zstd).file("hello", b"hi\n", 0o644),
        ]),
    );
    let s = TestServer::start().await;
    let warren = |args: &[&str]| warren(&s, args);
    let r = reg.reference("cli:1");
    let out = warren(&["image", "pull", "--json", &r]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines[0]["type"], "resolved");
    let last = lines.last().expect("lines");
    assert_eq!(last["type"], "done");
    assert_eq!(last["image"]["digest"], digest.as_str());
    // Again, for people: every layer is here already.
    let out = warren(&["image", "pull", &r]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&r) && text.contains(&digest), "{text}");
    let out = warren(&["image", "pull", &reg.reference("nope:1")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
    let out = warren(&["image", "prune", "--json"]);
    assert!(out.status.success());
    let pruned: Value = serde_json::from_slice(&out.stdout).expect("prune JSON");
    assert_eq!(pruned["layers_removed"], json!([]));
    s.shutdown().await;
}
