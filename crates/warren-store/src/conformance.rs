//! What every [`Store`] must do, written once against the trait so each database runs the
//! same checks.
use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use warren_api::pause::ImagePart;
use warren_api::sandbox::{Egress, ListeningPort, OnTimeout};
use warren_api::{
    ErrorDetail, Image, LogLine, LogStream, Operation, OperationKind, OperationState, PauseReceipt,
    Runtime, Sandbox, SandboxId, SandboxState, VolumeMount,
};

use crate::{
    KeyClaim, LogSize, OperationFilter, OperationRecord, SandboxRecord, Store, StoreError,
    StoredAnswer,
};

fn sandbox(id: &str, image: &str, digest: &str) -> Sandbox {
    let now = Utc::now();
    Sandbox {
        id: id.parse().expect("id"),
        state: SandboxState::Running,
        image: image.into(),
        image_digest: digest.into(),
        runtime: Runtime::Gvisor,
        cpu: 1.5,
        memory_mb: 768,
        disk_mb: 4096,
        pids: 300,
        env: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "two words".into())]),
        cmd: vec!["sh".into(), "-c".into(), "echo 'quoted' \"too\"".into()],
        cwd: "/work".into(),
        user: "user".into(),
        metadata: BTreeMap::from([("team".into(), "α".into())]),
        volumes: vec![VolumeMount {
            name: "data".into(),
            path: "/data".into(),
            read_only: true,
        }],
        egress: Egress::Rules {
            allow: vec!["example.com".into()],
            deny: vec!["0.0.0.0/0".into()],
        },
        public: true,
        traffic_token: Some("tok".into()),
        request_host: Some("localhost:3000".into()),
        ip: Some("10.0.0.2".into()),
        created_at: now,
        started_at: Some(now + Duration::nanoseconds(123_456_789)),
        expires_at: Some(now + Duration::seconds(300)),
        on_timeout: OnTimeout::Pause,
        auto_resume: true,
        error: None,
        urls: BTreeMap::from([("8080".into(), "http://x-8080.localhost".into())]),
        exposed_ports: vec![8080, 9090],
        ports: vec![ListeningPort {
            port: 8080,
            address: "0.0.0.0".into(),
            url: Some("http://x-8080.localhost".into()),
        }],
        pause: None,
        pool: Some("warm".into()),
        team: "blue".into(),
        server: "srv".into(),
    }
}

/// A sandbox record with every field set.
pub fn sample_record() -> SandboxRecord {
    SandboxRecord {
        sandbox: sandbox("aaaaaaaaaaaaaaaa", "img", "sha256:aa"),
        token: "agent-token".into(),
        net_index: Some(7),
    }
}

/// Sandboxes: every field read back as written, updated, listed newest first without the
/// deleted, counted per image, their leases and layers found.
pub async fn sandboxes(store: &dyn Store) {
    let image = Image {
        name: "img".into(),
        digest: "sha256:aa".into(),
        size: 10,
        created_at: Utc::now(),
        source: None,
        layers: vec!["sha256:l1".into(), "sha256:l2".into()],
        config: Default::default(),
        team: "blue".into(),
    };
    store.put_image(&image).await.expect("image");
    let first = sample_record();
    store.insert_sandbox(&first).await.expect("insert");
    assert!(matches!(
        store.insert_sandbox(&first).await,
        Err(StoreError::Exists(_))
    ));
    let id: SandboxId = "aaaaaaaaaaaaaaaa".parse().expect("id");
    let got = store.get_sandbox(&id).await.expect("get").expect("some");
    assert_eq!(got, first);

    let mut changed = first.clone();
    changed.sandbox.state = SandboxState::Paused;
    changed.sandbox.error = Some("it's \"fine\"".into());
    changed.sandbox.egress = Egress::Deny;
    changed.sandbox.ip = None;
    changed.sandbox.pause = Some(PauseReceipt {
        version: 1,
        paused_at: Utc::now(),
        took_ms: 42,
        runtime: Runtime::Gvisor,
        runtime_version: "runsc test".into(),
        memory: ImagePart {
            bytes: 1 << 20,
            sha256: "ab".repeat(32),
        },
        filesystem: ImagePart {
            bytes: 2 << 20,
            sha256: "cd".repeat(32),
        },
        stored: Some("s3://bucket/x".into()),
    });
    changed.net_index = None;
    store.update_sandbox(&changed).await.expect("update");
    assert_eq!(
        store.get_sandbox(&id).await.expect("get").expect("some"),
        changed
    );

    let mut second = SandboxRecord {
        sandbox: sandbox("bbbbbbbbbbbbbbbb", "img", "sha256:aa"),
        token: "t2".into(),
        net_index: Some(3),
    };
    second.sandbox.created_at = first.sandbox.created_at + Duration::seconds(1);
    second.sandbox.egress = Egress::Only(vec!["10.0.0.0/8".into()]);
    store.insert_sandbox(&second).await.expect("insert");
    let mut gone = SandboxRecord {
        sandbox: sandbox("cccccccccccccccc", "img", "sha256:aa"),
        token: "t3".into(),
        net_index: Some(9),
    };
    gone.sandbox.state = SandboxState::Deleted;
    store.insert_sandbox(&gone).await.expect("insert");
    let ids: Vec<String> = store
        .list_sandboxes()
        .await
        .expect("list")
        .iter()
        .map(|r| r.sandbox.id.to_string())
        .collect();
    assert_eq!(ids, ["bbbbbbbbbbbbbbbb", "aaaaaaaaaaaaaaaa"]);
    assert_eq!(
        store
            .count_sandboxes_using_image("img")
            .await
            .expect("count"),
        2
    );
    assert_eq!(store.used_net_indexes("srv").await.expect("leases"), [3]);
    assert_eq!(
        store.count_sandboxes().await.expect("counts"),
        [
            ("paused".to_owned(), "gvisor".to_owned(), 1),
            ("running".to_owned(), "gvisor".to_owned(), 1)
        ]
    );
    let live = store.live_layers().await.expect("layers");
    assert_eq!(live, ["sha256:l1", "sha256:l2"]);
}

/// Logs: appended in batches larger than one statement takes, measured, trimmed oldest
/// first by lines and by bytes, paged, with their offsets.
pub async fn logs(store: &dyn Store) {
    let line = |seq: u64, text: &str| LogLine {
        seq,
        ts: Utc::now(),
        stream: LogStream::Stdout,
        text: text.to_owned(),
    };
    let id: SandboxId = "aaaaaaaaaaaaaaaa".parse().expect("id");
    let lines: Vec<LogLine> = (1..=2500).map(|i| line(i, &format!("{i:04}"))).collect();
    store
        .append_logs(&id, &lines, &[("stdout", 10_000)])
        .await
        .expect("append");
    let size = store.log_size(&id).await.expect("size");
    assert_eq!(
        size,
        LogSize {
            first_seq: 1,
            last_seq: 2500,
            lines: 2500,
            bytes: 10_000
        }
    );
    assert_eq!(
        store.trim_logs(&id, 3000, 20_000).await.expect("trim"),
        (0, 0)
    );
    assert_eq!(
        store.trim_logs(&id, 2000, 20_000).await.expect("trim"),
        (500, 2000)
    );
    assert_eq!(store.first_log_seq(&id).await.expect("first"), 501);
    assert_eq!(
        store.trim_logs(&id, 2000, 4000).await.expect("trim"),
        (1000, 4000)
    );
    let size = store.log_size(&id).await.expect("size");
    assert_eq!(
        (size.first_seq, size.last_seq, size.lines),
        (1501, 2500, 1000)
    );
    let page = store.list_logs(&id, 0, 2).await.expect("list");
    assert_eq!(page[0].seq, 1501);
    assert_eq!(page[1].text, "1502");
    // Multi-byte text counts in bytes.
    store
        .append_logs(&id, &[line(2501, "αβ")], &[("stdout", 10_004)])
        .await
        .expect("append");
    assert_eq!(store.log_size(&id).await.expect("size").bytes, 4004);
    assert_eq!(
        store.log_offsets(&id).await.expect("offsets"),
        vec![("stdout".to_owned(), 10_004)]
    );
    store.delete_logs(&id).await.expect("delete");
    assert_eq!(store.log_size(&id).await.expect("size"), LogSize::default());
}

pub(crate) fn op(id: &str, kind: OperationKind, target: &str, age_s: i64) -> Operation {
    Operation {
        id: id.into(),
        kind,
        target: target.into(),
        state: OperationState::Queued,
        priority: 2,
        attempts: 0,
        error: None,
        result: None,
        created_at: Utc::now() - Duration::seconds(age_s),
        started_at: None,
        ended_at: None,
        team: "blue".into(),
    }
}

/// Operations: recorded once per id and per idempotency key, updated, found by key,
/// listed newest first with filters, the unfinished ones oldest first, pruned when old.
pub async fn operations(store: &dyn Store) {
    let rec = |op: Operation, key: Option<&str>| OperationRecord {
        request: format!("{{\"kind\":\"{}\"}}", op.kind),
        op,
        key: key.map(str::to_owned),
        host: "srv".into(),
    };
    let first = rec(op("op-1", OperationKind::Create, "", 30), Some("k1"));
    store.insert_operation(&first).await.expect("insert");
    // The same key again: refused, so a retried call finds the first operation.
    let again = rec(op("op-2", OperationKind::Create, "", 20), Some("k1"));
    assert!(matches!(
        store.insert_operation(&again).await,
        Err(StoreError::Exists(_))
    ));
    store
        .insert_operation(&rec(op("op-3", OperationKind::Pull, "alpine", 10), None))
        .await
        .expect("insert");
    store
        .insert_operation(&rec(op("op-4", OperationKind::Stop, "sb1", 5), None))
        .await
        .expect("insert");

    store
        .set_operation_target("op-1", "sb0")
        .await
        .expect("target");
    let got = store
        .get_operation("op-1")
        .await
        .expect("get")
        .expect("some");
    assert_eq!(
        (got.op.target.as_str(), got.op.state),
        ("sb0", OperationState::Queued)
    );
    let mut done = first.op.clone();
    done.target = "sb1".into();
    done.state = OperationState::Succeeded;
    done.attempts = 1;
    done.started_at = Some(Utc::now() - Duration::seconds(29));
    done.ended_at = Some(Utc::now() - Duration::seconds(28));
    done.result = Some(serde_json::json!({"id": "sb1"}));
    store.update_operation(&done).await.expect("update");
    let got = store
        .get_operation("op-1")
        .await
        .expect("get")
        .expect("some");
    assert_eq!(got.op.target, "sb1");
    assert_eq!(got.op.state, OperationState::Succeeded);
    assert_eq!(got.op.result, done.result);
    assert_eq!(got.request, first.request);
    assert_eq!(
        store
            .operation_by_key("k1")
            .await
            .expect("by key")
            .map(|r| r.op.id),
        Some("op-1".into())
    );
    assert!(store
        .operation_by_key("k2")
        .await
        .expect("by key")
        .is_none());

    let mut failed = op("op-3", OperationKind::Pull, "alpine", 10);
    failed.state = OperationState::Failed;
    failed.error = Some(ErrorDetail {
        code: "bad_gateway".into(),
        message: "registry down".into(),
    });
    failed.ended_at = Some(Utc::now());
    store.update_operation(&failed).await.expect("update");
    let got = store
        .get_operation("op-3")
        .await
        .expect("get")
        .expect("some");
    assert_eq!(got.op.error, failed.error);

    let ids = |ops: Vec<Operation>| ops.into_iter().map(|o| o.id).collect::<Vec<_>>();
    let all = OperationFilter {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_operations(&all).await.expect("list")),
        ["op-4", "op-3", "op-1"]
    );
    let for_sb1 = OperationFilter {
        target: Some("sb1".into()),
        ..all.clone()
    };
    assert_eq!(
        ids(store.list_operations(&for_sb1).await.expect("list")),
        ["op-4", "op-1"]
    );
    let stops = OperationFilter {
        kind: Some(OperationKind::Stop),
        state: Some(OperationState::Queued),
        ..all.clone()
    };
    assert_eq!(
        ids(store.list_operations(&stops).await.expect("list")),
        ["op-4"]
    );
    let one = OperationFilter { limit: 1, ..all };
    assert_eq!(
        ids(store.list_operations(&one).await.expect("list")),
        ["op-4"]
    );
    let unfinished = store
        .unfinished_operations("srv")
        .await
        .expect("unfinished");
    assert_eq!(
        unfinished
            .iter()
            .map(|r| r.op.id.as_str())
            .collect::<Vec<_>>(),
        ["op-4"]
    );
    // Only ended operations older than the cut go.
    let pruned = store
        .prune_operations(Utc::now() - Duration::seconds(15))
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    assert!(store.get_operation("op-1").await.expect("get").is_none());
    assert!(store.get_operation("op-3").await.expect("get").is_some());
}

/// Idempotency keys of plain calls: claimed once, running to the others, their answer kept
/// (binary bodies too), released when a call never answered, pruned when old.
pub async fn request_keys(store: &dyn Store) {
    let now = Utc::now();
    assert_eq!(
        store
            .claim_request_key("k", "fp1", "srv", now)
            .await
            .expect("claim"),
        KeyClaim::Claimed
    );
    assert_eq!(
        store
            .claim_request_key("k", "fp2", "srv", now)
            .await
            .expect("claim"),
        KeyClaim::Running {
            fingerprint: "fp1".into()
        }
    );
    let answer = StoredAnswer {
        status: 201,
        content_type: Some("application/json".into()),
        body: Some(vec![0, 159, 146, 150, b'{']),
    };
    store
        .finish_request_key("k", &answer)
        .await
        .expect("finish");
    assert_eq!(
        store
            .claim_request_key("k", "fp1", "srv", now)
            .await
            .expect("claim"),
        KeyClaim::Done {
            fingerprint: "fp1".into(),
            answer: answer.clone(),
        }
    );
    // A finished key stays; a running one is let go.
    store.release_request_key("k").await.expect("release");
    assert!(matches!(
        store
            .claim_request_key("k", "fp1", "srv", now)
            .await
            .expect("claim"),
        KeyClaim::Done { .. }
    ));
    assert_eq!(
        store
            .claim_request_key("j", "fp", "srv", now)
            .await
            .expect("claim"),
        KeyClaim::Claimed
    );
    store.release_request_key("j").await.expect("release");
    assert_eq!(
        store
            .claim_request_key("j", "fp", "srv", now)
            .await
            .expect("claim"),
        KeyClaim::Claimed
    );
    let stream = StoredAnswer {
        status: 200,
        content_type: Some("text/event-stream".into()),
        body: None,
    };
    store
        .finish_request_key("j", &stream)
        .await
        .expect("finish");
    assert_eq!(
        store
            .claim_request_key("r", "fp", "srv", now)
            .await
            .expect("claim"),
        KeyClaim::Claimed
    );
    assert_eq!(
        store
            .claim_request_key("s", "fp", "other", now)
            .await
            .expect("claim"),
        KeyClaim::Claimed
    );
    // A server's start lets go of its own running keys only.
    assert_eq!(
        store.drop_running_request_keys("srv").await.expect("drop"),
        1
    );
    assert!(matches!(
        store
            .claim_request_key("s", "fp", "srv", now)
            .await
            .expect("claim"),
        KeyClaim::Running { .. }
    ));
    assert_eq!(
        store
            .prune_request_keys(now + Duration::seconds(1))
            .await
            .expect("prune"),
        3
    );
    assert_eq!(
        store
            .claim_request_key("k", "fp1", "srv", now)
            .await
            .expect("claim"),
        KeyClaim::Claimed
    );
}

/// Secrets: found by id and by name, listed, updated, removed; API keys: the last one stays.
pub async fn credentials(store: &dyn Store) {
    let now = Utc::now();
    let rec = crate::SecretRecord {
        id: "sec_1".into(),
        name: "db-password".into(),
        version: 1,
        metadata: BTreeMap::from([("env".into(), "prod".into())]),
        sealed: vec![0, 1, 2, 255],
        created_at: now,
        updated_at: now,
        team: "blue".into(),
    };
    assert!(store.insert_secret(&rec).await.expect("insert"));
    assert!(!store.insert_secret(&rec).await.expect("insert again"));
    let by_id = store
        .get_secret("sec_1")
        .await
        .expect("get")
        .expect("by id");
    assert_eq!(by_id.name, "db-password");
    assert_eq!(by_id.sealed, rec.sealed);
    let by_name = store
        .get_secret("db-password")
        .await
        .expect("get")
        .expect("by name");
    assert_eq!(by_name.id, "sec_1");
    assert!(store.get_secret("nope").await.expect("get").is_none());
    let mut newer = by_id.clone();
    newer.version = 2;
    newer.sealed = vec![9; 40];
    store.update_secret(&newer).await.expect("update");
    let got = store.get_secret("sec_1").await.expect("get").expect("some");
    assert_eq!((got.version, got.sealed), (2, vec![9; 40]));
    assert_eq!(store.list_secrets().await.expect("list").len(), 1);
    assert!(store.delete_secret("sec_1").await.expect("delete"));
    assert!(store.get_secret("sec_1").await.expect("get").is_none());
}
