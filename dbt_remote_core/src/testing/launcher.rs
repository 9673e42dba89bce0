//! The [`JobLauncher`] conformance suite: one async fn per behaviour of its contract, run on a
//! launcher whose runner runs a fake dbt ([`fake_dbt`]) that exits 0.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::job::{JobId, JobRecord, JobStatus};
use crate::launcher::JobLauncher;
use crate::lifecycle::JobLifecycle;
use crate::state::{StateStore, StateStoreExt};

use super::sample_job;

/// Writes an executable `dbt` into `dir` that ignores its arguments and exits with `code`.
pub fn fake_dbt(dir: &Path, code: i32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("dbt");
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho fake dbt \"$@\"\nexit {code}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs every launcher behaviour on `launcher`, whose jobs live in `store` (empty at the start)
/// and whose runner runs a dbt that succeeds.
pub async fn run_launcher_suite(store: Arc<dyn StateStore>, launcher: Arc<dyn JobLauncher>) {
    a_launched_job_runs_to_a_final_status(&*store, &*launcher).await;
    launching_twice_runs_once(&*store, &*launcher).await;
    a_queued_job_is_cancelled_at_once_and_cancel_is_idempotent(&*store, &*launcher).await;
    recover_finishes_orphans_and_runs_queued_jobs(&*store, &*launcher).await;
}

/// Waits (up to a minute) until the job is final.
pub async fn final_job(store: &dyn StateStore, id: JobId) -> JobRecord {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = store.get_job(id).await.unwrap();
        if job.status.is_final() {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {job:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn a_launched_job_runs_to_a_final_status(
    store: &dyn StateStore,
    launcher: &dyn JobLauncher,
) {
    let job = store.create_job(&sample_job()).await.unwrap();
    launcher.launch(job.id).await.unwrap();
    let done = final_job(store, job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    // Cancelling a final job leaves it as it is.
    let again = launcher.cancel(job.id).await.unwrap();
    assert_eq!(again.status, JobStatus::Succeeded);
    assert!(!again.cancel_requested);
}

pub async fn launching_twice_runs_once(store: &dyn StateStore, launcher: &dyn JobLauncher) {
    let job = store.create_job(&sample_job()).await.unwrap();
    launcher.launch(job.id).await.unwrap();
    launcher.launch(job.id).await.unwrap();
    final_job(store, job.id).await;
    // Give a second run the time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = store
        .read_all_logs(job.id, 0)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.entry.message.contains("fake dbt"))
        .count();
    assert_eq!(runs, 1, "dbt ran {runs} times");
}

pub async fn a_queued_job_is_cancelled_at_once_and_cancel_is_idempotent(
    store: &dyn StateStore,
    launcher: &dyn JobLauncher,
) {
    let job = store.create_job(&sample_job()).await.unwrap();
    let cancelled = launcher.cancel(job.id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(cancelled.cancel_requested);
    let again = launcher.cancel(job.id).await.unwrap();
    assert_eq!(again.status, JobStatus::Cancelled);
    assert_eq!(
        again.version, cancelled.version,
        "a second cancel writes nothing"
    );
}

pub async fn recover_finishes_orphans_and_runs_queued_jobs(
    store: &dyn StateStore,
    launcher: &dyn JobLauncher,
) {
    // A job left running by a runner that is gone, and one left queued.
    let orphan = store.create_job(&sample_job()).await.unwrap();
    store.start_job(orphan.id).await.unwrap();
    let queued = store.create_job(&sample_job()).await.unwrap();
    launcher.recover().await.unwrap();
    let orphan = final_job(store, orphan.id).await;
    assert_eq!(orphan.status, JobStatus::Failed, "{orphan:?}");
    assert!(orphan.failure_reason.is_some());
    let queued = final_job(store, queued.id).await;
    assert_eq!(queued.status, JobStatus::Succeeded, "{queued:?}");
}
