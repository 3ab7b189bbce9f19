//! What every [`Store`] must do when one server takes over another (run on SQLite and
//! PostgreSQL by `sql/tests.rs`): only under the takeover's lease, all at once.
use chrono::{Duration, Utc};
use warren_api::{OperationKind, OperationState, SandboxId, SandboxState};

use crate::conformance::{op, sample_record};
use crate::{KeyClaim, OperationRecord, SandboxRecord, Store, StoredAnswer};

async fn sandbox_on(store: &dyn Store, host: &str, state: SandboxState) -> SandboxId {
    let mut rec: SandboxRecord = sample_record();
    rec.sandbox.id = SandboxId::generate();
    rec.sandbox.server = host.into();
    rec.sandbox.state = state;
    rec.sandbox.error = None;
    store.insert_sandbox(&rec).await.expect("sandbox");
    rec.sandbox.id
}

async fn op_on(store: &dyn Store, id: &str, host: &str, state: OperationState) {
    let mut o = op(id, OperationKind::Stop, "sb", 5);
    o.state = state;
    let rec = OperationRecord {
        request: "{}".into(),
        op: o,
        key: None,
        host: host.into(),
    };
    store.insert_operation(&rec).await.expect("operation");
}

async fn state_of(store: &dyn Store, id: &SandboxId) -> SandboxRecord {
    store.get_sandbox(id).await.expect("get").expect("some")
}

async fn op_state(store: &dyn Store, id: &str) -> OperationState {
    let got = store.get_operation(id).await.expect("get").expect("some");
    got.op.state
}

/// A takeover settles the dead server's sandboxes, operations and running keys in one go,
/// and only while the taker holds it: not before it is claimed, not after the dead server
/// notes itself alive again, not twice.
pub async fn takeovers(store: &dyn Store) {
    let now = Utc::now();
    let stale = now - Duration::seconds(30);
    store
        .heartbeat("a", "http://a", now - Duration::seconds(60))
        .await
        .expect("a");
    store.heartbeat("b", "http://b", now).await.expect("b");
    let running = sandbox_on(store, "a", SandboxState::Running).await;
    let pausing = sandbox_on(store, "a", SandboxState::Pausing).await;
    let stopped = sandbox_on(store, "a", SandboxState::Stopped).await;
    let paused = sandbox_on(store, "a", SandboxState::Paused).await;
    let others = sandbox_on(store, "b", SandboxState::Running).await;
    op_on(store, "a-queued", "a", OperationState::Queued).await;
    op_on(store, "a-running", "a", OperationState::Running).await;
    op_on(store, "a-done", "a", OperationState::Succeeded).await;
    op_on(store, "b-running", "b", OperationState::Running).await;
    for (key, host) in [("ka", "a"), ("kb", "b"), ("ka-done", "a")] {
        let claim = store.claim_request_key(key, "fp", host, now).await;
        assert_eq!(claim.expect("claim"), KeyClaim::Claimed);
    }
    let answer = StoredAnswer {
        status: 204,
        content_type: None,
        body: None,
    };
    store
        .finish_request_key("ka-done", &answer)
        .await
        .expect("finish");

    let why = "its server a stopped answering";
    assert_eq!(
        store
            .settle_takeover("a", "b", why, now)
            .await
            .expect("unclaimed"),
        None,
        "nothing is settled without the takeover claimed"
    );
    assert!(store.take_over("a", "b", stale, now).await.expect("claim"));
    store
        .heartbeat("a", "http://a", now)
        .await
        .expect("a is back");
    assert_eq!(
        store
            .settle_takeover("a", "b", why, now)
            .await
            .expect("back"),
        None,
        "a server back before the takeover settled keeps what it has"
    );
    assert_eq!(
        state_of(store, &running).await.sandbox.state,
        SandboxState::Running
    );
    assert_eq!(op_state(store, "a-running").await, OperationState::Running);

    store
        .heartbeat("a", "http://a", now - Duration::seconds(60))
        .await
        .expect("a stale again");
    assert!(store.take_over("a", "b", stale, now).await.expect("claim"));
    assert_eq!(
        store.settle_takeover("a", "c", why, now).await.expect("c"),
        None,
        "only the server that claimed it settles it"
    );
    let settled = store
        .settle_takeover("a", "b", why, now)
        .await
        .expect("settle")
        .expect("held");
    let mut failed = settled.sandboxes.clone();
    failed.sort();
    let mut lost = vec![running.clone(), pausing.clone()];
    lost.sort();
    assert_eq!(failed, lost);
    assert_eq!((settled.operations, settled.keys), (2, 1));

    let got = state_of(store, &running).await;
    assert_eq!(got.sandbox.state, SandboxState::Failed);
    assert_eq!(got.sandbox.error.as_deref(), Some(why));
    assert_eq!((got.sandbox.ip, got.net_index), (None, None));
    // What else the record holds is as it was.
    assert_eq!(got.token, sample_record().token);
    assert_eq!(got.sandbox.image, sample_record().sandbox.image);
    assert_eq!(
        state_of(store, &stopped).await.sandbox.state,
        SandboxState::Stopped
    );
    assert_eq!(
        state_of(store, &paused).await.sandbox.state,
        SandboxState::Paused
    );
    let theirs = state_of(store, &others).await;
    assert_eq!(theirs.sandbox.state, SandboxState::Running);
    assert_eq!(theirs.net_index, sample_record().net_index);

    for id in ["a-queued", "a-running"] {
        let got = store.get_operation(id).await.expect("get").expect("some");
        assert_eq!(got.op.state, OperationState::Failed);
        let error = got.op.error.expect("error");
        assert_eq!(
            (error.code.as_str(), error.message.as_str()),
            ("interrupted", why)
        );
        assert!(got.op.ended_at.is_some());
    }
    assert_eq!(op_state(store, "a-done").await, OperationState::Succeeded);
    assert_eq!(op_state(store, "b-running").await, OperationState::Running);

    let claim = |key| store.claim_request_key(key, "fp", "b", now);
    assert_eq!(claim("ka").await.expect("ka"), KeyClaim::Claimed);
    assert!(matches!(
        claim("kb").await.expect("kb"),
        KeyClaim::Running { .. }
    ));
    assert!(matches!(
        claim("ka-done").await.expect("done"),
        KeyClaim::Done { .. }
    ));

    let names: Vec<String> = store
        .list_servers()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["b"]);
    assert_eq!(
        store
            .settle_takeover("a", "b", why, now)
            .await
            .expect("again"),
        None,
        "a takeover is settled once"
    );
}
