//! The `warren` CLI as a person uses it: `cp` both ways, `logs`, `history`, and `shell` driven
//! under tmux (send-keys, capture-pane). Needs root, crun, tmux.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pulls::warren;
use common::TestServer;
use serde_json::json;

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn cp_logs_and_history_from_the_cli() {
    let s = TestServer::start().await;
    let sb = s.create(json!({"image": "busybox", "runtime": "runc", "cmd": ["sh", "-c", "echo from-main; sleep 1000"]})).await;
    let id = sb["id"].as_str().expect("id");
    let local = tempfile::tempdir_in("/var/tmp").expect("dir");
    let src = local.path().join("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"alpha\n").expect("write");
    std::fs::write(src.join("sub/b.bin"), (0..=255u8).collect::<Vec<_>>()).expect("write");
    let src_s = src.to_string_lossy().into_owned();
    ok(warren(&s, &["cp", &src_s, &format!("{id}:/data")]));
    assert_eq!(
        s.sh(id, "cat /data/a.txt; wc -c < /data/sub/b.bin").await,
        "alpha\n256\n"
    );
    let back = local.path().join("back");
    ok(warren(
        &s,
        &["cp", &format!("{id}:/data"), &back.to_string_lossy()],
    ));
    assert_eq!(
        std::fs::read(back.join("sub/b.bin")).expect("read"),
        (0..=255u8).collect::<Vec<_>>()
    );
    ok(warren(
        &s,
        &[
            "cp",
            &format!("{id}:/data/a.txt"),
            &local.path().join("a2").to_string_lossy(),
        ],
    ));
    assert_eq!(
        std::fs::read(local.path().join("a2")).expect("read"),
        b"alpha\n"
    );
    let out = warren(
        &s,
        &[
            "cp",
            &format!("{id}:/nope"),
            &local.path().join("x").to_string_lossy(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not_found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // logs: the main command's output is there.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ok(warren(&s, &["logs", id])).contains("from-main") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "main output never showed in `warren logs`"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // history: the cp's own commands were recorded, as a transcript.
    let hist = ok(warren(&s, &["history", id, "--user-only"]));
    assert!(
        hist.contains("# warren cp") && hist.contains("$ sh -c"),
        "{hist}"
    );
    s.delete(id).await;
    s.shutdown().await;
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screen_until(session: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let screen = tmux(&["capture-pane", "-t", session, "-p"]);
        if screen.contains(what) {
            return screen;
        }
        assert!(
            Instant::now() < deadline,
            "{what:?} never appeared on screen:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_under_tmux_sizes_echoes_resizes_and_exits_with_the_code() {
    assert!(
        Path::new("/usr/bin/tmux").exists(),
        "tmux is needed: apt-get install tmux"
    );
    let s = TestServer::start().await;
    for rt in common::RUNTIMES {
        let sb = s.create(json!({"image": "busybox", "runtime": rt})).await;
        let id = sb["id"].as_str().expect("id");
        let session = format!("warren-test-{id}");
        let marker = std::env::temp_dir().join(format!("{session}.exit"));
        let cmd = format!(
            "WARREN_URL={} WARREN_DATA_DIR={} {} shell {id}; echo $? > {}",
            s.url,
            s.data_dir.display(),
            env!("CARGO_BIN_EXE_warren"),
            marker.display()
        );
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "100",
            "-y",
            "30",
            &cmd,
        ]);
        tmux(&[
            "send-keys",
            "-t",
            &session,
            "stty size; echo sum-$((6*7))",
            "Enter",
        ]);
        let screen = screen_until(&session, "sum-42");
        assert!(
            screen.contains("30 100"),
            "{rt}: stty size should be 30 100:\n{screen}"
        );
        tmux(&["resize-window", "-t", &session, "-x", "120", "-y", "40"]);
        std::thread::sleep(Duration::from_millis(500));
        tmux(&["send-keys", "-t", &session, "stty size", "Enter"]);
        screen_until(&session, "40 120");
        tmux(&["send-keys", "-t", &session, "exit 7", "Enter"]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !marker.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let code = std::fs::read_to_string(&marker).unwrap_or_default();
        let _ = std::fs::remove_file(&marker);
        tmux(&["kill-session", "-t", &session]);
        assert_eq!(code.trim(), "7", "{rt}: warren shell's exit code");
        s.delete(id).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_with_egress_and_public_then_change_the_network() {
    let s = TestServer::start().await;
    ok(warren(
        &s,
        &[
            "run",
            "--runtime",
            "runc",
            "--egress",
            "deny",
            "--public",
            "busybox",
            "--",
            "true",
        ],
    ));
    let list: serde_json::Value =
        serde_json::from_str(&ok(warren(&s, &["ls", "--json"]))).expect("ls --json");
    let id = list
        .as_array()
        .or_else(|| list["sandboxes"].as_array())
        .and_then(|l| l.first())
        .and_then(|sb| sb["id"].as_str())
        .expect("one sandbox")
        .to_owned();
    let got: serde_json::Value =
        serde_json::from_str(&ok(warren(&s, &["inspect", "--json", &id]))).expect("inspect");
    assert_eq!(got["egress"], "deny");
    assert_eq!(got["public"], true);
    let text = ok(warren(&s, &["inspect", &id]));
    assert!(
        text.contains("egress:    deny") && text.contains("access:    public"),
        "{text}"
    );

    let changed: serde_json::Value = serde_json::from_str(&ok(warren(
        &s,
        &["network", "--json", &id, "10.1.0.0/16,192.0.2.7"],
    )))
    .expect("network --json");
    assert_eq!(
        changed["egress"],
        json!({"allow": ["10.1.0.0/16", "192.0.2.7"]})
    );
    assert_eq!(
        ok(warren(&s, &["network", &id, "allow"])).trim(),
        format!("{id}: egress allow")
    );
    let bad = warren(&s, &["network", &id, "10.0.0.0/99"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("egress.allow") && err.contains("10.0.0.0/99"),
        "{err}"
    );
    s.delete(&id).await;
    s.shutdown().await;
}

/// A tar as a hostile sandbox hands it to `warren cp`: `(path, what)` with `what` a file's
/// content, `"/"` for a directory or `"->t"` for a symlink to `t`; paths unchecked.
fn hostile_tar(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, what) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(0);
        let data = if *what == "/" {
            h.set_entry_type(tar::EntryType::Directory);
            ""
        } else if let Some(target) = what.strip_prefix("->") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_link_name(target).expect("link name");
            ""
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            what
        };
        h.set_size(data.len() as u64);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data.as_bytes()).expect("append");
    }
    b.into_inner().expect("tar")
}

/// Every path under `root`, with its kind (or link target) and content.
fn picture(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            let m = std::fs::symlink_metadata(&p).expect("metadata");
            if m.file_type().is_symlink() {
                let target = std::fs::read_link(&p).expect("readlink");
                out.push(format!("{rel} -> {}", target.display()));
            } else if m.is_dir() {
                out.push(format!("{rel}/"));
                stack.push(p);
            } else {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                out.push(format!("{rel} = {text}"));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn cp_out_of_a_hostile_sandbox_changes_nothing_it_should_not() {
    let s = TestServer::start().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    // The sandbox's own `tar` is whatever its code put there: here one that hands over a
    // prepared tar for each directory asked for.
    let tars = [
        (
            "over-dir",
            hostile_tar(&[("fresh", "x"), ("keep", "a file now")]),
        ),
        ("escape", hostile_tar(&[("a", "x"), ("../escaped", "x")])),
        (
            "links",
            hostile_tar(&[
                ("f", "data"),
                ("abs", "->/etc/passwd"),
                ("up", "->../outside"),
                ("in", "->f"),
            ]),
        ),
    ];
    for (name, tar) in &tars {
        let resp = s
            .req(reqwest::Method::PUT, &format!("/v1/sandboxes/{id}/files"))
            .query(&[("path", format!("/hostile/{name}.tar"))])
            .body(tar.clone())
            .send()
            .await
            .expect("upload");
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    // Busybox's shell runs its own `tar` whatever PATH says, so the `sh` that `warren cp` runs
    // (the first on PATH) is replaced instead: it answers `tar -cf OUT -C DIR .` itself.
    let fake_sh = "#!/bin/busybox sh\n\
                   # sh -c 'tar -cf \"$2\" -C \"$1\" .' sh DIR OUT\n\
                   case \"$2\" in 'tar -cf'*) cat \"/hostile/${4##*/}.tar\" > \"$5\"; exit;; esac\n\
                   exec /bin/busybox sh \"$@\"\n";
    let resp = s
        .req(reqwest::Method::PUT, &format!("/v1/sandboxes/{id}/files"))
        .query(&[("path", "/usr/local/bin/sh")])
        .body(fake_sh)
        .send()
        .await
        .expect("upload");
    assert!(resp.status().is_success(), "{}", resp.status());
    s.sh(
        id,
        "mkdir -p /src/over-dir /src/escape /src/links && chmod +x /usr/local/bin/sh",
    )
    .await;
    // The way `warren cp` packs a directory (`sh` looked up on PATH, not busybox's own).
    let packed = s
        .exec(
            id,
            json!({"cmd": ["sh", "-c", "tar -cf \"$2\" -C \"$1\" .", "sh", "/src/links", "/tmp/t"]}),
        )
        .await;
    assert_eq!(packed["exit_code"], 0, "{packed}");
    assert_eq!(
        s.sh(id, "cmp /tmp/t /hostile/links.tar && echo faked")
            .await,
        "faked\n"
    );

    let local = tempfile::tempdir_in("/var/tmp").expect("dir");
    let cp = |from: &str, to: &Path| {
        warren(
            &s,
            &["cp", &format!("{id}:/src/{from}"), &to.to_string_lossy()],
        )
    };

    // A file in the copy never replaces a directory that is here.
    let dest = local.path().join("over-dir");
    std::fs::create_dir_all(dest.join("keep")).expect("mkdir");
    std::fs::write(dest.join("keep/inner"), "mine").expect("write");
    let before = picture(local.path());
    let out = cp("over-dir", &dest);
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(picture(local.path()), before);

    // A refused tar leaves nothing, neither a partial copy nor its scratch directory.
    let out = cp("escape", &local.path().join("escape"));
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(".."),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(picture(local.path()), before);

    // Links pointing outside the copy are not made, and the user is told.
    let dest = local.path().join("links");
    let out = cp("links", &dest);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("abs -> /etc/passwd") && err.contains("up -> ../outside"),
        "{err}"
    );
    assert_eq!(picture(&dest), ["f = data", "in -> f"]);
    s.delete(id).await;
    s.shutdown().await;
}
