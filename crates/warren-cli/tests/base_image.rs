//! The `base` image (`warren image build-base`): built once per machine with debootstrap
//! (cached under /var/cache/warren), its tar keeps setuid sudo and leaves out device nodes and
//! apt lists, and under both runtimes it has bash, python3, curl, CA certificates and a user
//! `user` with passwordless sudo. Needs root, debootstrap, a Debian mirror on the first run.
mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::base::base_tar;
use common::{TestServer, RUNTIMES};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[test]
fn tar_keeps_setuid_and_links_and_drops_devices_and_apt_lists() {
    let tar = base_tar();
    let mut archive = tar::Archive::new(std::fs::File::open(&tar).expect("open tar"));
    let mut seen: HashMap<String, (tar::EntryType, u32, u64)> = HashMap::new();
    let mut links = 0;
    let mut first = None;
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        let h = entry.header();
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let kind = h.entry_type();
        assert!(
            !matches!(
                kind,
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo
            ),
            "special file {path} in the tar"
        );
        assert!(
            !path.starts_with("var/lib/apt/lists/"),
            "apt lists left: {path}"
        );
        assert!(
            !(path.starts_with("var/cache/apt/") && path.ends_with(".deb")),
            "package cache left: {path}"
        );
        if kind == tar::EntryType::Link {
            links += 1;
        }
        first.get_or_insert((path.clone(), h.mode().expect("mode")));
        seen.insert(path, (kind, h.mode().expect("mode"), h.uid().expect("uid")));
    }
    assert_eq!(
        first,
        Some(("./".to_owned(), 0o755)),
        "the root comes first, traversable"
    );
    let (kind, mode, uid) = seen["usr/bin/sudo"];
    assert_eq!(kind, tar::EntryType::Regular);
    assert_eq!((mode & 0o4000, uid), (0o4000, 0), "sudo is setuid root");
    assert_eq!(seen["etc/sudoers.d/user"].1, 0o440);
    assert_eq!(seen["home/user"].2, 1000, "home owned by user");
    assert_eq!(seen["etc/hostname"].0, tar::EntryType::Regular);
    assert_eq!(seen["etc/resolv.conf"].0, tar::EntryType::Regular);
    assert!(links > 0, "hard links kept as links");
}

async fn check_runtime(s: &TestServer, runtime: &str) {
    let started = Instant::now();
    let sb = s.create(json!({"image": "base", "runtime": runtime})).await;
    eprintln!(
        "{runtime}: created from base in {} ms",
        started.elapsed().as_millis()
    );
    let id = sb["id"].as_str().expect("id");
    let run = move |cmd: Value, user: Option<&str>| {
        let mut body = json!({"cmd": cmd});
        if let Some(u) = user {
            body["user"] = json!(u);
        }
        async move {
            let v = s.exec(id, body.clone()).await;
            assert_eq!(v["exit_code"], 0, "{runtime}: {body}: {v}");
            v["stdout"].as_str().unwrap_or_default().trim().to_owned()
        }
    };

    let bash = run(json!(["bash", "-c", "echo $BASH_VERSION"]), None).await;
    assert!(bash.starts_with("5."), "{runtime}: bash {bash}");
    assert_eq!(
        run(json!(["python3", "-c", "print(6*7)"]), None).await,
        "42"
    );
    let curl = run(json!(["curl", "--version"]), None).await;
    assert!(curl.starts_with("curl "), "{runtime}: {curl}");
    run(
        json!(["test", "-s", "/etc/ssl/certs/ca-certificates.crt"]),
        None,
    )
    .await;
    let id_user = run(json!(["id", "user"]), None).await;
    assert!(
        id_user.starts_with("uid=1000(user) gid=1000(user)"),
        "{runtime}: {id_user}"
    );
    let home = run(
        json!(["sh", "-c", "getent passwd user | cut -d: -f6,7"]),
        None,
    )
    .await;
    assert_eq!(home, "/home/user:/bin/bash", "{runtime}");
    let lists = run(
        json!(["sh", "-c", "find /var/lib/apt/lists -mindepth 1 | wc -l"]),
        None,
    )
    .await;
    assert_eq!(lists, "0", "{runtime}: apt lists in the image");

    // Exec as the user, then sudo without a password, directly and through su from root.
    let as_user = run(json!(["sh", "-c", "id -u; echo $HOME"]), Some("user")).await;
    assert_eq!(as_user, "1000\n/home/user", "{runtime}");
    // As on E2B: `user` runs `sudo <cmd>` and `sudo -i` without a password, under both runtimes
    // (runsc before 2023 ignored setuid bits, so this failed under gVisor).
    assert_eq!(
        run(json!(["sudo", "-n", "id", "-u"]), Some("user")).await,
        "0"
    );
    assert_eq!(
        run(
            json!(["sh", "-c", "echo 'id -u; pwd' | sudo -n -i"]),
            Some("user")
        )
        .await,
        "0\n/root"
    );
    assert_eq!(
        run(json!(["su", "user", "-c", "sudo -n id -u"]), None).await,
        "0"
    );
    assert_eq!(run(json!(["sudo", "-n", "id", "-u"]), None).await, "0");
    // coreutils passes AT_NO_AUTOMOUNT to statx on every call, which runsc of 2022 refused
    // (the image carried a preloaded wrapper then); the pinned runsc takes it.
    let ls = json!([
        "bash",
        "-c",
        "set -o pipefail; ls -l /usr/bin/sudo | cut -c1-10"
    ]);
    assert_eq!(run(ls, None).await, "-rwsr-xr-x", "{runtime}");
    let stat = json!(["stat", "-c", "%U %a", "/etc/sudoers.d/user"]);
    assert_eq!(run(stat, Some("user")).await, "root 440", "{runtime}");
    run(
        json!(["sh", "-c", "touch ~/made && test -O ~/made"]),
        Some("user"),
    )
    .await;
    assert_eq!(
        run(
            json!(["sh", "-c", "cat /etc/ld.so.preload 2>/dev/null; true"]),
            None
        )
        .await,
        "",
        "nothing preloaded into every process"
    );
    // Warren's per-sandbox names, not the build host's.
    assert_eq!(run(json!(["cat", "/etc/hostname"]), None).await, id);
    s.delete(id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn base_image_under_both_runtimes() {
    let tar = tokio::task::spawn_blocking(base_tar)
        .await
        .expect("build task");
    let s = TestServer::start().await;
    let started = Instant::now();
    let resp = s.import_tar("base", &tar).await;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::CREATED, "importing base: {v}");
    eprintln!(
        "imported base ({:.1} MB) in {:.1} s",
        v["size"].as_f64().unwrap_or(0.0) / 1e6,
        started.elapsed().as_secs_f64()
    );
    for runtime in RUNTIMES {
        check_runtime(&s, runtime).await;
    }
    s.shutdown().await;
}
