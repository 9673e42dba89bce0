//! The conformance suites (state stores, schedule stores, launchers) on every implementation
//! that runs here (the process launcher's is in dbt_server/tests/launcher.rs: it runs
//! `dbt-server run-job`).

use std::sync::Arc;

use bytes::Bytes;
use dbt_remote_core::runner::RunnerConfig;
use dbt_remote_core::schedule::{LocalSchedules, MemorySchedules, ScheduleStore};
use dbt_remote_core::testing::{
    damaged_blobs_are_refused_and_repaired, fake_dbt, oversized_cache_entries_are_refused,
    run_concurrent_schedule_suite, run_launcher_suite, run_schedule_suite, run_store_suite,
};
use dbt_remote_core::{BlobHash, InProcessLauncher, LocalStore, MemoryStore, StateStore};

#[tokio::test]
async fn memory_store_conforms() {
    run_store_suite(Arc::new(MemoryStore::new())).await;
    let store = MemoryStore::new();
    let damage = |hash: &BlobHash, bytes| store.damage_blob(hash, bytes);
    damaged_blobs_are_refused_and_repaired(&store, damage, true).await;
    oversized_cache_entries_are_refused(&MemoryStore::new().with_max_cache_entry_bytes(100), 100)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    run_store_suite(Arc::new(LocalStore::new(dir.path()).unwrap())).await;
    let store = LocalStore::new(dir.path()).unwrap();
    let damage = |hash: &BlobHash, bytes: Bytes| {
        let h = hash.as_str();
        std::fs::write(dir.path().join("blobs").join(&h[..2]).join(&h[2..]), bytes).unwrap();
    };
    damaged_blobs_are_refused_and_repaired(&store, damage, true).await;
    let capped = LocalStore::new(dir.path().join("capped"))
        .unwrap()
        .with_max_cache_entry_bytes(100);
    oversized_cache_entries_are_refused(&capped, 100).await;
}

/// On the Firestore and Cloud Storage emulators (skipped, saying so, when they are not installed).
#[cfg(feature = "gcp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_store_conforms() {
    use dbt_remote_test_support::gcp::Emulators;
    let Some(emulators) = Emulators::start("gcp_store_conforms").await else {
        return;
    };
    run_store_suite(emulators.store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_schedules_conform() {
    run_schedule_suite(&MemorySchedules::new()).await;
    let shared: Arc<dyn ScheduleStore> = Arc::new(MemorySchedules::new());
    run_concurrent_schedule_suite([shared.clone(), shared]).await;
}

/// Two `LocalSchedules` on one folder are two servers sharing it: one claimer wins each
/// occurrence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_schedules_conform_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    run_schedule_suite(&LocalSchedules::new(dir.path()).unwrap()).await;
    let shared = tempfile::tempdir().unwrap();
    let open =
        || -> Arc<dyn ScheduleStore> { Arc::new(LocalSchedules::new(shared.path()).unwrap()) };
    run_concurrent_schedule_suite([open(), open()]).await;
    let again = LocalSchedules::new(dir.path()).unwrap();
    assert_eq!(again.list_schedules().await.unwrap()[0].name, "a-first");
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0, "no temp file is left behind");
}

/// Firestore schedules on the emulator; two instances on one collection prefix are two server
/// instances sharing the store (skipped, saying so, when the emulators are not installed).
#[cfg(feature = "gcp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firestore_schedules_conform() {
    use dbt_remote_core::env;
    use dbt_remote_core::schedule::FirestoreSchedules;
    use dbt_remote_test_support::gcp::{unique_prefix, Emulators};
    let Some(emulators) = Emulators::start("firestore_schedules_conform").await else {
        return;
    };
    let open = |prefix: String| {
        let project = emulators
            .env(&prefix)
            .into_iter()
            .find(|(k, _)| *k == env::GCP_PROJECT)
            .map(|(_, v)| v)
            .unwrap();
        let builder = FirestoreSchedules::builder()
            .with_project(project)
            .with_collection_prefix(prefix)
            .with_emulator(emulators.firestore_host());
        async move { Arc::new(builder.build().await.unwrap()) }
    };
    run_schedule_suite(&*open(unique_prefix()).await).await;
    let shared = unique_prefix();
    let (a, b) = (open(shared.clone()).await, open(shared).await);
    run_concurrent_schedule_suite([a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_launcher_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let mut config = RunnerConfig::new(dir.path().join("work"));
    config.dbt_path = fake_dbt(dir.path(), 0);
    let launcher = Arc::new(InProcessLauncher::new(store.clone(), config, 2));
    run_launcher_suite(store, launcher).await;
}
