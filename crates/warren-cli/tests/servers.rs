//! Two servers on one PostgreSQL database: either answers lists and reads of every sandbox,
//! a call that acts on the other's sandbox is 421 naming that server's URL, and when one is
//! killed the other takes over: its running sandboxes are reported failed with the reason.
mod common;

use std::time::Duration;

use common::{free_port, unique_subnet, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A PostgreSQL database of this test's own on `WARREN_TEST_POSTGRES` (which
/// `scripts/postgres-up.sh` prints).
async fn shared_database(test: &str) -> String {
    let admin_url = std::env::var("WARREN_TEST_POSTGRES")
        .expect("WARREN_TEST_POSTGRES must name a PostgreSQL (scripts/postgres-up.sh prints it)");
    let admin = sqlx::PgPool::connect(&admin_url)
        .await
        .expect("connecting to WARREN_TEST_POSTGRES");
    let name = format!("warren_test_servers_{test}_{}", std::process::id());
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(&sql).execute(&admin).await.expect(&sql);
    }
    let (base, _) = admin_url.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{name}")
}

fn args<'a>(db: &'a str, name: &'a str) -> [&'a str; 6] {
    [
        "--database",
        db,
        "--server-name",
        name,
        "--server-timeout",
        "10s",
    ]
}

/// Servers `srv-a` and `srv-b` on `db`; the second shares the first one's keys (the
/// database's): it makes none. The last is `srv-b`'s data dir, kept as long as it runs.
async fn pair(db: &str) -> (TestServer, TestServer, tempfile::TempDir) {
    let a = TestServer::start_with(&args(db, "srv-a")).await;
    let b_dir = tempfile::Builder::new()
        .prefix("warren-test-")
        .tempdir_in("/var/tmp")
        .expect("scratch dir");
    std::fs::copy(a.data_dir.join("admin.key"), b_dir.path().join("admin.key"))
        .expect("the admin key");
    let b = TestServer::start_on_with(
        b_dir.path().to_path_buf(),
        "127.0.0.1",
        free_port(),
        unique_subnet(),
        &args(db, "srv-b"),
    )
    .await;
    let r = b.import_tar("busybox", common::busybox_tar()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (a, b, b_dir)
}

async fn exec(s: &TestServer, id: &str) -> reqwest::Response {
    s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
        .json(&json!({"cmd": ["true"]}))
        .send()
        .await
        .expect("exec")
}

/// `sleep secs` in sandbox `id` on `s`, under idempotency key `key`.
fn keyed_exec(
    s: &TestServer,
    id: &str,
    key: &str,
    secs: u32,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static {
    let call = s
        .req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
        .header("idempotency-key", key)
        .json(&json!({"cmd": ["sleep", secs.to_string()]}));
    call.send()
}

/// Asserts `resp` is 421 sending the client to `url`.
async fn misdirected(resp: reqwest::Response, server: &str, url: &str) {
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(resp.headers()["warren-server-url"], url);
    let body: Value = resp.json().await.expect("body");
    assert_eq!(body["error"]["code"], "misdirected", "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains(server) && msg.contains(url), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_on_one_database_send_callers_to_the_sandboxes_host_and_take_over_the_dead() {
    let db = shared_database("takeover").await;
    let (mut a, b, b_dir) = pair(&db).await;

    let box_ = json!({"image": "busybox", "runtime": "runc", "cmd": ["sleep", "600"]});
    let on_a = a.create(box_.clone()).await;
    assert_eq!(on_a["server"], "srv-a");
    let a_id = on_a["id"].as_str().expect("id").to_owned();
    let on_b = b.create(box_).await;
    assert_eq!(on_b["server"], "srv-b");
    let b_id = on_b["id"].as_str().expect("id").to_owned();

    // Either lists both and reads either; acting goes to the host's server.
    for s in [&a, &b] {
        let list = s.get_json("/v1/sandboxes").await;
        let ids: Vec<&str> = list["sandboxes"]
            .as_array()
            .expect("sandboxes")
            .iter()
            .filter_map(|s| s["id"].as_str())
            .collect();
        assert!(
            ids.contains(&a_id.as_str()) && ids.contains(&b_id.as_str()),
            "{list}"
        );
    }
    let (st, read) = b.get(&a_id).await;
    assert_eq!(
        (st, read["server"].as_str()),
        (StatusCode::OK, Some("srv-a"))
    );
    misdirected(exec(&b, &a_id).await, "srv-a", &a.url).await;
    misdirected(exec(&a, &b_id).await, "srv-b", &b.url).await;
    let r = b
        .req(Method::DELETE, &format!("/v1/sandboxes/{a_id}"))
        .send()
        .await
        .expect("delete");
    misdirected(r, "srv-a", &a.url).await;
    assert_eq!(exec(&a, &a_id).await.status(), StatusCode::OK);
    // Its preview URLs too: its ports are on its host.
    let r = b
        .http
        .get(format!("{}/", b.url))
        .header("host", format!("{a_id}-8080.localhost"))
        .send()
        .await
        .expect("preview");
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);

    // A call running on a server when it dies holds its idempotency key (for every server
    // and route: a key is the caller's)...
    let long = tokio::spawn(keyed_exec(&a, &a_id, "cut-off", 600));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        keyed_exec(&b, &b_id, "cut-off", 0)
            .await
            .expect("exec")
            .status(),
        StatusCode::CONFLICT,
        "the key is held while the call runs"
    );

    // A server killed: the other notices within the timeout and takes over.
    a.kill9();
    let _ = long.await;
    let failed = common::wait_for(&b, &a_id, Duration::from_secs(30), |v| {
        v["state"] == "failed"
    })
    .await;
    assert_eq!(failed["state"], "failed", "{failed}");
    let why = failed["error"].as_str().unwrap_or("");
    assert!(why.contains("srv-a stopped answering"), "{why}");
    assert_eq!(b.get(&b_id).await.1["state"], "running", "its own run on");
    // Its host is gone: acting on it is refused here (503), never run on this host.
    let r = exec(&b, &a_id).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.expect("body");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not answering"),
        "{body}"
    );
    // ...until the takeover lets it go.
    let r = keyed_exec(&b, &b_id, "cut-off", 0).await.expect("exec");
    assert_eq!(r.status(), StatusCode::OK, "the takeover let the key go");

    // A server's start lets go of its own calls' keys only: one running on the other holds.
    let running = tokio::spawn(keyed_exec(&b, &b_id, "running", 30));
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Back again, the killed server cleans up after itself on its host.
    let port = a.port;
    let subnet = a.subnet.clone();
    let a_dir = a.data_dir.clone();
    let a2 = TestServer::start_on_with(a_dir, "127.0.0.1", port, subnet, &args(&db, "srv-a"))
        .await
        .adopt_scratch(a);
    let r = keyed_exec(&b, &b_id, "running", 30).await.expect("exec");
    let body: Value = r.json().await.expect("body");
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    running.abort();
    let r = b
        .req(Method::DELETE, &format!("/v1/sandboxes/{b_id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = a2
        .req(Method::DELETE, &format!("/v1/sandboxes/{a_id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    b.shutdown().await;
    a2.shutdown().await;
    drop(b_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_teams_last_place_goes_to_one_server_of_two() {
    let db = shared_database("quota").await;
    let (a, b, _b_dir) = pair(&db).await;
    let on_a = common::teams::team_key(
        &a,
        Some(json!({"name": "tight", "quotas": {"sandboxes": 1}})),
        "tight",
        "sandboxes",
    )
    .await;
    // The same key through the other server (keys are the database's).
    let on_b = common::teams::As {
        s: &b,
        key: on_a.key.clone(),
    };
    for round in 0..3 {
        let body = common::teams::sandbox();
        let (ra, rb) = tokio::join!(
            on_a.post("/v1/sandboxes", body.clone()),
            on_b.post("/v1/sandboxes", body)
        );
        let mut statuses = [ra.0, rb.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::TOO_MANY_REQUESTS],
            "round {round}: {ra:?} {rb:?}"
        );
        let refused = if ra.0 == StatusCode::TOO_MANY_REQUESTS {
            &ra.1
        } else {
            &rb.1
        };
        assert_eq!(refused["error"]["code"], "quota_exceeded", "{refused}");
        let made = if ra.0 == StatusCode::CREATED {
            (&on_a, &ra.1)
        } else {
            (&on_b, &rb.1)
        };
        let id = made.1["id"].as_str().expect("id");
        assert_eq!(
            made.0.delete(&format!("/v1/sandboxes/{id}")).await,
            StatusCode::NO_CONTENT
        );
    }
    b.shutdown().await;
    a.shutdown().await;
}
