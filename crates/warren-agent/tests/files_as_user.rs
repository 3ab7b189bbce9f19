//! File operations for a named user succeed or fail exactly as that user's own `cat` or `tee`
//! would (the agent acts with the user's credentials, it does not act as root and chown), and
//! failures the request caused are the caller's 4xx. Needs root; uses the host's `nobody`
//! (uid 65534) and a private passwd file for a user with a supplementary group.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use support::{Agent, TOKEN};
use warren_agent::AgentClient;

fn once(data: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync {
    futures::stream::iter([Ok(Bytes::copy_from_slice(data))])
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    chmod(path, mode);
}

fn owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

async fn read(client: &AgentClient, path: &Path) -> Result<Vec<u8>, warren_agent::AgentError> {
    let mut stream = Box::pin(client.download(path.to_str().unwrap()).await?);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn put(
    client: &AgentClient,
    path: &Path,
    data: &[u8],
) -> Result<(), warren_agent::AgentError> {
    client.upload(path.to_str().unwrap(), once(data)).await
}

fn code(result: Result<impl std::fmt::Debug, warren_agent::AgentError>) -> String {
    match result {
        Ok(v) => panic!("succeeded: {v:?}"),
        Err(e) => e.rpc_code().unwrap_or("none").to_owned(),
    }
}

/// A root-owned 0755 directory with the files the attacks go for, and a world-writable one.
struct Tree {
    _tmp: tempfile::TempDir,
    base: std::path::PathBuf,
}

impl Tree {
    fn new() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        std::fs::create_dir(&base).unwrap();
        chmod(tmp.path(), 0o755);
        chmod(&base, 0o755);
        write(&base.join("secret"), "s3cret", 0o600);
        write(&base.join("passwd"), "root:x:0:0::/root:/bin/sh\n", 0o644);
        write(&base.join("shared"), "old", 0o666);
        std::fs::create_dir(base.join("private")).unwrap();
        chmod(&base.join("private"), 0o700);
        write(&base.join("private/x"), "x", 0o644);
        std::fs::create_dir(base.join("pub")).unwrap();
        chmod(&base.join("pub"), 0o1777);
        Tree { _tmp: tmp, base }
    }

    fn at(&self, rel: &str) -> std::path::PathBuf {
        self.base.join(rel)
    }
}

#[tokio::test]
async fn nobody_cannot_read_a_root_only_file_through_the_agent() {
    let agent = Agent::spawn().await;
    let tree = Tree::new();
    let nobody = agent.client.with_user("nobody");
    assert_eq!(
        code(read(&nobody, &tree.at("secret")).await),
        "permission_denied"
    );
    // The same through `?username=`, envd's way of naming the user on /files.
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/files", agent.addr))
        .query(&[
            ("path", tree.at("secret").to_str().unwrap()),
            ("username", "nobody"),
        ])
        .header("x-access-token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.unwrap();
    assert!(!body.contains("s3cret"), "{body}");
    // Connect methods too: a directory nobody may not enter or read.
    assert_eq!(
        code(nobody.stat(tree.at("private/x").to_str().unwrap()).await),
        "permission_denied"
    );
    assert_eq!(
        code(
            nobody
                .list_dir(tree.at("private").to_str().unwrap(), 1)
                .await
        ),
        "permission_denied"
    );
    // A stream reports the refusal as its first message.
    let mut watch = nobody
        .watch_dir(tree.at("private").to_str().unwrap(), true)
        .await
        .unwrap();
    assert_eq!(code(watch.next().await.unwrap()), "permission_denied");
    // What nobody may read, it reads; root (the default) still reads everything.
    assert_eq!(
        read(&nobody, &tree.at("passwd")).await.unwrap(),
        b"root:x:0:0::/root:/bin/sh\n"
    );
    assert_eq!(
        read(&agent.client, &tree.at("secret")).await.unwrap(),
        b"s3cret"
    );
}

#[tokio::test]
async fn nobody_cannot_overwrite_or_take_a_root_file_through_the_agent() {
    let agent = Agent::spawn().await;
    let tree = Tree::new();
    let nobody = agent.client.with_user("nobody");
    let passwd = tree.at("passwd");
    assert_eq!(
        code(put(&nobody, &passwd, b"pwned\n").await),
        "permission_denied"
    );
    assert_eq!(owner(&passwd), (0, 0), "the file changed owner");
    assert_eq!(
        std::fs::read(&passwd).unwrap(),
        b"root:x:0:0::/root:/bin/sh\n"
    );
    // The multipart form of the upload, with `?username=`.
    let boundary = "XyZ";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\npwned\n\r\n--{boundary}--\r\n"
    );
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("http://{}/files", agent.addr))
        .query(&[("path", passwd.to_str().unwrap()), ("username", "nobody")])
        .header("x-access-token", TOKEN)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(owner(&passwd), (0, 0), "the file changed owner");
    assert_eq!(
        std::fs::read(&passwd).unwrap(),
        b"root:x:0:0::/root:/bin/sh\n"
    );

    // Nothing new in root's directory either, parents included.
    for new in ["new", "sub/deep/f"] {
        assert_eq!(
            code(put(&nobody, &tree.at(new), b"x").await),
            "permission_denied",
            "{new}"
        );
    }
    assert!(!tree.at("new").exists() && !tree.at("sub").exists());
    assert_eq!(
        code(nobody.make_dir(tree.at("d").to_str().unwrap()).await),
        "permission_denied"
    );
    let shared = tree.at("shared");
    assert_eq!(
        code(nobody.remove(shared.to_str().unwrap()).await),
        "permission_denied"
    );
    let moved = tree.at("pub/stolen");
    assert_eq!(
        code(
            nobody
                .rename(shared.to_str().unwrap(), moved.to_str().unwrap())
                .await
        ),
        "permission_denied"
    );
    assert!(shared.exists() && !moved.exists());
}

#[tokio::test]
async fn a_file_the_user_may_write_keeps_its_owner_and_new_files_are_the_users() {
    let agent = Agent::spawn().await;
    let tree = Tree::new();
    let nobody = agent.client.with_user("nobody");
    let shared = tree.at("shared");
    put(&nobody, &shared, b"new").await.unwrap();
    assert_eq!(std::fs::read(&shared).unwrap(), b"new");
    assert_eq!(owner(&shared), (0, 0), "overwriting gave the file away");

    let made = tree.at("pub/n/f");
    put(&nobody, &made, b"mine").await.unwrap();
    assert_eq!(owner(&made), (65534, 65534));
    assert_eq!(owner(&tree.at("pub/n")), (65534, 65534));
    let dir = nobody
        .make_dir(tree.at("pub/d").to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(dir.owner, "nobody");
    let moved = nobody
        .rename(made.to_str().unwrap(), tree.at("pub/d/g").to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(moved.owner, "nobody");
    nobody
        .remove(tree.at("pub/d").to_str().unwrap())
        .await
        .unwrap();
    assert!(!tree.at("pub/d").exists());
}

#[tokio::test]
async fn supplementary_groups_grant_what_they_grant_and_nothing_more() {
    let tmp = tempfile::tempdir().unwrap();
    chmod(tmp.path(), 0o755);
    let passwd = tmp.path().join("passwd");
    let group = tmp.path().join("group");
    std::fs::write(
        &passwd,
        "root:x:0:0::/root:/bin/sh\nalice:x:4321:4321::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(&group, "root:x:0:\nalice:x:4321:\ndev:x:777:alice\n").unwrap();
    let team = tmp.path().join("team");
    write(&team, "t", 0o660);
    std::os::unix::fs::chown(&team, Some(0), Some(777)).unwrap();
    let roots = tmp.path().join("roots");
    write(&roots, "r", 0o660);
    let agent = Agent::spawn_with(&[
        ("WARREN_AGENT_PASSWD", passwd.to_str().unwrap()),
        ("WARREN_AGENT_GROUP", group.to_str().unwrap()),
    ])
    .await;
    let alice = agent.client.with_user("alice");
    assert_eq!(read(&alice, &team).await.unwrap(), b"t");
    put(&alice, &team, b"T").await.unwrap();
    assert_eq!(owner(&team), (0, 777));
    assert_eq!(code(read(&alice, &roots).await), "permission_denied");
    assert_eq!(code(put(&alice, &roots, b"R").await), "permission_denied");
}

#[tokio::test]
async fn paths_too_long_are_the_callers_error() {
    let agent = Agent::spawn().await;
    let c = &agent.client;
    let tmp = tempfile::tempdir().unwrap();
    let long_name = tmp.path().join("a".repeat(5000));
    let long_path = tmp.path().join("a/".repeat(2500));
    for path in [&long_name, &long_path] {
        assert_eq!(code(read(c, path).await), "invalid_argument");
        assert_eq!(
            code(put(c, &path.join("f"), b"x").await),
            "invalid_argument"
        );
        assert_eq!(
            code(c.stat(path.to_str().unwrap()).await),
            "invalid_argument"
        );
        assert_eq!(
            code(c.make_dir(path.to_str().unwrap()).await),
            "invalid_argument"
        );
    }
    // No parents were made for a path that cannot exist.
    assert!(!tmp.path().join("a").exists());
    // Messages carry a short prefix of the path, not all of it.
    let e = c.stat(long_name.to_str().unwrap()).await.unwrap_err();
    assert!(e.to_string().len() < 400, "{e}");
}

#[tokio::test]
async fn a_recursive_watch_sees_only_directories_the_user_may_read() {
    let agent = Agent::spawn().await;
    let tree = Tree::new();
    let closed = tree.at("pub/closed");
    std::fs::create_dir(&closed).unwrap();
    chmod(&closed, 0o700);
    let nobody = agent.client.with_user("nobody");
    let mut stream = nobody
        .watch_dir(tree.at("pub").to_str().unwrap(), true)
        .await
        .unwrap();
    assert!(matches!(
        stream.next().await,
        Some(Ok(warren_agent::WatchEvent::Start))
    ));
    std::fs::write(closed.join("hidden"), "h").unwrap();
    std::fs::write(tree.at("pub/open"), "o").unwrap();
    let event = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("no watch event within 5 s")
        .unwrap()
        .unwrap();
    let warren_agent::WatchEvent::Filesystem(event) = event else {
        panic!("not a filesystem event: {event:?}");
    };
    assert_eq!(event.name, "open", "{event:?}");
}
