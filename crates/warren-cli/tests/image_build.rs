//! Image builds end to end: a Dockerfile FROM `base` sent to `POST /v1/images/build` (ENV,
//! RUN as root and as a user, WORKDIR, COPY of a directory and of files with `--chown`, USER,
//! EXPOSE, CMD) makes an image whose sandboxes have the files, owners, deletions, env and
//! command asked for; an identical build reuses every RUN step; a failing RUN ends the stream
//! with an `error` event naming its step and records nothing; bad Dockerfiles and forms are
//! refused before anything runs; `warren image build` shares the cache. Needs root, runsc and
//! the cached base tar (built by the first test that needs it).
mod common;

use std::time::Instant;

use common::base::base_tar;
use common::build::{
    build_id_of, build_ok, context_tar, context_tar_with, events_of, exists, expect_error, image,
    images, layer_dir, log_lines, post_build, run_cached, steps, wait_for_log,
};
use common::pulls::warren;
use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const DOCKERFILE: &str = r#"# an app on the base image
FROM base
ENV GREETING="hello build" APP_MODE=test
RUN echo "built by $(id -un) in $(pwd) saying $GREETING" > /etc/built-by && \
    rm /etc/motd && \
    echo changed > /etc/issue && \
    echo run-one-output-marker
WORKDIR /srv/app
COPY --chown=user app/ ./
COPY --chown=user config.txt /etc/app/
COPY notes.txt /srv/notes.txt
USER user
RUN echo "$APP_MODE from $(id -un) in $(pwd)" > /home/user/made-by-run && \
    ls /srv/app > /home/user/listing && echo run-two-output-marker
EXPOSE 8000
CMD ["sh", "-c", "echo cmd-ran as $(id -un) in $(pwd) with $GREETING; exec sleep 1000"]
"#;

/// Builds `app` from [`DOCKERFILE`]; checks its events, its record, its layers on the host and
/// a gVisor sandbox made from it. The build's events and image.
async fn first_build(s: &TestServer, base: &Value) -> (Vec<Value>, Value) {
    let (build_id, events, built) = build_ok(s, "app", DOCKERFILE, Some(context_tar())).await;

    // Steps 1..=10 announced in order, none from the cache, with their text.
    let st = steps(&events);
    let texts: Vec<&str> = st
        .iter()
        .map(|e| e["text"].as_str().expect("text"))
        .collect();
    assert_eq!(st.len(), 10, "{texts:#?}");
    for (i, e) in st.iter().enumerate() {
        assert_eq!(e["index"], i + 1, "{e}");
        assert_eq!(e["total"], 10, "{e}");
        assert_eq!(e["cached"], false, "nothing cached on a first build: {e}");
    }
    assert!(texts[0].starts_with("ENV GREETING="), "{texts:?}");
    assert!(texts[1].starts_with("RUN echo \"built by"), "{texts:?}");
    assert_eq!(texts[2], "WORKDIR /srv/app");
    assert_eq!(texts[3], "COPY --chown=user app/ ./");
    assert_eq!(texts[5], "COPY notes.txt /srv/notes.txt");
    assert_eq!(texts[6], "USER user");
    assert_eq!(texts[8], "EXPOSE 8000");
    assert!(texts[9].starts_with("CMD [\"sh\",\"-c\","), "{texts:?}");
    let logs = log_lines(&events);
    for marker in ["run-one-output-marker", "run-two-output-marker"] {
        assert!(logs.contains(&marker), "RUN output logged: {logs:#?}");
    }

    // Following the finished build replays the same events.
    let resp = s
        .req(Method::GET, &format!("/v1/images/builds/{build_id}"))
        .send()
        .await
        .expect("follow");
    assert_eq!(events_of(resp).await, events, "the replay is the stream");

    // The record: the base's layers, then RUN, WORKDIR, three COPYs, RUN; the config.
    assert_eq!(built["name"], "app");
    let listed = image(s, "app").await.expect("app listed");
    assert_eq!(listed["digest"], built["digest"], "{listed}");
    assert_eq!(listed["layers"], built["layers"], "{listed}");
    let base_layers = base["layers"].as_array().expect("base layers");
    let layers = built["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), base_layers.len() + 6, "{built}");
    assert_eq!(&layers[..base_layers.len()], &base_layers[..]);
    let config = &built["config"];
    let env: Vec<&str> = config["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(env.contains(&"GREETING=hello build"), "{config}");
    assert!(env.contains(&"APP_MODE=test"), "{config}");
    assert_eq!(config["user"], "user", "{config}");
    assert_eq!(config["working_dir"], "/srv/app", "{config}");
    assert_eq!(config["exposed_ports"], json!([8000]), "{config}");
    assert_eq!(
        config["cmd"],
        json!([
            "sh",
            "-c",
            "echo cmd-ran as $(id -un) in $(pwd) with $GREETING; exec sleep 1000"
        ])
    );

    // The new layers on the host: nothing of the step sandboxes' runtime (the agent's
    // `/.warren`, the per-sandbox /etc files) baked in.
    for digest in &layers[base_layers.len()..] {
        let dir = layer_dir(s, digest.as_str().expect("digest"));
        assert!(dir.is_dir(), "{} missing", dir.display());
        for leftover in [".warren", "etc/hostname", "etc/hosts", "etc/resolv.conf"] {
            assert!(
                !exists(&dir.join(leftover)),
                "layer {} holds {leftover}",
                dir.display()
            );
        }
    }

    // No build left a sandbox or its scratch image behind.
    let sandboxes = s.get_json("/v1/sandboxes").await;
    assert_eq!(sandboxes["sandboxes"], json!([]), "{sandboxes}");
    let names: Vec<Value> = images(s)
        .await
        .into_iter()
        .map(|i| i["name"].clone())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.as_str().unwrap_or("").starts_with("build-tmp")),
        "{names:?}"
    );
    (events, built)
}

/// A gVisor sandbox from `app` has everything the Dockerfile asked for.
async fn check_sandbox(s: &TestServer) {
    let sb = s.create(json!({"image": "app", "runtime": "gvisor"})).await;
    let id = sb["id"].as_str().expect("id");
    assert_eq!(sb["user"], "user", "{sb}");
    assert_eq!(sb["cwd"], "/srv/app", "{sb}");
    wait_for_log(s, id, "cmd-ran as user in /srv/app with hello build").await;

    let sh = |script: &'static str, user: &'static str| async move {
        let v = s
            .exec(id, json!({"cmd": ["sh", "-c", script], "user": user}))
            .await;
        assert_eq!(v["exit_code"], 0, "{script}: {v}");
        v["stdout"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(
        sh("echo \"$GREETING|$APP_MODE\"", "root").await,
        "hello build|test\n",
        "ENV reaches execs"
    );
    // The first RUN: as root in /, with the ENV, deleting and changing base files.
    assert_eq!(
        sh("cat /etc/built-by", "root").await,
        "built by root in / saying hello build\n"
    );
    assert_eq!(
        sh("test ! -e /etc/motd && echo gone", "root").await,
        "gone\n"
    );
    assert_eq!(sh("cat /etc/issue", "root").await, "changed\n");
    // WORKDIR made its directory (root's), COPY placed the directory's contents in it and
    // the files where asked, owned as asked, modes kept; a directory COPY had to make is the
    // `--chown` owner's (as Docker makes it), one the image had keeps its owner.
    assert_eq!(
        sh(
            "cd /srv && stat -c '%n %U %G %a' app app/main.sh app/lib app/lib/util.txt \
             /etc/app /etc/app/config.txt /srv/notes.txt",
            "root"
        )
        .await,
        "app root root 755\n\
         app/main.sh user user 755\n\
         app/lib user user 750\n\
         app/lib/util.txt user user 644\n\
         /etc/app user user 755\n\
         /etc/app/config.txt user user 600\n\
         /srv/notes.txt root root 644\n"
    );
    assert_eq!(
        sh(
            "/srv/app/main.sh; cat /srv/app/lib/util.txt /etc/app/config.txt /srv/notes.txt",
            "user"
        )
        .await,
        "main\nutil\nkey=value\nsome notes\n"
    );
    assert_eq!(
        sh("test ! -e /srv/app/app && echo flat", "root").await,
        "flat\n",
        "a directory's contents are copied, not the directory"
    );
    // The second RUN: as `user`, in the WORKDIR, after the COPYs.
    assert_eq!(
        sh(
            "cat /home/user/made-by-run /home/user/listing; stat -c %U /home/user/made-by-run",
            "user"
        )
        .await,
        "test from user in /srv/app\nlib\nmain.sh\nuser\n"
    );
    // The sandbox has its own names, not a build step's.
    assert_eq!(sh("cat /etc/hostname", "root").await.trim(), id);
    s.delete(id).await;
}

/// Changed files invalidate the COPY that takes them and every RUN after it, not the RUN
/// before; the build cache keeps its layers through an image's removal and layer collection.
async fn cache_invalidation(s: &TestServer, built: &Value) {
    let (_, events, changed) = build_ok(
        s,
        "app-changed",
        DOCKERFILE,
        Some(context_tar_with(b"new notes\n")),
    )
    .await;
    assert_eq!(run_cached(&events), [true, false], "{events:#?}");
    let (old, new) = (
        built["layers"].as_array().expect("layers"),
        changed["layers"].as_array().expect("layers"),
    );
    assert_eq!(old.len(), new.len());
    let n = old.len();
    assert_eq!(
        old[..n - 2],
        new[..n - 2],
        "the layers up to the changed COPY are shared"
    );
    assert_ne!(old[n - 2], new[n - 2], "the changed COPY makes a new layer");
    assert_ne!(old[n - 1], new[n - 1], "the RUN after it runs again");

    let r = s
        .req(Method::DELETE, "/v1/images/app-changed")
        .send()
        .await
        .expect("delete image");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let pruned = common::pulls::prune(s).await;
    eprintln!("pruned after removing app-changed: {pruned}");
    let (_, events, again) = build_ok(
        s,
        "app-changed",
        DOCKERFILE,
        Some(context_tar_with(b"new notes\n")),
    )
    .await;
    assert_eq!(run_cached(&events), [true, true], "{events:#?}");
    assert_eq!(again["layers"], changed["layers"]);
    let sb = s
        .create(json!({"image": "app-changed", "runtime": "gvisor", "cmd": ["sleep", "1000"]}))
        .await;
    let id = sb["id"].as_str().expect("id");
    assert_eq!(
        s.sh(id, "cat /srv/notes.txt /home/user/made-by-run").await,
        "new notes\ntest from user in /srv/app\n"
    );
    s.delete(id).await;
}

/// A failing RUN: the stream ends with an error at that step, naming the exit code, and no
/// image is recorded.
async fn failing_build(s: &TestServer) {
    let dockerfile = "FROM base\nENV X=1\nRUN echo failing-step-output; exit 7\nRUN echo never\n";
    let resp = post_build(s, "name=broken", Some(dockerfile), None).await;
    let build_id = build_id_of(&resp);
    let events = events_of(resp).await;
    let last = events.last().expect("events");
    assert_eq!(last["type"], "error", "{events:#?}");
    assert_eq!(last["step"], 2, "{last}");
    assert_eq!(last["error"]["code"], "invalid", "{last}");
    let message = last["error"]["message"].as_str().expect("message");
    assert!(message.contains("exited with code 7"), "{message}");
    let indexes: Vec<&Value> = steps(&events).iter().map(|e| &e["index"]).collect();
    assert_eq!(indexes, [&json!(1), &json!(2)], "no step after the failure");
    let logs = log_lines(&events);
    assert!(logs.contains(&"failing-step-output"), "{logs:#?}");
    assert!(!logs.contains(&"never"), "{logs:#?}");
    assert!(
        image(s, "broken").await.is_none(),
        "a failed build records nothing"
    );
    let resp = s
        .req(Method::GET, &format!("/v1/images/builds/{build_id}"))
        .send()
        .await
        .expect("follow");
    assert_eq!(events_of(resp).await, events, "a failed build replays too");
    let sandboxes = s.get_json("/v1/sandboxes").await;
    assert_eq!(
        sandboxes["sandboxes"],
        json!([]),
        "the failed step's sandbox is removed: {sandboxes}"
    );

    // COPY failures found while building: an error event at that step.
    for (dockerfile, says) in [
        (
            "FROM base\nCOPY missing.txt /x\n",
            "not in the uploaded files",
        ),
        (
            "FROM base\nCOPY --chown=nobody-here notes.txt /x\n",
            "nobody-here",
        ),
    ] {
        let resp = post_build(s, "name=broken", Some(dockerfile), Some(context_tar())).await;
        let events = events_of(resp).await;
        let last = events.last().expect("events");
        assert_eq!(last["type"], "error", "{dockerfile}: {events:#?}");
        assert_eq!(last["step"], 1, "{dockerfile}: {last}");
        let message = last["error"]["message"].as_str().expect("message");
        assert!(message.contains(says), "{dockerfile}: {message}");
    }
    assert!(image(s, "broken").await.is_none());
}

/// What is refused before a build starts, as ordinary JSON errors.
async fn bad_input(s: &TestServer) {
    let msg = expect_error(
        post_build(
            s,
            "name=bad",
            Some("FROM base\nRUN true\nHEALTHCHECK NONE\n"),
            None,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    )
    .await;
    assert!(
        msg.contains("line 3") && msg.contains("HEALTHCHECK"),
        "{msg}"
    );
    let msg = expect_error(
        post_build(s, "name=bad", Some("FROM base\n\nADD x /x\n"), None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    )
    .await;
    assert!(msg.contains("line 3") && msg.contains("ADD"), "{msg}");
    let msg = expect_error(
        post_build(s, "name=bad", Some("FROM base\nCOPY a.txt /a.txt\n"), None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    )
    .await;
    assert!(msg.contains("context"), "{msg}");
    let msg = expect_error(
        post_build(
            s,
            "name=bad",
            Some("FROM base\nRUN true\nFROM busybox\n"),
            None,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    )
    .await;
    assert!(msg.contains("one FROM"), "{msg}");
    let msg = expect_error(
        post_build(s, "name=bad", Some("RUN true\n"), None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    )
    .await;
    assert!(msg.contains("line 1") && msg.contains("FROM"), "{msg}");
    let msg = expect_error(
        post_build(s, "name=bad", None, Some(context_tar())).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert!(msg.contains("dockerfile"), "{msg}");
    expect_error(
        post_build(s, "name=Not%20A%20Name", Some("FROM base\n"), None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    )
    .await;
    let r = s
        .req(Method::GET, "/v1/images/builds/no-such-build")
        .send()
        .await
        .expect("follow");
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    assert!(image(s, "bad").await.is_none());
}

/// `warren image build` from a context directory: the steps it shares with the API's build
/// come from the same cache, `.dockerignore` keeps files out, `--no-cache` runs them again.
async fn cli_build(s: &TestServer) {
    let ctx = tempfile::tempdir_in("/var/tmp").expect("context dir");
    // DOCKERFILE up to its WORKDIR (FROM, ENV and the first RUN, whose layer is cached), then
    // a COPY of the whole context.
    let head = DOCKERFILE.split("WORKDIR").next().expect("head");
    let dockerfile = format!("{head}COPY . /ctx/\n");
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("Dockerfile");
    std::fs::write(ctx.path().join("kept.txt"), "kept\n").expect("kept");
    std::fs::write(ctx.path().join("secret.env"), "no\n").expect("secret");
    std::fs::write(ctx.path().join(".dockerignore"), "*.env\n").expect("ignore");
    let dir = ctx.path().to_string_lossy().into_owned();

    let run = |args: &[&str]| {
        let out = warren(s, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "warren {args:?}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect::<Vec<Value>>()
    };
    let events = run(&["image", "build", "--json", "-t", "from-cli", &dir]);
    assert_eq!(run_cached(&events), [true], "{events:#?}");
    assert_eq!(events.last().expect("events")["type"], "done");
    let events = run(&[
        "image",
        "build",
        "--json",
        "--no-cache",
        "-t",
        "from-cli",
        &dir,
    ]);
    assert_eq!(run_cached(&events), [false], "{events:#?}");
    assert_eq!(events.last().expect("events")["type"], "done");

    let sb = s
        .create(json!({"image": "from-cli", "runtime": "gvisor", "cmd": ["sleep", "1000"]}))
        .await;
    let id = sb["id"].as_str().expect("id");
    assert_eq!(
        s.sh(
            id,
            "LC_ALL=C ls -A /ctx; cat /ctx/kept.txt; stat -c %U /ctx/kept.txt"
        )
        .await,
        ".dockerignore\nDockerfile\nkept.txt\nkept\nroot\n"
    );
    s.delete(id).await;

    // A failing build through the CLI exits non-zero, naming the step.
    std::fs::write(ctx.path().join("Dockerfile.bad"), "FROM base\nRUN exit 3\n")
        .expect("Dockerfile.bad");
    let bad = ctx.path().join("Dockerfile.bad");
    let out = warren(
        s,
        &[
            "image",
            "build",
            "-t",
            "cli-broken",
            "-f",
            &bad.to_string_lossy(),
            &dir,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("step 1 failed") && stderr.contains("exited with code 3"),
        "{stderr}"
    );
    assert!(image(s, "cli-broken").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn images_build_from_dockerfiles() {
    let tar = tokio::task::spawn_blocking(base_tar)
        .await
        .expect("base tar task");
    let s = TestServer::start().await;
    let resp = s.import_tar("base", &tar).await;
    let status = resp.status();
    let base: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::CREATED, "importing base: {base}");

    bad_input(&s).await;

    let (events, built) = first_build(&s, &base).await;
    check_sandbox(&s).await;

    // The same build again: every RUN from the cache (nothing run, so no output), the same
    // image.
    let started = Instant::now();
    let (_, again, rebuilt) = build_ok(&s, "app", DOCKERFILE, Some(context_tar())).await;
    eprintln!("cached rebuild in {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(run_cached(&events), [false, false]);
    assert_eq!(run_cached(&again), [true, true], "{again:#?}");
    let logs = log_lines(&again);
    assert!(
        !logs.iter().any(|l| l.contains("output-marker")),
        "a cached step runs nothing: {logs:#?}"
    );
    assert_eq!(rebuilt["layers"], built["layers"]);
    assert_eq!(rebuilt["digest"], built["digest"]);
    assert_eq!(rebuilt["config"], built["config"]);

    cache_invalidation(&s, &built).await;
    failing_build(&s).await;
    cli_build(&s).await;
    // The image built first is still whole after the later builds.
    assert_eq!(
        image(&s, "app").await.expect("app")["digest"],
        built["digest"]
    );
    s.shutdown().await;
}
