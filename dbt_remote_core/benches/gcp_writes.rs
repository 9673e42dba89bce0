//! What a job costs in writes on the GCP store: a 10,000-line dbt log appended in batches of
//! 500, 50 and 1 (the runner appends what dbt printed while the previous append was in flight,
//! up to 500), plus the example project's files as blobs and two artifacts, on the Firestore and
//! Cloud Storage emulators. Prints the bytes and documents written against the log's size.
//! Then a job that writes its 10,000 lines over 10 s through the runner's log writer, appending
//! at once and with the GCP store's flush window (`DBT_REMOTE_LOG_FLUSH_MS`, 1000): documents
//! written per second, writes per second of the hottest document (the log head, written by
//! every append), and the ratios of the two runs.
//!
//! scripts/setup-emulators.sh && cargo bench -p dbt_remote_core --features gcp,testing --bench gcp_writes

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dbt_remote_core::package::pack_project;
use dbt_remote_core::runner::{write_log_stream, DEFAULT_LOG_FLUSH};
use dbt_remote_core::state::GcpStore;
use dbt_remote_core::testing::sample_job;
use dbt_remote_core::{LogEntry, LogLevel, RelPath, StateStore};
use dbt_remote_test_support::gcp::Emulators;
use dbt_remote_test_support::server::example_project;

const LINES: usize = 10_000;

/// A line of dbt's `--log-format json` output, as a model start or result looks.
fn dbt_line(i: usize) -> String {
    let (msg, status, name) = if i.is_multiple_of(2) {
        (
            format!("{i} of {LINES} START sql table model main.model_{i} ........ [RUN]"),
            "started",
            "LogStartLine",
        )
    } else {
        (
            format!(
                "{i} of {LINES} OK created sql table model main.model_{i} ........ [OK in 0.04s]"
            ),
            "success",
            "LogModelResult",
        )
    };
    format!(
        r#"{{"data": {{"description": "sql table model main.model_{i}", "index": {i}, "node_info": {{"materialized": "table", "node_name": "model_{i}", "node_path": "marts/model_{i}.sql", "node_started_at": "2026-11-24T06:50:01.123456", "node_status": "{status}", "resource_type": "model", "unique_id": "model.jaffle_duckdb.model_{i}"}}, "total": {LINES}}}, "info": {{"category": "", "code": "Q033", "extra": {{}}, "invocation_id": "5b9c6e0e-9a7e-4c43-8a52-0c7c3b1c1a2e", "level": "info", "msg": "{msg}", "name": "{name}", "pid": 4242, "thread": "Thread-1 (worker)", "ts": "2026-11-24T06:50:01.123456Z"}}}}"#
    )
}

/// What a paced job wrote: documents and commits (= writes of the log head) per second.
struct Rate {
    documents_per_s: f64,
    head_writes_per_s: f64,
}

/// Writes `entries` over `over` (in steps of 10 ms) through the runner's log writer with
/// `window`, into a new job of `store`.
async fn paced_job(
    store: &Arc<GcpStore>,
    entries: &[LogEntry],
    over: Duration,
    window: Duration,
) -> Rate {
    let job = store.create_job(&sample_job()).await.unwrap();
    let before = store.written();
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    let start = Instant::now();
    let writer = tokio::spawn(write_log_stream(store.clone(), job.id, rx, window));
    let steps = over.as_millis() as usize / 10;
    let per_step = entries.len().div_ceil(steps);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for chunk in entries.chunks(per_step) {
        tick.tick().await;
        for e in chunk {
            tx.send(e.clone()).await.unwrap();
        }
    }
    drop(tx);
    writer.await.unwrap().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let w = store.written();
    Rate {
        documents_per_s: (w.documents - before.documents) as f64 / secs,
        head_writes_per_s: (w.commits - before.commits) as f64 / secs,
    }
}

fn kib(bytes: u64) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let Some(emulators) = Emulators::start("gcp_writes").await else {
            return;
        };
        let lines: Vec<String> = (1..=LINES).map(dbt_line).collect();
        let entries: Vec<LogEntry> = lines
            .iter()
            .map(|l| LogEntry::from_dbt_line(l, LogLevel::Info))
            .collect();
        let dbt_bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
        // What the local store keeps: one JSON record per line (logs.jsonl) + 16 bytes of index.
        let jsonl_bytes: u64 = entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap().len() as u64 + 1 + 16)
            .sum();
        println!("gcp_writes: a {LINES}-line dbt log on the Firestore + Cloud Storage emulators");
        println!(
            "  dbt's output {}, the local store's log {} (records + index)",
            kib(dbt_bytes),
            kib(jsonl_bytes)
        );
        println!(
            "  {:>5}  {:>7}  {:>9}  {:>12}  {:>14}  {:>10}",
            "batch", "commits", "documents", "Firestore", "vs local log", "ms/append"
        );
        for batch in [500, 50, 1] {
            let store = emulators.store().await;
            let job = store.create_job(&sample_job()).await.unwrap();
            let before = store.written();
            let start = Instant::now();
            let mut appends = 0;
            for chunk in entries.chunks(batch) {
                store.append_logs(job.id, chunk).await.unwrap();
                appends += 1;
            }
            let elapsed = start.elapsed();
            let w = store.written();
            let bytes = w.firestore_bytes - before.firestore_bytes;
            assert_eq!(
                store
                    .read_logs(job.id, LINES as u64 - 1, 10)
                    .await
                    .unwrap()
                    .len(),
                1
            );
            println!(
                "  {batch:>5}  {:>7}  {:>9}  {:>12}  {:>13.2}x  {:>10.2}",
                w.commits - before.commits,
                w.documents - before.documents,
                kib(bytes),
                bytes as f64 / jsonl_bytes as f64,
                elapsed.as_secs_f64() * 1e3 / appends as f64
            );
        }

        // A job that writes its lines over 10 s, as dbt prints them.
        let store = emulators.store().await;
        let over = Duration::from_secs(10);
        let before = paced_job(&store, &entries, over, Duration::ZERO).await;
        let after = paced_job(&store, &entries, over, DEFAULT_LOG_FLUSH).await;
        println!(
            "  a job writing {LINES} lines in {} s: documents/s, writes/s of the hottest \
             document (the log head)",
            over.as_secs()
        );
        for (name, r) in [
            ("appended at once", &before),
            ("flush window 1000 ms", &after),
        ] {
            println!(
                "    {name:<22} {:>8.1} documents/s  {:>6.1} head writes/s",
                r.documents_per_s, r.head_writes_per_s
            );
        }
        println!(
            "    ratio (at once / window): documents {:.2}x, head writes {:.1}x",
            before.documents_per_s / after.documents_per_s,
            before.head_writes_per_s / after.head_writes_per_s
        );

        // The rest of a job: its project files as blobs, and artifacts.
        let store = emulators.store().await;
        let job = store.create_job(&sample_job()).await.unwrap();
        let files = pack_project(&example_project()).unwrap();
        let project_bytes: u64 = files.iter().map(|f| f.content.len() as u64).sum();
        for f in &files {
            store.put_blob(&f.sha256, f.content.clone()).await.unwrap();
        }
        let artifact = Bytes::from(vec![b'x'; 512 * 1024]);
        for name in ["manifest.json", "run_results.json"] {
            let name = RelPath::new(name).unwrap();
            store
                .put_artifact(job.id, &name, artifact.clone())
                .await
                .unwrap();
        }
        let w = store.written();
        println!(
            "  blobs + artifacts: {} objects, {} uploaded to Cloud Storage for {} of project files \
             ({} files) and 2 artifacts of 512 KiB; Firestore: {} commit(s) (the job record)",
            w.objects,
            kib(w.storage_bytes),
            kib(project_bytes),
            files.len(),
            w.commits
        );
    });
}
