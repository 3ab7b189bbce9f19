//! Sandboxes outlive the server: `kill -9` of `warren serve`, a restart on the same data dir,
//! and the sandboxes are still listed and answer exec; deleting them then releases everything.
//! Needs root, crun, runsc.
mod common;

use common::{TestServer, RUNTIMES};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_survive_kill_9_of_the_server() {
    let mut s = TestServer::start().await;
    let mut made = Vec::new();
    for rt in RUNTIMES {
        let sb = s.create(json!({"image": "busybox", "runtime": rt})).await;
        s.sh(sb["id"].as_str().expect("id"), "echo before > /root/mark")
            .await;
        made.push(sb);
    }
    s.kill9();

    let s2 = TestServer::start_on(s.data_dir.clone(), s.port, s.subnet.clone()).await;
    let list: Value = s2.get_json("/v1/sandboxes").await;
    for sb in &made {
        let id = sb["id"].as_str().expect("id");
        let found = list["sandboxes"]
            .as_array()
            .expect("array")
            .iter()
            .find(|x| x["id"] == id)
            .cloned();
        let found = found.unwrap_or_else(|| panic!("{id} missing after restart: {list}"));
        assert_eq!(found["state"], "running", "{found}");
        assert_eq!(s2.sh(id, "cat /root/mark").await, "before\n");
    }
    for sb in &made {
        let id = sb["id"].as_str().expect("id");
        s2.delete(id).await;
        let left = s2.leftovers(sb);
        assert!(left.is_empty(), "{id}: {left:?}");
    }
    s2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_survives_a_restart() {
    let mut s = TestServer::start().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc", "timeout_s": 2}))
        .await;
    let id = sb["id"].as_str().expect("id").to_owned();
    s.kill9();
    // It expires while no server runs; the restarted one reaps it.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let s2 = TestServer::start_on(s.data_dir.clone(), s.port, s.subnet.clone()).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while s2.get(&id).await.0 != reqwest::StatusCode::NOT_FOUND {
        assert!(
            std::time::Instant::now() < deadline,
            "expired sandbox still there after a restart"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Its network lease index is free again, and the restarted server's warm pool may already
    // have made a new lease there (same names, and its rules chain); the graceful stop below
    // checks that no namespace or nftables table of this server is left at all.
    let left: Vec<String> = s2
        .leftovers(&sb)
        .into_iter()
        .filter(|l| l != "netns" && !l.starts_with("veth") && !l.starts_with("nftables chain"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    s2.shutdown().await;
}
