//! What every [`Store`] must do, written once against the trait so each database runs the
//! same checks.
use chrono::{Duration, Utc};
use warren_api::{ErrorDetail, Operation, OperationKind, OperationState};

use crate::{OperationFilter, OperationRecord, Store, StoreError};

fn op(id: &str, kind: OperationKind, target: &str, age_s: i64) -> Operation {
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
    }
}

/// Operations: recorded once per id and per idempotency key, updated, found by key,
/// listed newest first with filters, the unfinished ones oldest first, pruned when old.
pub async fn operations(store: &dyn Store) {
    let rec = |op: Operation, key: Option<&str>| OperationRecord {
        request: format!("{{\"kind\":\"{}\"}}", op.kind),
        op,
        key: key.map(str::to_owned),
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
    let unfinished = store.unfinished_operations().await.expect("unfinished");
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
