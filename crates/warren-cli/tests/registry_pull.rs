//! Image pulls from a real registry (Debian's `docker-registry` on 127.0.0.1, images pushed
//! with skopeo): layers shared by digest, gzip/zstd/plain layers, whiteouts, multi-arch
//! indexes, digest checks, credentials, concurrent pulls. Needs root, crun, runsc,
//! docker-registry, skopeo, umoci.
mod common;

use common::oci_layout::{busybox_layer, Compression, Image, ImageConfig, Layer, OciLayout};
use common::pulls::{
    final_layer_status, image_names, pull, pull_events, pull_ok, scratch_entries, stored_layers,
};
use common::registry::{umoci_image, Registry};
use common::{TestServer, RUNTIMES};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use common::pulls::push_image as push;

#[tokio::test(flavor = "multi_thread")]
async fn layers_are_fetched_once_and_shared_between_images() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let base = busybox_layer(Compression::Gzip);
    let a = push(
        &reg,
        &scratch.path().join("a"),
        "app/a:1",
        &Image::new(vec![
            base.clone(),
            Layer::new(Compression::Gzip).file("etc/which", b"a\n", 0o644),
        ]),
    );
    let b = push(
        &reg,
        &scratch.path().join("b"),
        "app/b:1",
        &Image::new(vec![
            base.clone(),
            Layer::new(Compression::Gzip).file("etc/which", b"b\n", 0o644),
        ]),
    );
    let single = push(
        &reg,
        &scratch.path().join("s"),
        "app/single:1",
        &Image::new(vec![base]),
    );
    let base_digest = &a.layers[0].digest;
    assert_eq!(base_digest, &b.layers[0].digest);

    let s = TestServer::start().await;
    let imported = stored_layers(&s.data_dir).len();
    let events = pull_events(&s, &reg.reference("app/a:1")).await;
    assert_eq!(events[0]["type"], "resolved", "{events:?}");
    assert_eq!(events.last().expect("events")["type"], "done", "{events:?}");
    for l in &a.layers {
        assert_eq!(final_layer_status(&events, &l.digest), "done", "{events:?}");
    }
    let image = &events.last().expect("done")["image"];
    assert_eq!(image["digest"], a.manifest.digest.as_str());
    assert_eq!(image["name"], reg.reference("app/a:1"));

    // The second image shares the base: only its own layer comes over the wire.
    let events = pull_events(&s, &reg.reference("app/b:1")).await;
    assert_eq!(final_layer_status(&events, base_digest), "present");
    assert_eq!(final_layer_status(&events, &b.layers[1].digest), "done");
    let events = pull_events(&s, &reg.reference("app/single:1")).await;
    assert_eq!(
        final_layer_status(&events, &single.layers[0].digest),
        "present"
    );
    assert_eq!(reg.blob_get_count(base_digest), 1, "{}", reg.access_log());
    assert_eq!(reg.blob_get_count(&b.layers[1].digest), 1);
    assert_eq!(stored_layers(&s.data_dir).len(), imported + 3);

    for rt in RUNTIMES {
        for (repo, want) in [("app/a:1", "a\n"), ("app/b:1", "b\n")] {
            let sb = s
                .create(json!({"image": reg.reference(repo), "runtime": rt}))
                .await;
            let id = sb["id"].as_str().expect("id");
            assert_eq!(s.sh(id, "cat /etc/which").await, want, "{rt} {repo}");
            s.delete(id).await;
        }
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_plain_layers_and_whiteouts() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let lower = busybox_layer(Compression::Zstd)
        .file("etc/motd", b"gone\n", 0o644)
        .file("var/cache/a", b"a", 0o644)
        .file("var/cache/b", b"b", 0o644)
        .file("var/keep", b"kept\n", 0o644);
    let upper = Layer::new(Compression::None)
        .whiteout("etc/motd")
        .opaque("var/cache")
        .file("var/cache/c", b"c", 0o644);
    push(
        &reg,
        &scratch.path().join("l"),
        "wh:1",
        &Image::new(vec![lower, upper]),
    );
    let s = TestServer::start().await;
    pull_ok(&s, &reg.reference("wh:1")).await;
    for rt in RUNTIMES {
        let sb = s
            .create(json!({"image": reg.reference("wh:1"), "runtime": rt}))
            .await;
        let id = sb["id"].as_str().expect("id");
        let out = s
            .sh(
                id,
                "ls /var/cache; cat /var/keep; test -e /etc/motd && echo motd-visible; true",
            )
            .await;
        assert_eq!(out, "c\nkept\n", "{rt}");
        s.delete(id).await;
    }

    // umoci writes its own whiteouts for what a later layer deleted.
    let made = umoci_image(&scratch.path().join("umoci"), "u");
    reg.push(&made.layout, &made.tag, "umoci:1", false);
    pull_ok(&s, &reg.reference("umoci:1")).await;
    let sb = s
        .create(json!({"image": reg.reference("umoci:1"), "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let out = s
        .sh(
            id,
            "cat /etc/layer2 >/dev/null && echo l2; ls /etc/motd /opt/removed 2>&1 | wc -l; echo $WARREN_FIXTURE",
        )
        .await;
    assert_eq!(out, "l2\n2\numoci\n");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_arch_index_resolves_to_linux_amd64() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let arch_image = |arch: &str| {
        Image::new(vec![
            busybox_layer(Compression::Gzip),
            Layer::new(Compression::Gzip).file("arch", format!("{arch}\n").as_bytes(), 0o644),
        ])
        .with_config(ImageConfig {
            architecture: arch.to_owned(),
            ..ImageConfig::default()
        })
    };
    let mut layout = OciLayout::create(scratch.path());
    // arm64 first, so taking the first entry would be wrong.
    let index = layout.add_index("multi", &[arch_image("arm64"), arch_image("amd64")]);
    reg.push(scratch.path(), "multi", "multi:1", true);
    let s = TestServer::start().await;
    let image = pull_ok(&s, &reg.reference("multi:1")).await;
    assert_eq!(image["digest"], index.images[1].manifest.digest.as_str());
    let sb = s
        .create(json!({"image": reg.reference("multi:1"), "runtime": "runc"}))
        .await;
    assert_eq!(
        s.sh(sb["id"].as_str().expect("id"), "cat /arch").await,
        "amd64\n"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_blob_is_refused_and_leaves_nothing() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let desc = push(
        &reg,
        scratch.path(),
        "bad:1",
        &Image::new(vec![
            busybox_layer(Compression::Gzip),
            Layer::new(Compression::Gzip).file("etc/x", &[7u8; 100_000], 0o644),
        ]),
    );
    let victim = &desc.layers[1];
    let path = reg.blob_path(&victim.digest);
    let mut bytes = std::fs::read(&path).expect("blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).expect("tamper");

    let s = TestServer::start().await;
    let before = stored_layers(&s.data_dir);
    let (status, body) = pull(&s, &reg.reference("bad:1")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "bad_gateway");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("digest") && msg.contains(&victim.digest),
        "{msg}"
    );
    assert!(!stored_layers(&s.data_dir).contains(&victim.digest));
    assert!(scratch_entries(&s.data_dir).is_empty());
    assert!(!image_names(&s).await.contains(&reg.reference("bad:1")));
    // The untouched layer may stay (it is verified and shared); nothing else was added.
    let after = stored_layers(&s.data_dir);
    assert!(after.len() <= before.len() + 1, "{before:?} -> {after:?}");
    // A create naming it fails the same way, and records no sandbox.
    let resp = s
        .post(
            "/v1/sandboxes",
            Some(json!({"image": reg.reference("bad:1"), "runtime": "runc"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let list = s.get_json("/v1/sandboxes").await;
    assert_eq!(
        list["sandboxes"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_images_and_bad_references() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    push(
        &reg,
        scratch.path(),
        "here:1",
        &Image::new(vec![busybox_layer(Compression::Gzip)]),
    );
    let s = TestServer::start().await;
    for missing in ["here:2", "nowhere:1"] {
        let (status, body) = pull(&s, &reg.reference(missing)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown"));
    }
    let (status, body) = pull(&s, "Not A Reference!").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = pull(&s, "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Nothing listens there: the registry is unreachable, a 502 naming it.
    let closed = format!("127.0.0.1:{}/x:1", common::free_port());
    let (status, body) = pull(&s, &closed).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    // `pull: never` does not ask the registry.
    let resp = s
        .post(
            "/v1/sandboxes",
            Some(json!({"image": reg.reference("here:1"), "pull": "never"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_come_from_the_registry_auth_file() {
    let right = Registry::start_with_auth("alice", "s3cret");
    let wrong = Registry::start_with_auth("bob", "hunter2");
    let none = Registry::start_with_auth("carol", "pw");
    let scratch = tempfile::tempdir().expect("tempdir");
    let image = Image::new(vec![busybox_layer(Compression::Gzip)]);
    for (i, reg) in [&right, &wrong, &none].into_iter().enumerate() {
        push(
            reg,
            &scratch.path().join(i.to_string()),
            "private:1",
            &image,
        );
    }
    let auth = scratch.path().join("config.json");
    let basic = data_encoding::BASE64.encode(b"alice:s3cret");
    std::fs::write(
        &auth,
        json!({"auths": {
            right.host(): {"auth": basic},
            format!("http://{}", wrong.host()): {"username": "bob", "password": "wrong"},
        }})
        .to_string(),
    )
    .expect("auth file");
    let s = TestServer::start_with(&["--registry-auth", auth.to_str().expect("utf-8")]).await;
    pull_ok(&s, &right.reference("private:1")).await;
    for (reg, who) in [(&wrong, "\"bob\""), (&none, "no credentials")] {
        let (status, body) = pull(&s, &reg.reference("private:1")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "registry_denied");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        // The registry's own words, and whose credentials they were.
        assert!(msg.contains("authentication required"), "{msg}");
        assert!(msg.contains(who) && msg.contains(&reg.host()), "{msg}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_one_image_fetch_each_layer_once() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    // Incompressible, so fetching takes long enough for the pulls to overlap.
    let noise = common::pulls::noise(24 << 20);
    let desc = push(
        &reg,
        scratch.path(),
        "big:1",
        &Image::new(vec![
            busybox_layer(Compression::Gzip),
            Layer::new(Compression::Gzip).file("noise", &noise, 0o644),
        ]),
    );
    let s = TestServer::start().await;
    let r = reg.reference("big:1");
    let pulls: Vec<_> = (0..4).map(|_| pull_events(&s, &r)).collect();
    let all = futures::future::join_all(pulls).await;
    let mut fetched = 0;
    for events in &all {
        let done = events.last().expect("events");
        assert_eq!(done["type"], "done", "{events:?}");
        assert_eq!(done["image"]["digest"], desc.manifest.digest.as_str());
        if final_layer_status(events, &desc.layers[1].digest) == "done" {
            fetched += 1;
        }
    }
    assert_eq!(fetched, 1, "exactly one pull fetched the big layer");
    for l in &desc.layers {
        assert_eq!(reg.blob_get_count(&l.digest), 1, "{}", l.digest);
    }
    assert_eq!(image_names(&s).await.iter().filter(|n| **n == r).count(), 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_layer_is_refused_and_writes_nothing_outside() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut escape = common::oci_layout::Entry::file("../../../../escaped-by-layer", b"x", 0o644);
    escape.raw_name = true;
    let through_link = Layer::new(Compression::Gzip).symlink("out", "/tmp").file(
        "out/written-through-symlink",
        b"x",
        0o644,
    );
    let images = [
        ("dotdot:1", Layer::new(Compression::Gzip).entry(escape)),
        ("symlink:1", through_link),
    ];
    for (i, (tag, layer)) in images.iter().enumerate() {
        push(
            &reg,
            &scratch.path().join(i.to_string()),
            tag,
            &Image::new(vec![busybox_layer(Compression::Gzip), layer.clone()]),
        );
    }
    let s = TestServer::start().await;
    for (tag, _) in &images {
        let (status, body) = pull(&s, &reg.reference(tag)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{tag}: {body}");
        assert!(scratch_entries(&s.data_dir).is_empty());
    }
    assert!(!std::path::Path::new("/tmp/written-through-symlink").exists());
    assert!(!s.data_dir.join("escaped-by-layer").exists());
    assert!(!s.data_dir.join("images/escaped-by-layer").exists());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn whiteouts_of_the_layer_dir_are_refused_and_spare_a_concurrent_import() {
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    // `.wh...` once whited out `<staging>/..`: the store's scratch directory, with every tar
    // being imported in it.
    let tags = [("wh-parent:1", ".wh..."), ("wh-self:1", "etc/.wh..")];
    for (i, (tag, name)) in tags.iter().enumerate() {
        push(
            &reg,
            &scratch.path().join(i.to_string()),
            tag,
            // One layer: no other staging tree of the pull is in the scratch directory.
            &Image::new(vec![Layer::new(Compression::Gzip)
                .file("etc/kept", b"x", 0o644)
                .file(name, b"", 0o644)]),
        );
    }
    let s = TestServer::start().await;
    // An import whose tar is half received while the hostile pulls run: a tree of its own (the
    // store would skip unpacking a tar it already has, and never look at the received file).
    let tar = Layer::new(Compression::None)
        .file("etc/neighbour", &common::pulls::noise(1 << 20), 0o644)
        .tar();
    let (first, rest) = tar.split_at(tar.len() / 2);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures::stream::once(async move {
            let _ = wait.await;
            Ok(rest)
        }),
    );
    let import = s
        .req(reqwest::Method::PUT, "/v1/images/neighbour")
        .header("content-type", "application/x-tar")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let hostile = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !scratch_entries(&s.data_dir)
            .iter()
            .any(|e| e.ends_with(".tar"))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the import never began"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut pulls = Vec::new();
        for (tag, _) in &tags {
            pulls.push(pull(&s, &reg.reference(tag)).await);
        }
        let _ = go.send(());
        pulls
    };
    let (imported, pulls) = tokio::join!(import, hostile);
    let imported = imported.expect("import");
    let status = imported.status();
    assert!(
        status.is_success(),
        "the neighbouring import: {status}: {}",
        imported.text().await.unwrap_or_default()
    );
    for ((tag, name), (status, body)) in tags.iter().zip(pulls) {
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{tag}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("whiteout") && msg.contains(name), "{msg}");
    }
    assert!(image_names(&s).await.contains(&"neighbour".to_owned()));
    assert!(scratch_entries(&s.data_dir).is_empty());
    for (tag, _) in &tags {
        assert!(!image_names(&s).await.contains(&reg.reference(tag)));
    }
    s.shutdown().await;
}
