//! Where an image build must do as Docker's builder does (each found once to differ): `$VAR`
//! substitution in ENV, COPY of a file into an existing directory, files a RUN leaves in `/tmp`
//! (a tmpfs under gVisor when the image's `/tmp` is empty), and the size of an image built from
//! cached steps.
mod common;

use common::base::base_tar;
use common::build::{build_events, build_outcome, layer_dir};
use common::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Cases where the builder once parted from Docker's; each case is
/// checked on its own and all failures are listed.
#[tokio::test(flavor = "multi_thread")]
async fn builds_do_what_dockers_builder_does() {
    let tar = tokio::task::spawn_blocking(base_tar)
        .await
        .expect("base tar task");
    let s = TestServer::start().await;
    let resp = s.import_tar("base", &tar).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let mut wrong = Vec::new();

    // Docker substitutes $VAR and ${VAR} in ENV (and WORKDIR, COPY, USER, EXPOSE).
    let last = build_outcome(
        &s,
        "env-subst",
        "FROM base\nENV PREFIX=/opt/tool\nENV DIR=${PREFIX}/data BIN=$PREFIX/bin\n",
    )
    .await;
    let env = last["image"]["config"]["env"].clone();
    if !(env.as_array().is_some_and(|e| {
        e.contains(&json!("DIR=/opt/tool/data")) && e.contains(&json!("BIN=/opt/tool/bin"))
    })) {
        wrong.push(format!("ENV does not substitute variables: {last}"));
    }

    // Docker copies a file into a destination that is an existing directory, slash or not;
    // it never replaces the directory with the file.
    let last = build_outcome(&s, "copy-into-dir", "FROM base\nCOPY notes.txt /srv\n").await;
    let layer = last["image"]["layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(Value::as_str)
        .map(|d| layer_dir(&s, d));
    match layer {
        Some(dir) if dir.join("srv").is_dir() && dir.join("srv/notes.txt").is_file() => {}
        Some(dir) => wrong.push(format!(
            "COPY notes.txt /srv replaced the directory /srv with the file (srv is a dir: {})",
            dir.join("srv").is_dir()
        )),
        None => wrong.push(format!("COPY notes.txt /srv: {last}")),
    }

    // Docker keeps what a RUN writes under /tmp; under gVisor an empty /tmp is a tmpfs.
    let tmp = "FROM base\nRUN echo kept > /tmp/kept\nRUN cat /tmp/kept\n";
    let fresh = build_outcome(&s, "tmp-kept", tmp).await;
    if fresh["type"] != "done" {
        wrong.push(format!("a RUN's files in /tmp are lost: {fresh}"));
    }

    // An image built from cached RUN steps has the size of one built afresh.
    let rerun = "FROM base\nRUN head -c 2000000 /dev/zero > /two-mb\n";
    let fresh = build_outcome(&s, "size-fresh", rerun).await;
    let cached = build_outcome(&s, "size-cached", rerun).await;
    if fresh["image"]["size"] != cached["image"]["size"] {
        wrong.push(format!(
            "a cached RUN's layer is not counted in the image size: fresh {} cached {}",
            fresh["image"]["size"], cached["image"]["size"]
        ));
    }

    // An ENTRYPOINT keeps a CMD this build set (it drops only an inherited one); WORKDIR takes
    // `..` lexically.
    let last = build_outcome(
        &s,
        "entry",
        "FROM base\nCMD [\"app.py\"]\nENTRYPOINT [\"python\"]\nWORKDIR /srv/a/../b\n",
    )
    .await;
    let config = &last["image"]["config"];
    if config["cmd"] != json!(["app.py"]) || config["working_dir"] != json!("/srv/b") {
        wrong.push(format!("ENTRYPOINT after CMD, WORKDIR with ..: {last}"));
    }

    // A step that prints without end: the build keeps a bounded log and says what it left out.
    let events = build_events(&s, "chatty", "FROM base\nRUN yes | head -n 400000\n").await;
    let kept = events.iter().filter(|e| e["type"] == "log").count();
    let noted = events.iter().any(|e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("were not kept"))
    });
    if events.last().map(|e| &e["type"]) != Some(&json!("done")) || !noted || kept >= 400_000 {
        wrong.push(format!(
            "runaway output: {kept} log events kept, noted: {noted}, last {:?}",
            events.last()
        ));
    }

    // A sparse file counts at its full size: a step cannot make the host write a terabyte.
    let last = build_outcome(&s, "sparse", "FROM base\nRUN truncate -s 1T /big\n").await;
    let message = last["error"]["message"].as_str().unwrap_or_default();
    if last["type"] != "error" || !message.contains("sparse files count") {
        wrong.push(format!("a 1 TiB sparse file: {last}"));
    }

    s.shutdown().await;
    assert!(wrong.is_empty(), "{wrong:#?}");
}
