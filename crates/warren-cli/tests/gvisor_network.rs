//! gVisor's two network stacks. On its own (the default) a sandbox ends without closing its
//! side of the host's connections to it: the next sandbox given the same address must not get
//! requests on the connections the server pooled for the last one. On the host kernel's
//! (`--gvisor-network host`, Debian's old runsc's only choice) sandboxes still run, serve
//! through the proxy and list their ports.
mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use common::preview::{at, demo, host, id_of};
use common::TestServer;
use reqwest::{header, Method, StatusCode};
use serde_json::json;

/// The agent's port, which E2B's SDKs reach through the proxy.
const AGENT_PORT: u16 = 49983;

/// One round: a sandbox reached through its agent (exec) and through the proxy to its agent's
/// port (what E2B's SDKs do), several requests at once over one HTTP/2 connection (so the
/// proxy sends all but one through its shared pool, which keeps them), then deleted. Its
/// address.
async fn round(s: &TestServer, h2: &reqwest::Client, n: usize) -> String {
    let sb = s
        .create(json!({"image": "busybox", "runtime": "gvisor", "public": true}))
        .await;
    let id = id_of(&sb);
    let ip = sb["ip"].as_str().expect("ip").to_owned();
    let out = s.sh(&id, "echo round").await;
    assert_eq!(out, "round\n", "exec in round {n} ({id} at {ip})");
    let requests = (0..8).map(|_| {
        h2.get(format!("{}/health", s.url))
            .header(header::HOST, host(&id, AGENT_PORT))
            .send()
    });
    for resp in futures::future::join_all(requests).await {
        let resp = resp.expect("a request through the proxy");
        let status = resp.status();
        assert!(
            status.is_success(),
            "the agent's port through the proxy in round {n} ({id} at {ip}): {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }
    s.delete(&id).await;
    ip
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_sandbox_on_an_address_rides_no_connection_of_the_last() {
    let s = TestServer::start().await;
    let mut uses: HashMap<String, u32> = HashMap::new();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .expect("client");
    for n in 0..4 {
        *uses.entry(round(&s, &h2, n).await).or_default() += 1;
    }
    eprintln!("addresses: {uses:?}");
    // Otherwise the test proved nothing: addresses are handed out again at once.
    assert!(
        uses.values().any(|&u| u > 1),
        "no address was used twice: {uses:?}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gvisor_on_the_host_kernels_stack_still_serves() {
    // On every address, so the probe below is refused by the firewall, not by a closed port.
    let s = TestServer::start_listening("0.0.0.0", &["--gvisor-network", "host"]).await;
    let sb = demo(&s, "gvisor", true).await;
    let id = id_of(&sb);
    assert_eq!(s.sh(&id, "echo host-stack").await, "host-stack\n");
    let resp = at(&s, Method::GET, &id, "/").send().await.expect("proxy");
    assert_eq!(resp.status(), StatusCode::OK);
    // Its own namespace still: the server's port is closed to it on its gateway (the host
    // side of its /30, one below its own address).
    let ip: Ipv4Addr = sb["ip"].as_str().expect("ip").parse().expect("an address");
    let gateway = Ipv4Addr::from(u32::from(ip) - 1);
    let probe = format!("echo | timeout 3 nc -w 2 {gateway} {}", s.port);
    let v = s.exec(&id, json!({"cmd": ["sh", "-c", probe]})).await;
    assert_ne!(v["exit_code"], 0, "the API port answered from inside: {v}");
    s.delete(&id).await;
    s.shutdown().await;
}
