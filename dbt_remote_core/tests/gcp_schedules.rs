//! Schedules in Firestore as several server instances use them, on the emulators (skipped,
//! saying so, when they are not installed; failing when `DBT_REMOTE_REQUIRE_EMULATORS=1`).
#![cfg(feature = "gcp")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use dbt_remote_core::job::FileEntry;
use dbt_remote_core::paths::RelPath;
use dbt_remote_core::retention::{collect, RetentionPolicy};
use dbt_remote_core::schedule::{FirestoreSchedules, ScheduleStore};
use dbt_remote_core::testing::{sample_schedule, RecordingLauncher};
use dbt_remote_core::{env, BlobHash, JobService, MemoryStore, StateStore};
use dbt_remote_test_support::gcp::{unique_prefix, Emulators};

/// Firestore schedules on the emulator under `prefix`: another instance on the same data.
async fn schedules(emulators: &Emulators, prefix: &str) -> Arc<FirestoreSchedules> {
    let project = emulators
        .env(prefix)
        .into_iter()
        .find(|(k, _)| *k == env::GCP_PROJECT)
        .map(|(_, v)| v)
        .unwrap();
    let built = FirestoreSchedules::builder()
        .with_project(project)
        .with_collection_prefix(prefix)
        .with_emulator(emulators.firestore_host())
        .build()
        .await;
    Arc::new(built.unwrap())
}

/// Two server instances (two services, each with its own `FirestoreSchedules` on one
/// collection prefix) tick one schedule at the same times: one job per occurrence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_firestore_run_each_occurrence_once() {
    let Some(emulators) = Emulators::start("two_instances_on_one_firestore").await else {
        return;
    };
    let prefix = unique_prefix();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let launcher = Arc::new(RecordingLauncher::new(store.clone()));
    let a = JobService::new(store.clone(), launcher.clone())
        .with_schedules(schedules(&emulators, &prefix).await);
    let b = JobService::new(store.clone(), launcher.clone())
        .with_schedules(schedules(&emulators, &prefix).await);
    let mut s = sample_schedule("every-minute");
    s.cron = "* * * * *".into();
    s.created_at = "2026-11-24T10:00:30Z".parse().unwrap();
    a.schedules().create_schedule(&s).await.unwrap();
    let mut fired = 0;
    for minute in 1..=3 {
        let now: DateTime<Utc> = format!("2026-11-24T10:0{minute}:00.5Z").parse().unwrap();
        let ticks = [a.clone(), b.clone(), a.clone(), b.clone()]
            .map(|service| tokio::spawn(async move { service.run_due_schedules(now).await }));
        for tick in ticks {
            fired += tick.await.unwrap().unwrap().len();
        }
        assert_eq!(fired, minute, "one job per occurrence up to 10:0{minute}");
    }
    assert_eq!(launcher.launched().len(), 3);
}

/// The retention pass keeps the blobs a Firestore schedule names and collects the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_blobs_of_firestore_schedules() {
    let Some(emulators) = Emulators::start("retention_keeps_schedule_blobs").await else {
        return;
    };
    let prefix = unique_prefix();
    let store = emulators.store_on(&prefix).await;
    let schedules = schedules(&emulators, &prefix).await;
    let (kept, orphan) = (Bytes::from("select 1"), Bytes::from("select 2"));
    let (kept_hash, orphan_hash) = (BlobHash::of(&kept), BlobHash::of(&orphan));
    store.put_blob(&kept_hash, kept).await.unwrap();
    store.put_blob(&orphan_hash, orphan).await.unwrap();
    let mut s = sample_schedule("nightly");
    s.spec.files = vec![FileEntry {
        path: RelPath::new("models/a.sql").unwrap(),
        sha256: kept_hash.clone(),
    }];
    schedules.create_schedule(&s).await.unwrap();
    let policy = RetentionPolicy {
        grace: Duration::ZERO,
        ..Default::default()
    };
    let later = Utc::now() + chrono::Duration::hours(1);
    let collected = collect(&store, &*schedules, &policy, later).await.unwrap();
    assert_eq!(collected.blobs, [orphan_hash]);
    assert!(store.get_blob(&kept_hash).await.is_ok());
}
