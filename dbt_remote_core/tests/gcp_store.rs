//! What the GCP store guarantees beyond the conformance suite, on the Firestore and Cloud
//! Storage emulators: the server and each job process open their own store on the same
//! database, so two store instances must behave as one. Skipped, saying so, when the emulators
//! are not installed (`scripts/setup-emulators.sh`).
#![cfg(feature = "gcp")]

use std::sync::Arc;

use dbt_remote_core::state::{JobQuery, StateStore, StateStoreExt};
use dbt_remote_core::testing::sample_job;
use dbt_remote_core::JobLifecycle;
use dbt_remote_core::{Error, JobStatus, LogEntry, LogLevel};
use dbt_remote_test_support::gcp::{unique_prefix, Emulators};

fn entry(writer: usize, batch: usize, i: usize) -> LogEntry {
    LogEntry::remote(
        LogLevel::Info,
        format!("writer {writer} batch {batch} line {i}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_from_two_instances_are_numbered_without_gaps() {
    let Some(emulators) = Emulators::start("appends_from_two_instances").await else {
        return;
    };
    let prefix = unique_prefix();
    let a = Arc::new(emulators.store_on(&prefix).await);
    let b = Arc::new(emulators.store_on(&prefix).await);
    let job = a.create_job(&sample_job()).await.unwrap();
    let stores: [Arc<dyn StateStore>; 2] = [a.clone(), b.clone()];
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let store = stores[w % 2].clone();
            tokio::spawn(async move {
                for batch in 0..10 {
                    let entries: Vec<_> = (0..=batch % 4).map(|i| entry(w, batch, i)).collect();
                    store.append_logs(job.id, &entries).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // 4 writers x 10 batches of 1, 2, 3, 4, 1, 2, 3, 4, 1, 2 records.
    let expected = 4 * (1 + 2 + 3 + 4 + 1 + 2 + 3 + 4 + 1 + 2);
    for store in [&a, &b] {
        let all = store.read_all_logs(job.id, 0).await.unwrap();
        assert_eq!(all.len(), expected);
        assert!(all.iter().enumerate().all(|(i, r)| r.seq == i as u64 + 1));
        // Each batch is stored whole and in one piece: its lines are consecutive.
        for w in 0..4 {
            for batch in 0..10 {
                let seqs: Vec<u64> = all
                    .iter()
                    .filter(|r| {
                        r.entry
                            .message
                            .starts_with(&format!("writer {w} batch {batch} "))
                    })
                    .map(|r| r.seq)
                    .collect();
                assert_eq!(seqs.len(), batch % 4 + 1);
                assert!(seqs.windows(2).all(|s| s[1] == s[0] + 1), "{seqs:?}");
            }
        }
    }
    assert_eq!(b.append_logs(job.id, &[]).await.unwrap(), expected as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_another_instance_makes_a_stale_update_fail() {
    let Some(emulators) = Emulators::start("a_write_through_another_instance").await else {
        return;
    };
    let prefix = unique_prefix();
    let server = emulators.store_on(&prefix).await;
    let runner = emulators.store_on(&prefix).await;
    let job = server.create_job(&sample_job()).await.unwrap();
    let running = runner.start_job(job.id).await.unwrap();
    assert_eq!(running.version, 2);
    let mut stale = job.clone();
    stale.cancel_requested = true;
    let err = server.update_job(&stale).await.unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err:?}");
    // The runner finishes; the server's late "failed" does not overwrite it.
    runner
        .finish_job(job.id, JobStatus::Succeeded, Some(0), None)
        .await
        .unwrap();
    let late = server
        .finish_job(job.id, JobStatus::Failed, None, Some("late".into()))
        .await
        .unwrap();
    assert_eq!(late.status, JobStatus::Succeeded);
    assert_eq!(server.get_job(job.id).await.unwrap().version, 3);
}

#[tokio::test]
async fn prefixes_keep_stores_apart() {
    let Some(emulators) = Emulators::start("prefixes_keep_stores_apart").await else {
        return;
    };
    let one = emulators.store().await;
    let other = emulators.store().await;
    let job = one.create_job(&sample_job()).await.unwrap();
    one.log(job.id, entry(0, 0, 0)).await.unwrap();
    let err = other.get_job(job.id).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let query = JobQuery {
        limit: 10,
        ..Default::default()
    };
    assert!(other.list_jobs(&query).await.unwrap().jobs.is_empty());
    assert_eq!(one.list_jobs(&query).await.unwrap().jobs.len(), 1);
    // The same id can be created in the other store: the prefixes are separate namespaces.
    other.create_job(&job).await.unwrap();
    assert!(other.read_logs(job.id, 0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_log_message_over_512_kib_is_cut_and_says_so() {
    let Some(emulators) = Emulators::start("a_log_message_over_512_kib").await else {
        return;
    };
    // A cap above what one Firestore document holds: the store still keeps at most 512 KiB.
    let store = emulators
        .store_builder()
        .with_max_log_record_bytes(1024 * 1024)
        .build()
        .await
        .unwrap();
    let job = store.create_job(&sample_job()).await.unwrap();
    let long = "é".repeat(400 * 1024); // 800 KiB of two-byte characters
    let entries = [
        LogEntry::remote(LogLevel::Info, long.clone()),
        LogEntry::remote(LogLevel::Info, "after"),
    ];
    assert_eq!(store.append_logs(job.id, &entries).await.unwrap(), 2);
    let all = store.read_logs(job.id, 0, 10).await.unwrap();
    let message = &all[0].entry.message;
    assert!(message.starts_with(&long[..512 * 1024]));
    assert!(message.ends_with(&format!("… [cut: {} bytes]", long.len() - 512 * 1024)));
    assert_eq!(all[1].entry.message, "after");
}
