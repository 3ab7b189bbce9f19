//! Named volumes: shared by gVisor and runc sandboxes at once (files stored as the same owner
//! by both), read-only where asked, held to their size, kept across pause/resume and past the
//! sandboxes that used them; removal refused while mounted. Needs root, runsc, crun.
mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn post_volume(s: &TestServer, body: Value) -> (StatusCode, Value) {
    let resp = s.post("/v1/volumes", Some(body)).await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn delete_volume(s: &TestServer, name: &str) -> StatusCode {
    s.req(Method::DELETE, &format!("/v1/volumes/{name}"))
        .send()
        .await
        .expect("DELETE")
        .status()
}

async fn get_volume(s: &TestServer, name: &str) -> (StatusCode, Value) {
    let resp = s
        .req(Method::GET, &format!("/v1/volumes/{name}"))
        .send()
        .await
        .expect("GET");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn run(s: &TestServer, id: &str, script: &str) -> Value {
    s.exec(id, json!({"cmd": ["sh", "-c", script]})).await
}

async fn with_volumes(s: &TestServer, runtime: &str, volumes: Value) -> String {
    let sb = s
        .create(json!({"image": "busybox", "runtime": runtime, "volumes": volumes}))
        .await;
    sb["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_are_shared_sized_read_only_where_asked_and_outlive_sandboxes() {
    let s = TestServer::start().await;
    let (status, v) = post_volume(&s, json!({"name": "shared", "size_mb": 64})).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["size_mb"], 64);
    assert_eq!(
        post_volume(&s, json!({"name": "shared"})).await.0,
        StatusCode::CONFLICT
    );
    for bad in [
        json!({"name": "Bad/name"}),
        json!({"name": "x", "size_mb": 1}),
    ] {
        assert_eq!(
            post_volume(&s, bad.clone()).await.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}"
        );
    }

    let mount = json!([{"name": "shared", "path": "/data"}]);
    let a = with_volumes(&s, "gvisor", mount.clone()).await;
    let b = with_volumes(&s, "runc", mount).await;
    let c = with_volumes(
        &s,
        "runc",
        json!([{"name": "shared", "path": "/ro", "read_only": true}]),
    )
    .await;

    // Both ways, at once, and each root's files owned by root in the other's eyes.
    assert_eq!(
        run(&s, &a, "echo from-gvisor > /data/a").await["exit_code"],
        0
    );
    assert_eq!(s.sh(&b, "cat /data/a").await, "from-gvisor\n");
    s.sh(&b, "echo from-runc > /data/b").await;
    assert_eq!(s.sh(&a, "cat /data/b").await, "from-runc\n");
    assert_eq!(s.sh(&a, "stat -c %u /data/a /data/b").await, "0\n0\n");
    assert_eq!(s.sh(&b, "stat -c %u /data/a /data/b").await, "0\n0\n");
    // On the host both are stored as uid 0, never as the runc sandbox's mapped uid.
    let host = s.data_dir.join("volumes/shared");
    for f in ["a", "b"] {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(host.join(f)).expect("host file").uid(),
            0,
            "{f}"
        );
    }

    // Read-only where asked.
    let v = run(&s, &c, "cat /ro/a && touch /ro/x").await;
    assert_eq!(v["stdout"], "from-gvisor\n", "{v}");
    assert_ne!(v["exit_code"], 0, "{v}");
    assert!(
        v["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("Read-only")),
        "{v}"
    );

    // Its size holds, under each runtime.
    for id in [&a, &b] {
        let v = run(
            &s,
            id,
            "dd if=/dev/zero of=/data/big bs=1M count=100 2>&1; rm -f /data/big",
        )
        .await;
        assert!(
            v["stdout"]
                .as_str()
                .is_some_and(|o| o.contains("No space left")),
            "{v}"
        );
    }

    let (_, v) = get_volume(&s, "shared").await;
    let mut users: Vec<&str> = v["used_by"]
        .as_array()
        .expect("used_by")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    users.sort();
    let mut want = vec![a.as_str(), b.as_str(), c.as_str()];
    want.sort();
    assert_eq!(users, want, "{v}");
    assert_eq!(delete_volume(&s, "shared").await, StatusCode::CONFLICT);

    // Past its sandboxes, and across a pause.
    for id in [&a, &b, &c] {
        s.delete(id).await;
    }
    let d = with_volumes(&s, "gvisor", json!([{"name": "shared", "path": "/mnt/v"}])).await;
    assert_eq!(
        s.sh(&d, "cat /mnt/v/a /mnt/v/b").await,
        "from-gvisor\nfrom-runc\n"
    );
    s.sh(&d, "echo before-pause > /mnt/v/c").await;
    let resp = s.post(&format!("/v1/sandboxes/{d}/pause"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = s.post(&format!("/v1/sandboxes/{d}/resume"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        s.sh(&d, "cat /mnt/v/c; echo after > /mnt/v/d; cat /mnt/v/d")
            .await,
        "before-pause\nafter\n"
    );
    let sb = s.get(&d).await.1;
    s.delete(&d).await;
    assert!(s.leftovers(&sb).is_empty(), "{:?}", s.leftovers(&sb));

    assert_eq!(delete_volume(&s, "shared").await, StatusCode::NO_CONTENT);
    assert_eq!(get_volume(&s, "shared").await.0, StatusCode::NOT_FOUND);
    assert!(!s.data_dir.join("volumes/shared.img").exists());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn volume_mounts_are_checked_before_anything_is_made() {
    let s = TestServer::start().await;
    assert_eq!(
        post_volume(&s, json!({"name": "v1", "size_mb": 16}))
            .await
            .0,
        StatusCode::CREATED
    );
    for (volumes, why) in [
        (json!([{"name": "nope", "path": "/data"}]), "does not exist"),
        (json!([{"name": "v1", "path": "data"}]), "absolute"),
        (json!([{"name": "v1", "path": "/data/../etc"}]), "absolute"),
        (json!([{"name": "v1", "path": "/proc/x"}]), "sandbox's own"),
        (
            json!([{"name": "v1", "path": "/a"}, {"name": "v1", "path": "/a"}]),
            "two volumes",
        ),
    ] {
        let resp = s
            .post(
                "/v1/sandboxes",
                Some(json!({"image": "busybox", "volumes": volumes})),
            )
            .await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{volumes}: {body}"
        );
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "{volumes}: {msg}");
    }
    let list = s.get_json("/v1/sandboxes").await;
    assert_eq!(
        list["sandboxes"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );
    assert_eq!(delete_volume(&s, "v1").await, StatusCode::NO_CONTENT);
    s.shutdown().await;
}
