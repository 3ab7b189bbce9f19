//! Working with running processes: pseudo-terminals (`pty`, `Update`, terminal input),
//! attaching with `Connect`, and feeding input with `StreamInput`, against the real agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{collect, request, sh, Agent, TOKEN};
use warren_agent::envelope::{self, EnvelopeDecoder};
use warren_agent::{
    ProcessData, ProcessEvent, ProcessInput, ProcessSelector, ProcessStream, Pty, PtySize,
    StreamInputRequest,
};

/// Reads terminal output until it contains `needle`; returns everything read.
async fn read_until(stream: &mut ProcessStream, needle: &str) -> String {
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = stream.next().await {
            match event.unwrap() {
                ProcessEvent::Data(ProcessData::Pty(b) | ProcessData::Stdout(b)) => {
                    seen.push_str(&String::from_utf8_lossy(&b));
                    if seen.contains(needle) {
                        return true;
                    }
                }
                ProcessEvent::End { .. } => return false,
                _ => {}
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "never saw {needle:?} in {seen:?}");
    seen
}

async fn end_code(stream: &mut ProcessStream) -> i32 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(ProcessEvent::End { exit_code, .. })) => return exit_code,
            Some(Ok(_)) => {}
            other => panic!("stream ended without end: {other:?}"),
        }
    }
}

#[tokio::test]
async fn pty_sizes_echo_and_exit_code() {
    let agent = Agent::spawn().await;
    let mut req = request("/bin/sh", &[]);
    req.pty = Some(Pty {
        size: Some(PtySize { cols: 80, rows: 24 }),
    });
    let mut stream = agent.client.start(&req).await.unwrap();
    let Some(Ok(ProcessEvent::Start { pid })) = stream.next().await else {
        panic!("no start event");
    };
    let c = &agent.client;
    c.send_pty_input(pid, b"stty size; echo T=$TERM; tty\n")
        .await
        .unwrap();
    let seen = read_until(&mut stream, "T=xterm-256color").await;
    assert!(seen.contains("24 80"), "{seen:?}");
    c.resize_pty(pid, 100, 30).await.unwrap();
    c.send_pty_input(pid, b"stty size\n").await.unwrap();
    read_until(&mut stream, "30 100").await;
    // The terminal echoes input: the marker appears once echoed and once printed.
    c.send_pty_input(pid, b"echo mark-$((6*7))\n")
        .await
        .unwrap();
    let seen = read_until(&mut stream, "mark-42").await;
    assert!(seen.contains("echo mark-$((6*7))"), "no echo in {seen:?}");
    // A controlling terminal: ^C reaches the foreground job, not the shell.
    c.send_pty_input(pid, b"sleep 30\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send_pty_input(pid, b"\x03echo after-$((1+1))\n")
        .await
        .unwrap();
    read_until(&mut stream, "after-2").await;
    c.send_pty_input(pid, b"exit 3\n").await.unwrap();
    assert_eq!(end_code(&mut stream).await, 3);

    // Stdin of a pty process is the terminal; terminal calls on a pipe process fail.
    let mut plain = c.start(&request("cat", &[])).await.unwrap();
    let Some(Ok(ProcessEvent::Start { pid })) = plain.next().await else {
        panic!("no start event");
    };
    assert!(c.resize_pty(pid, 10, 10).await.is_err());
    assert!(c.send_pty_input(pid, b"x").await.is_err());
    c.close_stdin(pid).await.unwrap();
    assert_eq!(end_code(&mut plain).await, 0);
}

#[tokio::test]
async fn connect_subscribers_each_see_every_event() {
    let agent = Agent::spawn().await;
    let c = &agent.client;
    let mut req = sh("while read line; do echo out-$line; done; exit 4");
    req.tag = Some("reader".into());
    let mut owner = c.start(&req).await.unwrap();
    let Some(Ok(ProcessEvent::Start { pid })) = owner.next().await else {
        panic!("no start event");
    };
    let mut by_tag = c
        .connect(ProcessSelector::Tag("reader".into()))
        .await
        .unwrap();
    let mut by_pid = c.connect(ProcessSelector::Pid(pid)).await.unwrap();
    for s in [&mut by_tag, &mut by_pid] {
        assert_eq!(
            s.next().await.unwrap().unwrap(),
            ProcessEvent::Start { pid }
        );
    }
    c.send_input(pid, b"a\nb\n").await.unwrap();
    c.close_stdin(pid).await.unwrap();
    let (a, b, o) = (
        collect_rest(&mut by_tag).await,
        collect_rest(&mut by_pid).await,
        collect_rest(&mut owner).await,
    );
    for out in [&a, &b, &o] {
        assert_eq!(out.0, b"out-a\nout-b\n");
        assert_eq!(out.1, 4);
    }
    let e = c.connect(ProcessSelector::Pid(999_999)).await.unwrap();
    let mut e = e;
    assert_eq!(
        e.next().await.unwrap().unwrap_err().rpc_code(),
        Some("not_found")
    );
}

async fn collect_rest(stream: &mut ProcessStream) -> (Vec<u8>, i32) {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(ProcessEvent::Data(ProcessData::Stdout(b)))) => out.extend_from_slice(&b),
            Some(Ok(ProcessEvent::End { exit_code, .. })) => {
                assert!(stream.next().await.is_none(), "events after end");
                return (out, exit_code);
            }
            Some(Ok(_)) => {}
            other => panic!("stream ended without end: {other:?}"),
        }
    }
}

#[tokio::test]
async fn stream_input_feeds_cat_from_chunked_envelopes() {
    let agent = Agent::spawn().await;
    let mut req = request("cat", &[]);
    req.tag = Some("cat".into());
    let mut stream = agent.client.start(&req).await.unwrap();
    let Some(Ok(ProcessEvent::Start { pid })) = stream.next().await else {
        panic!("no start event");
    };
    let all: Vec<u8> = (0..=255u8).collect();
    let messages = [
        StreamInputRequest::Start {
            process: ProcessSelector::Tag("cat".into()),
        },
        StreamInputRequest::Data {
            input: ProcessInput::Stdin(Bytes::from(all.clone())),
        },
        StreamInputRequest::Keepalive,
        StreamInputRequest::Data {
            input: ProcessInput::Stdin(Bytes::from_static(b"tail")),
        },
    ];
    let mut body = Vec::new();
    for m in &messages {
        body.extend_from_slice(&envelope::encode_json(0, m).unwrap());
    }
    // Chunks that split envelopes anywhere, sent with pauses.
    let chunks: Vec<Bytes> = body.chunks(7).map(Bytes::copy_from_slice).collect();
    let paced = futures::stream::unfold(chunks.into_iter(), |mut it| async move {
        let next = it.next()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        Some((Ok::<_, std::io::Error>(next), it))
    });
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("http://{}/process.Process/StreamInput", agent.addr))
        .header("x-access-token", TOKEN)
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .body(reqwest::Body::wrap_stream(paced))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/connect+json");
    let mut decoder = EnvelopeDecoder::new();
    decoder.push(&resp.bytes().await.unwrap());
    let first = decoder.next_envelope().unwrap().unwrap();
    assert_eq!((first.flags, &first.data[..]), (0, &b"{}"[..]));
    let end = decoder.next_envelope().unwrap().unwrap();
    assert!(end.is_end_stream());
    assert_eq!(&end.data[..], b"{}");

    agent.client.close_stdin(pid).await.unwrap();
    let out = collect(&mut stream).await;
    let mut expected = all;
    expected.extend_from_slice(b"tail");
    assert_eq!(out.stdout, expected);
}
