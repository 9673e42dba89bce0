//! End to end with `--state gcp`: the real dbt-server binary keeps its jobs in the Firestore and
//! Cloud Storage emulators, its job processes (the local launcher) run real dbt on the example
//! project and write their logs and artifacts there, and the client follows live. Needs the
//! venv of scripts/setup-python.sh; skipped, saying so, without the emulators
//! (scripts/setup-emulators.sh).
#![cfg(feature = "gcp")]

mod common;

use std::time::{Duration, Instant};

use common::{assert_live, assert_succeeded_in_order, follow_to_end, repo_root, RealServer};
use dbt_remote_core::package::pack_project;
use dbt_remote_core::state::{StateStore, StateStoreExt};
use dbt_remote_core::{Client, JobStatus, RelPath};
use dbt_remote_test_support::gcp::{unique_prefix, Emulators};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_with_state_in_firestore_and_cloud_storage() {
    let Some(emulators) = Emulators::start("build_with_state_in_firestore_and_cloud_storage").await
    else {
        return;
    };
    let prefix = unique_prefix();
    let tmp = tempfile::tempdir().unwrap();
    let server = RealServer::start_with_env(
        common::server_binary(),
        tmp.path(),
        &["--state", "gcp"],
        &emulators.env(&prefix),
    );
    let client = Client::new(&server.url).unwrap();
    let files = pack_project(&repo_root().join("examples/jaffle_duckdb")).unwrap();
    let args = ["build", "--vars", "{slow_seconds: 3}"]
        .map(String::from)
        .to_vec();
    let job = client.submit(args, &files).await.unwrap().0;

    // Follow live, as `dbt-remote build` does.
    let (records, done) = follow_to_end(&client, job.id, Duration::from_secs(180)).await;
    let ended = Instant::now();
    assert_succeeded_in_order(&records, &done);
    assert_live(&records, ended);

    // The state is in the emulators, where another store on the same prefix reads it …
    let store = emulators.store_on(&prefix).await;
    let stored = store.get_job(job.id).await.unwrap();
    assert_eq!(stored.status, JobStatus::Succeeded);
    let logs = store.read_all_logs(job.id, 0).await.unwrap();
    assert_eq!(logs.len(), records.len());
    let manifest = RelPath::new("manifest.json").unwrap();
    let names: Vec<String> = store
        .list_artifacts(job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name.to_string())
        .collect();
    assert!(names.contains(&"run_results.json".to_string()), "{names:?}");
    assert_eq!(
        store.get_artifact(job.id, &manifest).await.unwrap(),
        client.artifact(job.id, "manifest.json").await.unwrap()
    );
    for file in &files {
        assert!(store.get_blob(&file.sha256).await.is_ok());
    }
    // … and not in the local state dir, which keeps only the job process's lock and output.
    let state = tmp.path().join("state");
    assert!(!state.join("jobs").exists() && !state.join("blobs").exists());
    assert!(state.join(format!("runs/{}.log", job.id)).is_file());
}
