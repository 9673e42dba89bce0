//! The HTTP API of jobs that start from an earlier job: the jobs of an environment, deferral
//! to its latest success (`defer_to`) and `retry` on the failed job's own files (`files_of`),
//! over the memory store.

mod common;

use bytes::Bytes;
use common::{file, job_count, InProcess};
use dbt_remote_core::{BlobHash, Client, JobLifecycle, JobStatus, RelPath};

async fn server() -> InProcess {
    InProcess::start(4096).await
}

/// Jobs name an environment; the list filters by it; a job deferring to an environment gets
/// the manifest of its latest succeeded job of the same project in its state dir.
#[tokio::test]
async fn jobs_of_an_environment_are_listed_and_deferred_to() {
    let s = server().await;
    let client = Client::new(&s.url).unwrap();
    let files = [file("dbt_project.yml", b"name: shop\n")];
    let submit = |environment: Option<&str>, defer_to: Option<&str>| {
        let options = dbt_remote_core::client::SubmitOptions {
            environment: environment.map(str::to_string),
            defer_to: defer_to.map(str::to_string),
            ..Default::default()
        };
        let client = client.clone();
        let files = files.clone();
        async move {
            client
                .submit_with(vec!["build".into()], &files, options)
                .await
        }
    };
    let (prod, _) = submit(Some("prod"), None).await.unwrap();
    assert_eq!(prod.environment.as_deref(), Some("prod"));
    let (_ci, _) = submit(Some("ci"), None).await.unwrap();
    let listed = client
        .jobs_where(
            &dbt_remote_core::client::JobFilter {
                environment: Some("prod".into()),
                ..Default::default()
            },
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        listed.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [prod.id]
    );

    // prod has not succeeded yet: 400, nothing stored.
    let err = submit(Some("ci"), Some("prod")).await.unwrap_err();
    assert!(err.to_string().contains("has no succeeded job"), "{err}");
    assert_eq!(job_count(&*s.store).await, 2);

    s.store.start_job(prod.id).await.unwrap();
    s.store
        .finish_job(prod.id, JobStatus::Succeeded, Some(0), None)
        .await
        .unwrap();
    let manifest = Bytes::from_static(b"{\"nodes\": {}}");
    let name = RelPath::new("manifest.json").unwrap();
    s.store
        .put_artifact(prod.id, &name, manifest.clone())
        .await
        .unwrap();
    let (job, _) = submit(Some("ci"), Some("prod")).await.unwrap();
    assert_eq!(job.state_of, Some(prod.id));
    assert_eq!(job.args, ["build", "--state", ".dbt-remote/state"]);
    let stored = s.store.get_job(job.id).await.unwrap();
    let placed = stored
        .spec
        .files
        .iter()
        .find(|f| f.path.as_str() == ".dbt-remote/state/manifest.json")
        .expect("the manifest is a file of the job");
    assert_eq!(placed.sha256, BlobHash::of(&manifest));
}

/// `Client::retry` without a project (Python's `job.retry()`): the new job is dbt's `retry` of
/// the failed job, on its files (`files_of`: nothing uploaded), in its environment, labelled
/// with its target, with its run results and manifest as dbt's state.
#[tokio::test]
async fn a_retry_runs_on_the_failed_jobs_own_files() {
    let s = server().await;
    let client = Client::new(&s.url).unwrap();
    let files = [
        file("dbt_project.yml", b"name: shop\n"),
        file("models/a.sql", b"select 1"),
    ];
    let options = dbt_remote_core::client::SubmitOptions {
        environment: Some("ci".into()),
        ..Default::default()
    };
    let args = vec!["build".into(), "--target".into(), "ci".into()];
    let (failed, _) = client.submit_with(args, &files, options).await.unwrap();
    s.store.start_job(failed.id).await.unwrap();
    s.store
        .finish_job(failed.id, JobStatus::Failed, Some(1), None)
        .await
        .unwrap();
    for name in ["run_results.json", "manifest.json"] {
        let content = Bytes::from(format!("{{\"{name}\": 1}}"));
        let name = RelPath::new(name).unwrap();
        s.store
            .put_artifact(failed.id, &name, content)
            .await
            .unwrap();
    }

    let (retry, stats) = client.retry(failed.id, None).await.unwrap();
    assert_eq!((stats.uploaded_blobs, stats.uploaded_bytes), (0, 0));
    assert_eq!(
        retry.args,
        ["retry", "--target", "ci", "--state", ".dbt-remote/state"]
    );
    assert_eq!(retry.environment.as_deref(), Some("ci"));
    assert_eq!(retry.target.as_deref(), Some("ci"));
    assert_eq!(retry.state_of, Some(failed.id));
    let stored = s.store.get_job(retry.id).await.unwrap();
    let paths: Vec<&str> = stored.spec.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "dbt_project.yml",
            "models/a.sql",
            ".dbt-remote/state/run_results.json",
            ".dbt-remote/state/manifest.json"
        ]
    );
    let original = s.store.get_job(failed.id).await.unwrap();
    assert_eq!(stored.spec.files[..2], original.spec.files[..]);

    // A job that stored no run results cannot be retried: 400, nothing stored.
    let (queued, _) = client.submit(vec!["build".into()], &files).await.unwrap();
    let before = job_count(&*s.store).await;
    let err = client.retry(queued.id, None).await.unwrap_err();
    assert!(
        err.to_string().contains("stored no run_results.json"),
        "{err}"
    );
    assert_eq!(job_count(&*s.store).await, before);
}
