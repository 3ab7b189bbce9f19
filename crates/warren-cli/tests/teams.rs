//! Teams: each team sees only its own sandboxes, operations, volumes, snapshots, secrets and
//! images; every other team's answer 404 and are left out of lists.
mod common;

use common::teams::{sandbox, team_key, As};
use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
#[tokio::test(flavor = "multi_thread")]
async fn teams_see_only_their_own_sandboxes_and_operations() {
    let s = TestServer::start().await;
    let red = team_key(&s, Some(json!({"name": "red"})), "red", "sandboxes").await;
    let blue = team_key(&s, Some(json!({"name": "blue"})), "blue", "sandboxes").await;

    let (st, made) = red.post("/v1/sandboxes", sandbox()).await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    assert_eq!(made["team"], "red");
    let id = made["id"].as_str().expect("id").to_owned();

    // Red sees it; blue and the operator's own team do not, by any route.
    let (_, list) = red.get("/v1/sandboxes").await;
    assert_eq!(
        list["sandboxes"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    for who in [&blue] {
        let (_, list) = who.get("/v1/sandboxes").await;
        assert_eq!(list["sandboxes"], json!([]), "{list}");
        for (method, path, body) in [
            (Method::GET, format!("/v1/sandboxes/{id}"), None),
            (
                Method::POST,
                format!("/v1/sandboxes/{id}/exec"),
                Some(json!({"cmd": ["true"]})),
            ),
            (
                Method::GET,
                format!("/v1/sandboxes/{id}/files?path=/etc/hostname"),
                None,
            ),
            (
                Method::POST,
                format!("/v1/sandboxes/{id}/stop"),
                Some(json!({})),
            ),
            (Method::DELETE, format!("/v1/sandboxes/{id}"), None),
            (Method::GET, format!("/sandboxes/{id}"), None),
            (Method::DELETE, format!("/sandboxes/{id}"), None),
        ] {
            let (st, body) = who.send(method.clone(), &path, body).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        }
        // An id spelled with percent-escapes is the same id to the handler: refused too.
        let escaped = format!("%{:02x}{}", id.as_bytes()[0], &id[1..]);
        for path in [
            format!("/v1/sandboxes/{escaped}"),
            format!("/v1/sandboxes/{escaped}/files?path=/etc/hostname"),
            format!("/sandboxes/{escaped}"),
        ] {
            let (st, body) = who.get(&path).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{path}: {body}");
        }
        let (_, e2b) = who.get("/v2/sandboxes").await;
        assert_eq!(e2b, json!([]), "{e2b}");
        let (_, ops) = who.get("/v1/operations").await;
        assert_eq!(ops["operations"], json!([]), "{ops}");
    }
    let (_, mine) = s.get(&id).await;
    assert_eq!(
        mine["error"]["code"], "not_found",
        "the operator's key is a team's too"
    );
    let ops = s.get_json("/v1/operations").await;
    assert_eq!(ops["operations"], json!([]), "{ops}");
    let (_, ops) = red.get("/v1/operations").await;
    let op_id = ops["operations"][0]["id"]
        .as_str()
        .expect("red's create")
        .to_owned();
    assert_eq!(ops["operations"][0]["team"], "red");
    let (st, _) = blue.get(&format!("/v1/operations/{op_id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Still running, and red's to use.
    let (st, out) = red
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            json!({"cmd": ["echo", "hi"]}),
        )
        .await;
    assert_eq!(
        (st, out["stdout"].as_str()),
        (StatusCode::OK, Some("hi\n")),
        "{out}"
    );

    // A team with sandboxes stays; without, it goes and its keys with it.
    let r = s
        .req(Method::DELETE, "/v1/teams/red")
        .send()
        .await
        .expect("delete team");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let (st, _) = red
        .send(Method::DELETE, &format!("/v1/sandboxes/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let r = s
        .req(Method::DELETE, "/v1/teams/red")
        .send()
        .await
        .expect("delete team");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (st, _) = red.get("/v1/sandboxes").await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a deleted team's keys are revoked"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_snapshots_secrets_and_images_are_their_teams() {
    let s = TestServer::start().await;
    let red = team_key(&s, Some(json!({"name": "red"})), "red", "sandboxes").await;
    let blue = team_key(&s, Some(json!({"name": "blue"})), "blue", "sandboxes").await;

    // A volume: red's alone; its name is the server's.
    let (st, vol) = red
        .post("/v1/volumes", json!({"name": "red-data", "size_mb": 16}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{vol}");
    assert_eq!(
        blue.get("/v1/volumes/red-data").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(blue.get("/v1/volumes").await.1["volumes"], json!([]));
    assert_eq!(blue.get("/volumes").await.1, json!([]));
    let mount = json!({"image": "busybox", "runtime": "runc",
        "volumes": [{"name": "red-data", "path": "/data"}]});
    let (st, body) = blue.post("/v1/sandboxes", mount.clone()).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("does not exist"),
        "{body}"
    );
    let (st, _) = blue
        .post("/v1/volumes", json!({"name": "red-data", "size_mb": 16}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(
        blue.delete("/v1/volumes/red-data").await,
        StatusCode::NOT_FOUND
    );
    let (st, sb) = red.post("/v1/sandboxes", mount).await;
    assert_eq!(st, StatusCode::CREATED, "{sb}");
    let id = sb["id"].as_str().expect("id").to_owned();

    // A snapshot is its source's team's.
    let (st, snap) = red
        .post(
            &format!("/v1/sandboxes/{id}/snapshots"),
            json!({"name": "red-snap", "memory": false}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{snap}");
    assert_eq!(
        blue.get("/v1/snapshots/red-snap").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(blue.get("/v1/snapshots").await.1["snapshots"], json!([]));
    let (st, body) = blue
        .post("/v1/sandboxes", json!({"snapshot": "red-snap"}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        blue.delete("/v1/snapshots/red-snap").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(red.get("/v1/snapshots/red-snap").await.0, StatusCode::OK);
    assert_eq!(
        red.delete("/v1/snapshots/red-snap").await,
        StatusCode::NO_CONTENT
    );

    // A secret (E2B's): only red's sandboxes and keys use it.
    let (st, sec) = red
        .post("/secrets", json!({"name": "red-token", "value": "s3cret"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{sec}");
    assert_eq!(blue.get("/secrets").await.1, json!([]));
    assert_eq!(
        blue.get("/secrets/red-token").await.0,
        StatusCode::NOT_FOUND
    );
    let (st, body) = blue
        .post(
            "/sandboxes",
            json!({"templateID": "busybox", "envVars": {"T": "${e2b.secrets.red-token}"}}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");

    // An image red imports is red's: blue neither sees, uses, replaces nor removes it; the
    // operator's images are everyone's, and removed only by the operator's team.
    let tar = std::fs::read(common::busybox_tar()).expect("tar");
    let import = |who: &As<'_>, name: &str| {
        who.s
            .http
            .put(format!("{}/v1/images/{name}", who.s.url))
            .bearer_auth(&who.key)
            .header("content-type", "application/x-tar")
            .body(tar.clone())
            .send()
    };
    let r = import(&red, "red-img").await.expect("import");
    assert_eq!(r.status(), StatusCode::CREATED);
    let names = |v: Value| -> Vec<String> {
        v["images"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(names(red.get("/v1/images").await.1).contains(&"red-img".to_owned()));
    let blue_sees = names(blue.get("/v1/images").await.1);
    assert!(!blue_sees.contains(&"red-img".to_owned()), "{blue_sees:?}");
    assert!(blue_sees.contains(&"busybox".to_owned()), "{blue_sees:?}");
    let (st, body) = blue
        .post(
            "/v1/sandboxes",
            json!({"image": "red-img", "pull": "never", "runtime": "runc"}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    let r = import(&blue, "red-img").await.expect("import");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = import(&blue, "busybox").await.expect("import");
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "a team never replaces everyone's image"
    );
    assert_eq!(
        blue.delete("/v1/images/red-img").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        blue.delete("/v1/images/busybox").await,
        StatusCode::FORBIDDEN
    );
    let (st, sb) = red
        .post(
            "/v1/sandboxes",
            json!({"image": "red-img", "runtime": "runc"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{sb}");

    // A tag is its team's image by another name: everyone's busybox tagged by red is red's;
    // blue cannot tag red's image, take red's name, nor name a registry's.
    let (st, img) = tag(&red, "busybox", "red-bb:v2").await;
    assert_eq!(st, StatusCode::CREATED, "{img}");
    assert_eq!(img["team"], "red", "{img}");
    let (st, sb) = red
        .post(
            "/v1/sandboxes",
            json!({"image": "red-bb:v2", "pull": "never", "runtime": "runc"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "a tag runs: {sb}");
    assert!(!names(blue.get("/v1/images").await.1).contains(&"red-bb:v2".to_owned()));
    for (source, name, want) in [
        ("red-img", "mine", StatusCode::NOT_FOUND),
        ("busybox", "red-bb:v2", StatusCode::CONFLICT),
        ("busybox", "ghcr.io/x/y:1", StatusCode::UNPROCESSABLE_ENTITY),
        ("busybox", "Bad..Name", StatusCode::UNPROCESSABLE_ENTITY),
        ("busybox", "tag", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (st, body) = tag(&blue, source, name).await;
        assert_eq!(st, want, "{source} -> {name}: {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }

    red.delete_all().await;
    assert_eq!(
        red.delete("/v1/images/red-img").await,
        StatusCode::NO_CONTENT
    );
    // A team that still holds something stays.
    let r = s
        .req(Method::DELETE, "/v1/teams/red")
        .send()
        .await
        .expect("delete team");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = r.json().await.expect("body");
    let msg = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("1 volumes") && msg.contains("1 secrets"),
        "{msg}"
    );
    let (st, _) = red.send(Method::DELETE, "/v1/volumes/red-data", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    s.shutdown().await;
}

/// `POST /v1/images/tag` as `who`.
async fn tag(who: &As<'_>, source: &str, name: &str) -> (StatusCode, Value) {
    who.post("/v1/images/tag", json!({"source": source, "name": name}))
        .await
}
