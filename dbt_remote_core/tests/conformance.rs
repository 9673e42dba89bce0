//! The store conformance suite on every store that runs here.

use std::sync::Arc;

use dbt_remote_core::testing::run_store_suite;
use dbt_remote_core::{LocalStore, MemoryStore};

#[tokio::test]
async fn memory_store_conforms() {
    run_store_suite(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    run_store_suite(Arc::new(LocalStore::new(dir.path()).unwrap())).await;
}

/// On the Firestore and Cloud Storage emulators (skipped, saying so, when they are not installed).
#[cfg(feature = "gcp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_store_conforms() {
    use dbt_remote_core::testing::gcp::Emulators;
    let Some(emulators) = Emulators::start("gcp_store_conforms").await else {
        return;
    };
    run_store_suite(emulators.store().await).await;
}
