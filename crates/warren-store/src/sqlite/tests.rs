//! The SQLite store against a real database file.
use super::*;
use warren_api::LogStream;

fn line(seq: u64, text: &str) -> LogLine {
    LogLine {
        seq,
        ts: Utc::now(),
        stream: LogStream::Stdout,
        text: text.to_owned(),
    }
}

#[tokio::test]
async fn logs_append_in_batches_and_trim_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("t.db"))
        .await
        .expect("open");
    let id: SandboxId = "aaaaaaaaaaaaaaaa".parse().expect("id");
    // More rows than one statement takes.
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
    // By lines: 2000 kept.
    assert_eq!(
        store.trim_logs(&id, 2000, 20_000).await.expect("trim"),
        (500, 2000)
    );
    assert_eq!(store.first_log_seq(&id).await.expect("first"), 501);
    // By bytes: 1000 lines of 4 bytes kept.
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
    assert_eq!(
        store.log_offsets(&id).await.expect("offsets"),
        vec![("stdout".to_owned(), 10_000)]
    );
}

#[tokio::test]
async fn operations_keep_their_progress_keys_and_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("t.db"))
        .await
        .expect("open");
    crate::conformance::operations(&store).await;
}
