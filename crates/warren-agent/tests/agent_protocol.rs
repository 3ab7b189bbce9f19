//! The agent binary at the HTTP level (status codes, content types, framing, auth, keepalives)
//! and its lifecycle as a server: main command and shutdown on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::{kill, Signal as NixSignal};
use nix::unistd::Pid;
use support::{Agent, TOKEN};
use warren_agent::envelope::{self, EnvelopeDecoder};
use warren_agent::{AgentClient, EndStream, ProcessEvent, StartResponse};

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn url(agent: &Agent, path: &str) -> String {
    format!("http://{}{path}", agent.addr)
}

#[tokio::test]
async fn health_needs_no_token_and_everything_else_does() {
    let agent = Agent::spawn().await;
    let resp = http().get(url(&agent, "/health")).send().await.unwrap();
    assert_eq!(resp.status(), 204);

    let resp = http()
        .post(url(&agent, "/process.Process/List"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated");

    let wrong = AgentClient::new(agent.addr, "not-the-token");
    let err = wrong.list().await.unwrap_err();
    assert_eq!(err.rpc_code(), Some("unauthenticated"));
    let err = wrong.start(&support::sh("true")).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some("unauthenticated"));
}

#[tokio::test]
async fn unary_errors_follow_connect() {
    let agent = Agent::spawn().await;
    let post = |path: &str, body: &'static str| {
        http()
            .post(url(&agent, path))
            .header("content-type", "application/json")
            .header("x-access-token", TOKEN)
            .body(body)
    };
    let resp = post(
        "/process.Process/SendSignal",
        r#"{"process":{"pid":999999},"signal":"SIGNAL_SIGKILL"}"#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "not_found");

    let resp = post("/process.Process/SendSignal", "{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "invalid_argument");

    let resp = post("/filesystem.Filesystem/Bogus", r#"{"path":"/"}"#)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "unimplemented");
    assert_eq!(status, 501);

    let resp = post("/process.Process/List", "").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body.get("processes").is_some(), "{body}");
}

/// Reads a raw Start response body into (events, end-of-stream message).
async fn read_stream(resp: reqwest::Response) -> (Vec<ProcessEvent>, EndStream) {
    let mut decoder = EnvelopeDecoder::new();
    let mut events = Vec::new();
    let mut resp = resp;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        decoder.push(&chunk);
        while let Some(env) = decoder.next_envelope().unwrap() {
            if env.is_end_stream() {
                assert!(decoder.next_envelope().unwrap().is_none());
                assert!(
                    resp.chunk().await.unwrap().is_none(),
                    "bytes after end of stream"
                );
                return (events, serde_json::from_slice(&env.data).unwrap());
            }
            let msg: StartResponse = serde_json::from_slice(&env.data).unwrap();
            events.push(msg.event);
        }
    }
    panic!("no end-of-stream envelope");
}

#[tokio::test]
async fn start_accepts_a_chunked_envelope_and_answers_connect_streaming() {
    let agent = Agent::spawn().await;
    let msg = envelope::encode_json(
        0,
        &serde_json::json!({"process": {"cmd": "/bin/sh", "args": ["-c", "printf hi"]}}),
    )
    .unwrap();
    // Split mid-header and mid-payload to force several body chunks.
    let parts: Vec<Result<Bytes, std::io::Error>> =
        vec![Ok(msg.slice(..2)), Ok(msg.slice(2..9)), Ok(msg.slice(9..))];
    let resp = http()
        .post(url(&agent, "/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .header("x-access-token", TOKEN)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(parts)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/connect+json");
    let (events, end) = read_stream(resp).await;
    assert!(matches!(events.first(), Some(ProcessEvent::Start { .. })));
    assert!(matches!(
        events.last(),
        Some(ProcessEvent::End { exit_code: 0, .. })
    ));
    assert_eq!(end, EndStream::default());

    // The wrong codec is refused before anything runs.
    let resp = http()
        .post(url(&agent, "/process.Process/Start"))
        .header("content-type", "application/connect+proto")
        .header("x-access-token", TOKEN)
        .body(msg.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
}

#[tokio::test]
async fn keepalive_events_on_request() {
    let agent = Agent::spawn().await;
    let msg = envelope::encode_json(
        0,
        &serde_json::json!({"process": {"cmd": "sleep", "args": ["2.5"]}, "stdin": false}),
    )
    .unwrap();
    let resp = http()
        .post(url(&agent, "/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("x-access-token", TOKEN)
        .header("keepalive-ping-interval", "1")
        .body(msg)
        .send()
        .await
        .unwrap();
    let (events, _) = read_stream(resp).await;
    let keepalives = events
        .iter()
        .filter(|e| **e == ProcessEvent::Keepalive)
        .count();
    assert_eq!(keepalives, 2, "{events:?}");
}

#[tokio::test]
async fn connect_timeout_kills_the_process() {
    let agent = Agent::spawn().await;
    let msg = envelope::encode_json(0, &support::sh("sleep 30; true")).unwrap();
    let started = Instant::now();
    let resp = http()
        .post(url(&agent, "/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("x-access-token", TOKEN)
        .header("connect-timeout-ms", "300")
        .body(msg)
        .send()
        .await
        .unwrap();
    let (events, end) = read_stream(resp).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    // As envd: the stream ends with `deadline_exceeded` (which the SDKs raise as a timeout),
    // not with the killed process's end event.
    assert!(
        !events.iter().any(|e| matches!(e, ProcessEvent::End { .. })),
        "{events:?}"
    );
    let error = end.error.expect("an error ends the stream");
    assert_eq!(error.code, "deadline_exceeded", "{error:?}");
}

async fn wait_exit(agent: &mut Agent, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = agent.child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
async fn sigterm_without_main_command_exits_at_once() {
    let mut agent = Agent::spawn().await;
    kill(Pid::from_raw(agent.pid()), NixSignal::SIGTERM).unwrap();
    let status = wait_exit(&mut agent, Duration::from_secs(2))
        .await
        .expect("did not exit");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn main_command_runs_is_listed_and_is_stopped_on_sigterm() {
    let marker = std::env::temp_dir().join(format!("warren-main-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    // The main command records that it got SIGTERM, then takes a moment to exit.
    // It says when its traps are set: a signal before that (a loaded host starts `sh` slowly)
    // would end it before the test means to.
    let ready = marker.with_extension("ready");
    let _ = std::fs::remove_file(&ready);
    let script = format!(
        "trap '' HUP; trap 'touch {}; sleep 0.2; exit 0' TERM; touch {}; while true; do sleep 0.05; done",
        marker.display(),
        ready.display()
    );
    let cmd = serde_json::to_string(&["/bin/sh", "-c", &script]).unwrap();
    let mut agent =
        Agent::spawn_with(&[("WARREN_AGENT_CMD", &cmd), ("WARREN_AGENT_CWD", "/tmp")]).await;
    let list = agent.client.list().await.unwrap();
    let main = list
        .iter()
        .find(|p| p.tag.as_deref() == Some("main"))
        .expect("main not listed");
    assert_eq!(main.config.cwd.as_deref(), Some("/tmp"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the main command never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(&ready);

    // SIGHUP is forwarded to the main command, not fatal to the agent.
    kill(Pid::from_raw(agent.pid()), NixSignal::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "agent died of SIGHUP"
    );

    kill(Pid::from_raw(agent.pid()), NixSignal::SIGTERM).unwrap();
    let status = wait_exit(&mut agent, Duration::from_secs(3))
        .await
        .expect("did not exit");
    assert_eq!(status.code(), Some(0));
    assert!(marker.exists(), "main command never saw SIGTERM");
    let _ = std::fs::remove_file(&marker);
}

#[tokio::test]
async fn agent_keeps_serving_after_main_command_exits() {
    let cmd = r#"["/bin/sh","-c","exit 7"]"#;
    let agent = Agent::spawn_with(&[("WARREN_AGENT_CMD", cmd)]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let list = agent.client.list().await.unwrap();
    assert!(list.iter().all(|p| p.tag.as_deref() != Some("main")));
    let out = support::run(&agent, &support::request("/bin/true", &[])).await;
    assert_eq!(out.exit_code(), 0);
}
