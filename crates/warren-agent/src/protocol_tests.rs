//! Wire-shape tests for `protocol`: what we emit must be exactly what envd emits, and what we
//! accept must cover what proto3 JSON encoders may send.
#![allow(clippy::unwrap_used)]

use super::*;

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

#[test]
fn events_serialize_as_oneofs() {
    let start = StartResponse {
        event: ProcessEvent::Start { pid: 7 },
    };
    assert_eq!(json(&start), r#"{"event":{"start":{"pid":7}}}"#);

    let data = ProcessEvent::Data(ProcessData::Stdout(Bytes::from_static(b"hi\n")));
    assert_eq!(json(&data), r#"{"data":{"stdout":"aGkK"}}"#);

    let end = ProcessEvent::End {
        exit_code: -1,
        exited: false,
        status: "signal: killed".into(),
        error: Some("signal: killed".into()),
    };
    assert_eq!(
        json(&end),
        r#"{"end":{"exitCode":-1,"exited":false,"status":"signal: killed","error":"signal: killed"}}"#
    );
    assert_eq!(json(&ProcessEvent::Keepalive), r#"{"keepalive":{}}"#);
}

#[test]
fn events_round_trip_and_parse_leniently() {
    for event in [
        ProcessEvent::Start { pid: 1 },
        ProcessEvent::Data(ProcessData::Stderr(Bytes::from_static(b"\x00\xff"))),
        ProcessEvent::Data(ProcessData::Pty(Bytes::from_static(b"x"))),
        ProcessEvent::End {
            exit_code: 3,
            exited: true,
            status: "exit status 3".into(),
            error: None,
        },
        ProcessEvent::Keepalive,
    ] {
        let back: ProcessEvent = serde_json::from_str(&json(&event)).unwrap();
        assert_eq!(back, event);
    }
    // Defaults omitted, integers as strings, snake_case names.
    let end: ProcessEvent = serde_json::from_str(r#"{"end":{"exited":true}}"#).unwrap();
    assert!(matches!(
        end,
        ProcessEvent::End {
            exit_code: 0,
            exited: true,
            ..
        }
    ));
    let end: ProcessEvent = serde_json::from_str(r#"{"end":{"exit_code":"2"}}"#).unwrap();
    assert!(matches!(end, ProcessEvent::End { exit_code: 2, .. }));
    let start: ProcessEvent = serde_json::from_str(r#"{"start":{"pid":"12"}}"#).unwrap();
    assert_eq!(start, ProcessEvent::Start { pid: 12 });
    assert!(serde_json::from_str::<ProcessEvent>("{}").is_err());
}

#[test]
fn start_request_shapes() {
    let req = StartRequest {
        process: ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), "true".into()],
            envs: [("A".to_owned(), "1".to_owned())].into(),
            cwd: Some("/tmp".into()),
        },
        pty: None,
        tag: Some("t".into()),
        stdin: Some(false),
    };
    assert_eq!(
        json(&req),
        r#"{"process":{"cmd":"/bin/sh","args":["-c","true"],"envs":{"A":"1"},"cwd":"/tmp"},"tag":"t","stdin":false}"#
    );
    let minimal: StartRequest =
        serde_json::from_str(r#"{"process":{"cmd":"ls","args":null,"envs":null},"unknown":1}"#)
            .unwrap();
    assert_eq!(minimal.process.cmd, "ls");
    assert!(minimal.process.args.is_empty());
    assert_eq!(minimal.stdin, None);
}

#[test]
fn selectors_inputs_and_signals() {
    let req = SendInputRequest {
        process: ProcessSelector::Pid(5),
        input: ProcessInput::Stdin(Bytes::from_static(b"hi")),
    };
    assert_eq!(
        json(&req),
        r#"{"process":{"pid":5},"input":{"stdin":"aGk="}}"#
    );
    let parsed: SendInputRequest =
        serde_json::from_str(r#"{"process":{"tag":"x"},"input":{"stdin":"aGk"}}"#).unwrap();
    assert_eq!(parsed.process, ProcessSelector::Tag("x".into()));
    assert_eq!(parsed.input, ProcessInput::Stdin(Bytes::from_static(b"hi")));
    assert!(serde_json::from_str::<CloseStdinRequest>(r#"{"process":{}}"#).is_err());

    let sig = SendSignalRequest {
        process: ProcessSelector::Pid(5),
        signal: Signal::Sigkill,
    };
    assert_eq!(
        json(&sig),
        r#"{"process":{"pid":5},"signal":"SIGNAL_SIGKILL"}"#
    );
    let by_number: SendSignalRequest =
        serde_json::from_str(r#"{"process":{"pid":"5"},"signal":15}"#).unwrap();
    assert_eq!(by_number.signal, Signal::Sigterm);
    assert_eq!(by_number.process, ProcessSelector::Pid(5));
    let missing: SendSignalRequest = serde_json::from_str(r#"{"process":{"pid":5}}"#).unwrap();
    assert_eq!(missing.signal, Signal::Unspecified);
    assert!(serde_json::from_str::<SendSignalRequest>(
        r#"{"process":{"pid":5},"signal":"SIGNAL_SIGHUP"}"#
    )
    .is_err());
}

#[test]
fn list_response_shape() {
    let list = ListResponse {
        processes: vec![ProcessInfo {
            config: ProcessConfig {
                cmd: "sleep".into(),
                args: vec!["9".into()],
                ..ProcessConfig::default()
            },
            pid: 9,
            tag: Some("bg".into()),
        }],
    };
    assert_eq!(
        json(&list),
        r#"{"processes":[{"config":{"cmd":"sleep","args":["9"]},"pid":9,"tag":"bg"}]}"#
    );
    let empty: ListResponse = serde_json::from_str("{}").unwrap();
    assert!(empty.processes.is_empty());
}
