//! The runner's log writer and the store's hint: on the GCP store (every append writes the
//! log head document, and Firestore takes about one write per second per document) appends
//! are gathered over `DBT_REMOTE_LOG_FLUSH_MS`; on the local and memory stores they go at once.
//! The GCP part runs on the emulators, skipped, saying so, without them.
#![cfg(feature = "gcp")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dbt_remote_core::runner::write_log_stream;
use dbt_remote_core::state::{GcpStore, StateStore, StateStoreExt};
use dbt_remote_core::testing::sample_job;
use dbt_remote_core::{LocalStore, LogEntry, LogLevel, MemoryStore};
use dbt_remote_test_support::gcp::Emulators;
use tokio::sync::mpsc;

/// Feeds `lines` entries, one every `pace`, through the writer with `window` into a new job of
/// `store`: (commits the store made, how long it took). Every line is then in the log, in order.
async fn write_paced(
    store: &Arc<GcpStore>,
    lines: usize,
    pace: Duration,
    window: Duration,
) -> (u64, Duration) {
    let job = store.create_job(&sample_job()).await.unwrap();
    let before = store.written().commits;
    let (tx, rx) = mpsc::channel(4096);
    let started = Instant::now();
    let writer = tokio::spawn(write_log_stream(store.clone(), job.id, rx, window));
    for i in 0..lines {
        let entry = LogEntry::remote(LogLevel::Info, format!("line {i}"));
        tx.send(entry).await.unwrap();
        tokio::time::sleep(pace).await;
    }
    drop(tx);
    writer.await.unwrap().unwrap();
    let took = started.elapsed();
    let records = store.read_all_logs(job.id, 0).await.unwrap();
    let messages: Vec<String> = records.into_iter().map(|r| r.entry.message).collect();
    let expected: Vec<String> = (0..lines).map(|i| format!("line {i}")).collect();
    assert_eq!(messages, expected);
    (store.written().commits - before, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_job_appends_to_firestore_at_most_once_per_window() {
    let Some(emulators) = Emulators::start("a_chatty_job_appends_to_firestore").await else {
        return;
    };
    let store = emulators.store().await;
    assert!(store.batches_log_appends());
    // 200 lines over about 1.2 s: at once, about one commit per line; with a 300 ms window,
    // one commit per window (and one for the last lines).
    let (at_once, _) = write_paced(&store, 200, Duration::from_millis(6), Duration::ZERO).await;
    let window = Duration::from_millis(300);
    let (windowed, took) = write_paced(&store, 200, Duration::from_millis(6), window).await;
    let most = took.as_millis() as u64 / window.as_millis() as u64 + 2;
    assert!(
        windowed <= most,
        "{windowed} commits in {took:?}, at most {most} expected"
    );
    assert!(
        at_once > 3 * windowed,
        "at once {at_once}, windowed {windowed}"
    );
}

#[tokio::test]
async fn the_local_and_memory_stores_append_at_once() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!LocalStore::new(dir.path()).unwrap().batches_log_appends());
    assert!(!MemoryStore::new().batches_log_appends());
}
