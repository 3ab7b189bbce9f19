//! Network isolation, proven both ways with real traffic: test-made hosts in their own
//! namespaces (198.18.0.0/15) that an allowed sandbox reaches and a denied one does not, two
//! sandboxes that cannot connect to each other, and host ports (the API's among them) that a
//! test-made host reaches but a sandbox does not.
mod common;

use std::net::Ipv4Addr;

use common::remote::{Remote, HTTP_PORT};
use common::{TestServer, RUNTIMES};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The body of `GET /` from `host:port`, fetched inside the sandbox, or `None` when nothing
/// answered within 3 s. By hand with `nc`: busybox `wget` reads its socket in a way this
/// gVisor release's host networking answers with EAGAIN now and then.
async fn fetch(s: &TestServer, id: &str, host: &str, port: u16) -> Option<String> {
    let script = format!(r"printf 'GET / HTTP/1.0\r\n\r\n' | timeout 4 nc -w 3 {host} {port}");
    let v = s.exec(id, json!({"cmd": ["sh", "-c", script]})).await;
    let out = v["stdout"].as_str().unwrap_or_default();
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
}

/// Whether a TCP connection from the sandbox to `host:port` succeeds (2 s budget).
async fn connects(s: &TestServer, id: &str, host: &str, port: u16) -> bool {
    let v = s
        .exec(
            id,
            json!({"cmd": ["sh", "-c", format!("echo | timeout 3 nc -w 2 {host} {port}")]}),
        )
        .await;
    v["exit_code"] == 0
}

fn url(r: &Remote) -> String {
    format!("http://{}:{HTTP_PORT}/", r.ip)
}

/// The remote's page, fetched from inside the sandbox.
async fn fetch_remote(s: &TestServer, id: &str, r: &Remote) -> Option<String> {
    fetch(s, id, &r.ip.to_string(), HTTP_PORT).await
}

async fn set_egress(s: &TestServer, id: &str, egress: Value) -> (StatusCode, Value) {
    let resp = s
        .req(Method::PUT, &format!("/v1/sandboxes/{id}/network"))
        .json(&json!({ "egress": egress }))
        .send()
        .await
        .expect("PUT network");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_allow_deny_allowlist_and_live_changes() {
    let s = TestServer::start().await;
    let a = Remote::start("remote-a");
    let b = Remote::start("remote-b");
    // The remotes really serve: the host itself reaches both.
    for r in [&a, &b] {
        let body = reqwest::get(url(r)).await.expect("host → remote");
        assert!(body.status().is_success());
    }
    for runtime in RUNTIMES {
        let allow = s
            .create(json!({"image": "busybox", "runtime": runtime}))
            .await;
        let deny = s
            .create(json!({"image": "busybox", "runtime": runtime, "egress": "deny"}))
            .await;
        let only_a = s
            .create(json!({
                "image": "busybox",
                "runtime": runtime,
                "egress": {"allow": [format!("{}/32", a.ip)]}
            }))
            .await;
        assert_eq!(only_a["egress"], json!({"allow": [format!("{}/32", a.ip)]}));
        let (allow, deny, only_a) = (
            allow["id"].as_str().expect("id").to_owned(),
            deny["id"].as_str().expect("id").to_owned(),
            only_a["id"].as_str().expect("id").to_owned(),
        );

        assert_eq!(
            fetch_remote(&s, &allow, &a).await.as_deref(),
            Some("remote-a\n"),
            "{runtime}"
        );
        assert_eq!(
            fetch_remote(&s, &allow, &b).await.as_deref(),
            Some("remote-b\n"),
            "{runtime}"
        );
        assert_eq!(
            fetch_remote(&s, &deny, &a).await,
            None,
            "{runtime}: deny reached a"
        );
        assert_eq!(
            fetch_remote(&s, &only_a, &a).await.as_deref(),
            Some("remote-a\n"),
            "{runtime}"
        );
        assert_eq!(
            fetch_remote(&s, &only_a, &b).await,
            None,
            "{runtime}: allow-list reached b"
        );

        // Changed on the running sandboxes, in force at once, no restart.
        let (status, v) = set_egress(&s, &deny, json!("allow")).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["egress"], "allow");
        assert_eq!(v["state"], "running");
        assert_eq!(
            fetch_remote(&s, &deny, &a).await.as_deref(),
            Some("remote-a\n"),
            "{runtime}"
        );
        let (status, _) = set_egress(&s, &allow, json!("deny")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            fetch_remote(&s, &allow, &a).await,
            None,
            "{runtime}: deny after allow"
        );
        let (status, _) = set_egress(&s, &only_a, json!({"allow": [format!("{}", b.ip)]})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(fetch_remote(&s, &only_a, &a).await, None, "{runtime}");
        assert_eq!(
            fetch_remote(&s, &only_a, &b).await.as_deref(),
            Some("remote-b\n"),
            "{runtime}"
        );
        let (_, got) = s.get(&only_a).await;
        assert_eq!(got["egress"], json!({"allow": [b.ip.to_string()]}));

        // The policy outlives a stop/start.
        let resp = s.post(&format!("/v1/sandboxes/{allow}/stop"), None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = s.post(&format!("/v1/sandboxes/{allow}/start"), None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            fetch_remote(&s, &allow, &a).await,
            None,
            "{runtime}: deny after restart"
        );

        for id in [&allow, &deny, &only_a] {
            s.delete(id).await;
        }
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_egress_values_are_rejected_and_change_nothing() {
    let s = TestServer::start().await;
    for bad in [
        json!("sometimes"),
        json!({"allow": "10.0.0.0/8"}),
        json!({"deny": "10.0.0.0/8"}),
        json!({"allow": [], "block": ["10.0.0.0/8"]}),
        json!({"allow": [42]}),
    ] {
        let resp = s
            .post(
                "/v1/sandboxes",
                Some(json!({"image": "busybox", "runtime": "runc", "egress": bad})),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let v: Value = resp.json().await.expect("error body");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("egress"),
            "{v}"
        );
    }
    // Names are fine in `allow` (resolved), but not wildcards, not malformed, never in `deny`.
    for bad in [
        "fe80::/10",
        "10.0.0.300/8",
        "*.example.com",
        "bad_name!",
        "-x.example",
    ] {
        let resp = s
            .post(
                "/v1/sandboxes",
                Some(json!({"image": "busybox", "runtime": "runc", "egress": {"allow": [bad]}})),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let v: Value = resp.json().await.expect("error body");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(bad),
            "{v}"
        );
    }
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc", "egress": "deny"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let (status, v) = set_egress(&s, id, json!({"allow": [], "deny": ["example.com"]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(s.get(id).await.1["egress"], "deny");
    let (status, v) = set_egress(&s, "aaaaaaaaaaaaaaaa", json!("allow")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    s.delete(id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_cannot_reach_each_other_the_host_or_link_local() {
    // The API on every address, so a test-made host can prove the port is open to others.
    let s = TestServer::start_listening("0.0.0.0", &[]).await;
    let remote = Remote::start("remote");
    let (ok, _) = remote.run_in(&[
        "busybox",
        "wget",
        "-q",
        "-O",
        "/dev/null",
        &format!("http://{}:{}/healthz", remote.host_ip, s.port),
    ]);
    assert!(ok, "the test-made host reaches the API port");
    // A link-local host (as a metadata service would be): reachable from the host itself.
    let meta = Remote::start_at("metadata", Ipv4Addr::new(169, 254, 77, 0));
    let resp = reqwest::get(url(&meta)).await.expect("host → link-local");
    assert!(resp.status().is_success());

    for runtime in RUNTIMES {
        let target = s
            .create(json!({"image": "busybox", "runtime": runtime}))
            .await;
        let tid = target["id"].as_str().expect("id");
        let tip = target["ip"].as_str().expect("ip").to_owned();
        let v = s
            .exec(
                tid,
                json!({"cmd": ["sh", "-c", "mkdir -p /www && echo target > /www/index.html && httpd -p 8000 -h /www"]}),
            )
            .await;
        assert_eq!(v["exit_code"], 0, "{v}");
        // The host reaches the sandbox's server (the proxy's path)…
        let page = reqwest::get(format!("http://{tip}:8000/"))
            .await
            .expect("host → sandbox")
            .text()
            .await
            .expect("body");
        assert_eq!(page, "target\n");

        let probe = s
            .create(json!({"image": "busybox", "runtime": runtime}))
            .await;
        let pid = probe["id"].as_str().expect("id");
        let gateway = {
            let ip: Ipv4Addr = probe["ip"].as_str().expect("ip").parse().expect("ip");
            Ipv4Addr::from(u32::from(ip) - 1)
        };
        // …and the allowed sandbox reaches outside, so what fails below fails by rule.
        assert!(
            connects(&s, pid, &remote.ip.to_string(), HTTP_PORT).await,
            "{runtime}"
        );
        // …but not the other sandbox,
        assert!(
            !connects(&s, pid, &tip, 8000).await,
            "{runtime}: reached {tip}:8000"
        );
        // nor the API port at any host address (its gateway, the host's other links),
        for host in [gateway, remote.host_ip] {
            assert!(
                !connects(&s, pid, &host.to_string(), s.port).await,
                "{runtime}: reached the API at {host}"
            );
        }
        // nor link-local.
        assert_eq!(
            fetch_remote(&s, pid, &meta).await,
            None,
            "{runtime}: reached 169.254"
        );
        s.delete(tid).await;
        s.delete(pid).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spoofed_source_address_gets_nowhere() {
    let s = TestServer::start().await;
    let remote = Remote::start("remote");
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let ip: Ipv4Addr = sb["ip"].as_str().expect("ip").parse().expect("ip");
    let index = (u32::from(ip) - u32::from(s.subnet_base())) / 4;
    let netns = format!("warren-{}-{index}", s.tag());
    // A second address on the sandbox's interface, added from outside (its processes lack
    // CAP_NET_ADMIN), then the same connection from each source address.
    // Outside its /30 (its broadcast address would be rewritten to its own by the kernel).
    let spoofed = Ipv4Addr::from(u32::from(s.subnet_base()) + 250);
    let added = std::process::Command::new("ip")
        .args([
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{spoofed}/32"),
            "dev",
            "eth0",
        ])
        .status()
        .expect("ip addr add");
    assert!(added.success());
    let connect_from = |src: Ipv4Addr| {
        let script = format!(
            "import socket; s = socket.socket(); s.settimeout(2); s.bind(('{src}', 0)); \
             s.connect(('{}', {HTTP_PORT})); print('connected')",
            remote.ip
        );
        std::process::Command::new("ip")
            .args(["netns", "exec", &netns, "python3", "-c", &script])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    assert!(connect_from(ip), "from its own address");
    assert!(!connect_from(spoofed), "from a spoofed address");
    s.delete(id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resolv_conf_names_the_dns_servers_and_names_resolve() {
    let mut remote = Remote::start("named-remote");
    remote.serve_dns(remote.ip);
    let dns = remote.ip.to_string();
    let s = TestServer::start_with(&["--dns", &dns]).await;
    for runtime in RUNTIMES {
        let sb = s
            .create(json!({"image": "busybox", "runtime": runtime}))
            .await;
        let id = sb["id"].as_str().expect("id");
        assert_eq!(
            s.sh(id, "cat /etc/resolv.conf").await,
            format!("nameserver {dns}\n")
        );
        let looked_up = s.sh(id, "nslookup anything.warren.test").await;
        assert!(looked_up.contains(&dns), "{runtime}: {looked_up}");
        assert_eq!(
            fetch(&s, id, "anything.warren.test", HTTP_PORT)
                .await
                .as_deref(),
            Some("named-remote\n"),
            "{runtime}"
        );
        s.delete(id).await;
    }
    // An allow-list still resolves names (its name servers are let through on port 53) but
    // reaches only what it lists.
    let sb = s
        .create(
            json!({"image": "busybox", "runtime": "runc", "egress": {"allow": ["192.0.2.0/24"]}}),
        )
        .await;
    let id = sb["id"].as_str().expect("id");
    let looked_up = s.sh(id, "nslookup other.warren.test").await;
    assert!(looked_up.contains(&dns), "{looked_up}");
    assert_eq!(fetch(&s, id, "other.warren.test", HTTP_PORT).await, None);
    s.delete(id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_resolv_conf_is_the_default() {
    let s = TestServer::start().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let inside = s.sh(id, "grep ^nameserver /etc/resolv.conf").await;
    let host = std::fs::read_to_string("/etc/resolv.conf").expect("host resolv.conf");
    let host_ns: Vec<&str> = host
        .lines()
        .filter(|l| l.starts_with("nameserver"))
        .collect();
    if host_ns.iter().any(|l| !l.contains(" 127.")) {
        assert_eq!(inside.lines().collect::<Vec<_>>(), host_ns);
    } else {
        assert!(!inside.contains(" 127."), "{inside}");
    }
    s.delete(id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flushed_firewall_is_put_back() {
    let s = TestServer::start().await;
    let remote = Remote::start("remote");
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc", "egress": "deny"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let open = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let open = open["id"].as_str().expect("id");
    assert_eq!(
        fetch_remote(&s, open, &remote).await.as_deref(),
        Some("remote\n")
    );
    let table = format!("warren_{}", s.tag());
    let listed = |what: &[&str]| {
        std::process::Command::new("nft")
            .args(what)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|st| st.success())
    };
    assert!(listed(&["list", "table", "inet", &table]));
    // What `nft flush ruleset` (or restarting the host's nftables service) does to it.
    assert!(listed(&["delete", "table", "inet", &table]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !listed(&["list", "table", "inet", &table]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the table did not come back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Each sandbox's own policy is back in force, not just the table (a veth without its
    // chain would send nothing at all).
    assert_eq!(
        fetch_remote(&s, open, &remote).await.as_deref(),
        Some("remote\n")
    );
    assert_eq!(
        fetch_remote(&s, id, &remote).await,
        None,
        "deny after the flush"
    );
    let (status, _) = set_egress(&s, id, json!("allow")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fetch_remote(&s, id, &remote).await.as_deref(),
        Some("remote\n")
    );
    s.delete(id).await;
    s.delete(open).await;
    s.shutdown().await;
}
