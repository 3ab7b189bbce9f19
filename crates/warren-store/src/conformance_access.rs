//! What every [`Store`] must do with API keys, teams and the audit log (run on SQLite and
//! PostgreSQL by `sql/tests.rs`).
use chrono::{Duration, Utc};
use warren_api::{ApiKey, AuditEntry, Quotas, Scope};

use crate::{AuditFilter, Revoked, SandboxRecord, Store, TeamDeleted, TeamRecord};

fn key(id: &str, team: &str, scope: Scope) -> ApiKey {
    ApiKey {
        id: id.into(),
        name: format!("key {id}"),
        team: team.into(),
        scope,
        created_at: Utc::now(),
        expires_at: Some(Utc::now() + Duration::days(1)),
        revoked_at: None,
        last_used_at: None,
        rate_limit: Some(5),
    }
}

/// Keys: read back by hash with every field, listed per team, touched, revoked, and the
/// operator's last key never revoked.
pub async fn keys(store: &dyn Store) {
    let op = ApiKey {
        expires_at: None,
        ..key("k1", "default", Scope::Admin)
    };
    let made = store.insert_api_key(&op, "h1").await.expect("insert");
    // An operator key that expires is not the one that keeps the server manageable.
    store
        .insert_api_key(&key("k0", "default", Scope::Admin), "h0")
        .await
        .expect("insert");
    let red = key("k2", "red", Scope::Read);
    store.insert_api_key(&red, "h2").await.expect("insert");
    let got = store
        .api_key_by_hash("h2")
        .await
        .expect("get")
        .expect("some");
    assert_eq!((got.team.as_str(), got.scope), ("red", Scope::Read));
    assert_eq!(got.rate_limit, Some(5));
    assert!(got.expires_at.is_some() && got.revoked_at.is_none());
    assert!(store.api_key_by_hash("h3").await.expect("get").is_none());
    assert_eq!(store.count_api_keys().await.expect("count"), 3);
    let reds = store.list_api_keys(Some("red")).await.expect("list");
    assert_eq!(
        reds.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        ["k2"]
    );
    let all = store.list_api_keys(None).await.expect("list");
    assert_eq!(all.len(), 3);
    assert_eq!(
        all[0].created_at, made,
        "the answer is what a listing shows"
    );

    let at = Utc::now();
    store.touch_api_key("k2", at).await.expect("touch");
    let used = store
        .api_key_by_hash("h2")
        .await
        .expect("get")
        .expect("some");
    assert!(used
        .last_used_at
        .is_some_and(|t| (t - at).num_milliseconds().abs() < 1));

    assert_eq!(
        store.revoke_api_key("k1").await.expect("revoke"),
        Revoked::LastOperatorKey
    );
    assert_eq!(
        store.revoke_api_key("k0").await.expect("revoke"),
        Revoked::Done,
        "an operator key that expires may go"
    );
    assert_eq!(
        store.revoke_api_key("k2").await.expect("revoke"),
        Revoked::Done
    );
    assert_eq!(
        store.revoke_api_key("k2").await.expect("revoke"),
        Revoked::Already
    );
    assert_eq!(
        store.revoke_api_key("kx").await.expect("revoke"),
        Revoked::NotFound
    );
    let gone = store
        .api_key_by_hash("h2")
        .await
        .expect("get")
        .expect("kept");
    assert!(gone.revoked_at.is_some(), "a revoked key is kept, marked");
    let lasting = ApiKey {
        expires_at: None,
        ..key("k3", "default", Scope::Admin)
    };
    store.insert_api_key(&lasting, "h3").await.expect("insert");
    assert_eq!(
        store.revoke_api_key("k1").await.expect("revoke"),
        Revoked::Done
    );
}

/// Teams: the default one is there; made, read, changed, listed; deleted only without
/// sandboxes, their keys revoked with them.
pub async fn teams(store: &dyn Store) {
    let default = store
        .get_team("default")
        .await
        .expect("get")
        .expect("default");
    assert_eq!(default.quotas, Quotas::default());
    let mut team = TeamRecord {
        name: "red".into(),
        quotas: Quotas {
            sandboxes: Some(3),
            cpu: Some(2.5),
            memory_mb: Some(4096),
            disk_mb: None,
        },
        rate_limit: Some(10),
        created_at: Utc::now(),
    };
    store.insert_team(&team).await.expect("insert");
    assert!(matches!(
        store.insert_team(&team).await,
        Err(crate::StoreError::Exists(_))
    ));
    let got = store.get_team("red").await.expect("get").expect("some");
    assert_eq!(
        (got.quotas.clone(), got.rate_limit),
        (team.quotas.clone(), Some(10))
    );
    team.quotas.disk_mb = Some(100);
    team.rate_limit = None;
    assert!(store.update_team(&team).await.expect("update"));
    let got = store.get_team("red").await.expect("get").expect("some");
    assert_eq!((got.quotas.disk_mb, got.rate_limit), (Some(100), None));
    let names: Vec<String> = store
        .list_teams()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["default", "red"]);

    store
        .insert_api_key(&key("r1", "red", Scope::Sandboxes), "hr1")
        .await
        .expect("key");
    let mut rec: SandboxRecord = crate::conformance::sample_record();
    rec.sandbox.team = "red".into();
    store.insert_sandbox(&rec).await.expect("sandbox");
    assert_eq!(
        store.delete_team("red").await.expect("delete"),
        TeamDeleted::Holds(vec![("sandboxes", 1)])
    );
    rec.sandbox.state = warren_api::SandboxState::Deleted;
    store.update_sandbox(&rec).await.expect("update");
    assert_eq!(
        store.delete_team("red").await.expect("delete"),
        TeamDeleted::Done
    );
    assert_eq!(
        store.delete_team("red").await.expect("delete"),
        TeamDeleted::NotFound
    );
    let key = store
        .api_key_by_hash("hr1")
        .await
        .expect("get")
        .expect("kept");
    assert!(
        key.revoked_at.is_some(),
        "a deleted team's keys are revoked"
    );
}

/// The audit log: appended, read newest first, filtered, paged and pruned.
pub async fn audit(store: &dyn Store) {
    let now = Utc::now();
    for (i, (team, target)) in [("red", "s1"), ("blue", "s2"), ("red", "s2")]
        .iter()
        .enumerate()
    {
        let entry = AuditEntry {
            seq: 0,
            at: now + Duration::seconds(i64::try_from(i).expect("small")),
            key_id: format!("k-{team}"),
            team: (*team).into(),
            method: "POST".into(),
            path: format!("/v1/sandboxes/{target}/exec"),
            route: "/v1/sandboxes/{id}/exec".into(),
            target: (*target).into(),
            status: 200,
            client: "127.0.0.1".into(),
            request_id: format!("req{i}"),
        };
        store.append_audit(&entry).await.expect("append");
    }
    let list = |f: AuditFilter| async move { store.list_audit(&f).await.expect("list") };
    let all = list(AuditFilter {
        limit: 10,
        ..Default::default()
    })
    .await;
    assert_eq!(all.len(), 3);
    assert!(
        all[0].seq > all[1].seq && all[1].seq > all[2].seq,
        "newest first"
    );
    assert_eq!(all[0].request_id, "req2");
    assert_eq!(all[0].route, "/v1/sandboxes/{id}/exec");
    let red = list(AuditFilter {
        team: Some("red".into()),
        limit: 10,
        ..Default::default()
    })
    .await;
    assert_eq!(red.len(), 2);
    let s2 = list(AuditFilter {
        target: Some("s2".into()),
        limit: 10,
        ..Default::default()
    })
    .await;
    assert_eq!(s2.len(), 2);
    let page = list(AuditFilter {
        before: Some(all[0].seq),
        limit: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [all[1].seq]);
    let later = list(AuditFilter {
        since: Some(now + Duration::seconds(1)),
        limit: 10,
        ..Default::default()
    })
    .await;
    assert_eq!(later.len(), 2);
    assert_eq!(
        store
            .prune_audit(now + Duration::seconds(2))
            .await
            .expect("prune"),
        2
    );
    assert_eq!(
        list(AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .len(),
        1
    );
}

/// Servers on one database: noted alive, listed, taken over by exactly one other once stale,
/// forgotten; rows of no server adopted.
pub async fn servers(store: &dyn Store) {
    let now = Utc::now();
    store
        .heartbeat("a", "http://a:8080", now - Duration::seconds(60))
        .await
        .expect("a");
    store.heartbeat("b", "http://b:8080", now).await.expect("b");
    let servers = store.list_servers().await.expect("list");
    assert_eq!(
        servers
            .iter()
            .map(|s| (s.name.as_str(), s.url.as_str()))
            .collect::<Vec<_>>(),
        [("a", "http://a:8080"), ("b", "http://b:8080")]
    );
    let stale = now - Duration::seconds(30);
    assert!(!store
        .take_over("b", "a", stale, now)
        .await
        .expect("b is alive"));
    assert!(store
        .take_over("a", "b", stale, now)
        .await
        .expect("b takes a"));
    assert!(
        !store.take_over("a", "c", stale, now).await.expect("once"),
        "one server takes over"
    );
    // Back before the takeover finished: alive again, and no one's to take.
    store
        .heartbeat("a", "http://a:8080", now)
        .await
        .expect("a again");
    assert!(!store.take_over("a", "c", stale, now).await.expect("alive"));
    store.forget_server("a").await.expect("forget");
    assert_eq!(store.list_servers().await.expect("list").len(), 1);

    let mut rec = crate::conformance::sample_record();
    rec.sandbox.server = String::new();
    store.insert_sandbox(&rec).await.expect("sandbox");
    assert_eq!(store.adopt_hostless("b").await.expect("adopt"), 1);
    let got = store
        .get_sandbox(&rec.sandbox.id)
        .await
        .expect("get")
        .expect("some");
    assert_eq!(got.sandbox.server, "b");
    assert_eq!(store.adopt_hostless("b").await.expect("again"), 0);
}
