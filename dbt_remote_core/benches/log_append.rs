//! Append cost of log records in the local store: 100k single-record appends (the runner's
//! worst case), timed per block of 10k, to show the cost is flat, not growing with the log.
//!
//! cargo bench -p dbt_remote_core --bench log_append

use std::time::Instant;

use dbt_remote_core::{JobRecord, JobSpec, LocalStore, LogEntry, LogLevel, StateStore};

const RECORDS: usize = 100_000;
const BLOCK: usize = 10_000;

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let job = JobRecord::new(JobSpec {
            args: vec!["build".into()],
            ..Default::default()
        });
        store.create_job(&job).await.unwrap();
        let entry = LogEntry::remote(
            LogLevel::Info,
            "12 of 29 OK created sql table model main.orders ........ [OK in 0.04s]",
        );
        println!("log_append: {RECORDS} single-record appends to the local store");
        let mut blocks = Vec::new();
        let all = Instant::now();
        for block in 0..RECORDS / BLOCK {
            let start = Instant::now();
            for _ in 0..BLOCK {
                store
                    .append_logs(job.id, std::slice::from_ref(&entry))
                    .await
                    .unwrap();
            }
            let per = start.elapsed().as_secs_f64() * 1e6 / BLOCK as f64;
            blocks.push(per);
            println!(
                "  records {:>6}..{:>6}: {per:7.1} µs per append",
                block * BLOCK + 1,
                (block + 1) * BLOCK
            );
        }
        let total = all.elapsed();
        let first = blocks[0];
        let last = *blocks.last().unwrap();
        println!(
            "log_append: mean {:.1} µs per record; last block / first block = {:.2} (flat ≈ 1)",
            total.as_secs_f64() * 1e6 / RECORDS as f64,
            last / first
        );
        let start = Instant::now();
        let tail = store
            .read_logs(job.id, RECORDS as u64 - 1000, 1000)
            .await
            .unwrap();
        assert_eq!(tail.len(), 1000);
        println!(
            "log_read: last 1000 of {RECORDS} records in {:.2} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
    });
}
