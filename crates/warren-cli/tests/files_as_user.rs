//! Files through the API as a named user, under both runtimes: `?user=` reads and writes
//! succeed or fail exactly as that user's own `cat`/`tee` would (the two attacks of the security
//! review: reading root's 0600 file as nobody, and taking `/etc/passwd` by writing it as
//! nobody), an overwritten file keeps its owner; and failures the request caused (a read-only
//! path, a path of kilobytes) are 4xx, not 503, with no user path in the error log.
//! Needs root, crun, runsc.
mod common;

use common::{TestServer, RUNTIMES};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Status and body of a files request.
async fn files(
    s: &TestServer,
    method: Method,
    id: &str,
    query: &[(&str, &str)],
    body: &str,
) -> (StatusCode, String) {
    let route = if query.iter().any(|(k, _)| *k == "list") {
        "files/list"
    } else {
        "files"
    };
    let query: Vec<&(&str, &str)> = query.iter().filter(|(k, _)| *k != "list").collect();
    let r = s
        .req(method, &format!("/v1/sandboxes/{id}/{route}"))
        .query(&query)
        .body(body.to_owned())
        .send()
        .await
        .expect("files request");
    (r.status(), r.text().await.unwrap_or_default())
}

fn error_code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn as_user_suite(s: &TestServer, rt: &str) {
    let sb = s.create(json!({"image": "busybox", "runtime": rt})).await;
    let id = sb["id"].as_str().expect("id");
    s.sh(
        id,
        "echo s3cret > /root/secret && chmod 600 /root/secret && chmod 700 /root \
         && mkdir -p /data && chmod 755 /data \
         && echo old > /data/shared && chmod 666 /data/shared",
    )
    .await;
    let passwd_before = s.sh(id, "cat /etc/passwd").await;
    let nobody = |path: &'static str| [("path", path), ("user", "nobody")];

    // Attack 1: root's 0600 file read as nobody.
    let (status, body) = files(s, Method::GET, id, &nobody("/root/secret"), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{rt}: {body}");
    assert_eq!(error_code(&body), "forbidden", "{rt}: {body}");
    assert!(!body.contains("s3cret"), "{rt}: {body}");
    let (status, body) = files(
        s,
        Method::GET,
        id,
        &[("list", ""), ("path", "/root"), ("user", "nobody")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{rt}: list /root: {body}");
    // Root, the default user, still reads it.
    let (status, body) = files(s, Method::GET, id, &[("path", "/root/secret")], "").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "s3cret\n"),
        "{rt}"
    );

    // Attack 2: /etc/passwd written (and so chowned) as nobody.
    let (status, body) = files(
        s,
        Method::PUT,
        id,
        &nobody("/etc/passwd"),
        "pwned::0:0::/:/bin/sh\n",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{rt}: {body}");
    assert_eq!(s.sh(id, "stat -c %u:%g /etc/passwd").await, "0:0\n", "{rt}");
    assert_eq!(s.sh(id, "cat /etc/passwd").await, passwd_before, "{rt}");
    // Nor anything new in root's directories.
    let (status, body) = files(s, Method::PUT, id, &nobody("/data/new/f"), "x").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{rt}: {body}");
    assert_eq!(s.sh(id, "ls /data").await, "shared\n", "{rt}");
    let (status, body) = files(s, Method::DELETE, id, &nobody("/data/shared"), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{rt}: {body}");

    // A file nobody may write: written, and still root's.
    let (status, body) = files(s, Method::PUT, id, &nobody("/data/shared"), "new\n").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{rt}: {body}");
    assert_eq!(
        s.sh(id, "stat -c %u:%g /data/shared; cat /data/shared")
            .await,
        "0:0\nnew\n",
        "{rt}"
    );
    // A new file is nobody's, parents too.
    let (status, body) = files(s, Method::PUT, id, &nobody("/tmp/n/f"), "mine").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{rt}: {body}");
    assert_eq!(
        s.sh(id, "stat -c %u:%g /tmp/n /tmp/n/f").await,
        "65534:65534\n65534:65534\n",
        "{rt}"
    );
    let (status, body) = files(s, Method::GET, id, &nobody("/tmp/n/f"), "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "mine"), "{rt}");
    s.delete(id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn files_as_a_user_have_exactly_its_permissions_under_both_runtimes() {
    let s = TestServer::start().await;
    for rt in RUNTIMES {
        as_user_suite(&s, rt).await;
    }
    s.shutdown().await;
}

async fn request_errors_suite(s: &TestServer, rt: &str) {
    let sb = s.create(json!({"image": "busybox", "runtime": rt})).await;
    let id = sb["id"].as_str().expect("id");
    // /sys is mounted read-only in every sandbox, even for root.
    let (status, body) = files(s, Method::PUT, id, &[("path", "/sys/warren-test")], "x").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{rt}: read-only /sys: {body}"
    );
    // A file where a directory should be.
    let (status, body) = files(s, Method::PUT, id, &[("path", "/etc/passwd/x")], "x").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{rt}: {body}");
    // Paths of kilobytes: one name too long, and a path longer than PATH_MAX.
    let long_name = format!("/tmp/{}", "a".repeat(5000));
    let long_path = format!("/tmp/{}", "a/".repeat(2500));
    for path in [&long_name, &long_path] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let (status, body) = files(s, method.clone(), id, &[("path", path)], "x").await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{rt} {method}: {body:.300}"
            );
            assert!(
                body.len() < 1000,
                "{rt} {method}: the message holds the whole path"
            );
        }
        let (status, body) = files(s, Method::GET, id, &[("list", ""), ("path", path)], "").await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{rt} list: {body:.300}"
        );
    }
    // No parents were made on the way to a path that cannot exist.
    assert_eq!(s.sh(id, "ls /tmp | wc -l").await.trim(), "0", "{rt}");
    s.delete(id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_the_request_caused_are_4xx_and_not_logged_as_errors() {
    let s = TestServer::start().await;
    for rt in RUNTIMES {
        request_errors_suite(&s, rt).await;
    }
    let log = std::fs::read_to_string(s.data_dir.join("server.log")).unwrap_or_default();
    let user_path = "a".repeat(200);
    let leaked: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains(&user_path))
        .collect();
    assert!(
        leaked.is_empty(),
        "user paths logged as errors: {:.300}",
        leaked.join("\n")
    );
    s.shutdown().await;
}
