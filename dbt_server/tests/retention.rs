//! Retention: old finished jobs and unused blobs go, and nothing a queued or running job or a
//! schedule needs does. The pass itself on a local state dir, then through the real
//! `dbt-server` binary, which runs it at start.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use dbt_remote_core::retention::{collect, RetentionPolicy};
use dbt_remote_core::schedule::{LocalSchedules, Schedule, ScheduleSpec, ScheduleStore};
use dbt_remote_core::{
    BlobHash, FileEntry, JobId, JobRecord, JobSpec, JobStatus, LocalStore, LogEntry, LogLevel,
    RelPath, StateStore,
};

const DAY: i64 = 24 * 3600;

/// A blob stored `age_secs` ago (its file's time set back).
async fn blob(store: &LocalStore, name: &str, age_secs: u64) -> BlobHash {
    let content = Bytes::from(format!("-- {name}\nselect 1"));
    let hash = BlobHash::of(&content);
    store.put_blob(&hash, content).await.unwrap();
    let h = hash.as_str();
    let path = store.root().join("blobs").join(&h[..2]).join(&h[2..]);
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
        .unwrap();
    hash
}

fn files(hashes: &[&BlobHash]) -> Vec<FileEntry> {
    hashes
        .iter()
        .enumerate()
        .map(|(i, h)| FileEntry {
            path: RelPath::new(format!("models/m{i}.sql")).unwrap(),
            sha256: (*h).clone(),
        })
        .collect()
}

/// A job of `status` made `age_secs` ago (and ended then, if final), using `blobs`.
async fn job(store: &LocalStore, status: JobStatus, age_secs: i64, blobs: &[&BlobHash]) -> JobId {
    let mut job = JobRecord::new(JobSpec {
        args: vec!["build".into()],
        files: files(blobs),
        ..Default::default()
    });
    let at: DateTime<Utc> = Utc::now() - chrono::Duration::seconds(age_secs);
    job.created_at = at;
    job.status = status;
    if status != JobStatus::Queued {
        job.started_at = Some(at);
    }
    if status.is_final() {
        job.finished_at = Some(at);
        job.exit_code = Some(0);
    }
    store.create_job(&job).await.unwrap();
    let entry = LogEntry::remote(LogLevel::Info, "dbt-remote: job ended");
    store.append_logs(job.id, &[entry]).await.unwrap();
    let name = RelPath::new("run_results.json").unwrap();
    store
        .put_artifact(job.id, &name, Bytes::from_static(b"{}"))
        .await
        .unwrap();
    job.id
}

/// The files a job leaves outside the store: its work dir and its runner's lock and log.
fn leave_files(work: &Path, runs: &Path, id: JobId) -> Vec<PathBuf> {
    let paths = vec![
        work.join(id.to_string()).join("models/m0.sql"),
        runs.join(format!("{id}.lock")),
        runs.join(format!("{id}.log")),
    ];
    for p in &paths {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "x").unwrap();
    }
    paths
}

struct Dirs {
    _tmp: tempfile::TempDir,
    store: LocalStore,
    schedules: LocalSchedules,
    work: PathBuf,
    runs: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::new(tmp.path().join("state")).unwrap();
    let schedules = LocalSchedules::new(tmp.path().join("state/schedules")).unwrap();
    Dirs {
        work: tmp.path().join("work"),
        runs: tmp.path().join("state/runs"),
        _tmp: tmp,
        store,
        schedules,
    }
}

fn policy(d: &Dirs) -> RetentionPolicy {
    RetentionPolicy {
        max_age: Some(Duration::from_secs(30 * DAY as u64)),
        max_jobs: None,
        grace: Duration::from_secs(3600),
        work_root: Some(d.work.clone()),
        runs_dir: Some(d.runs.clone()),
    }
}

#[tokio::test]
async fn a_pass_deletes_old_finished_jobs_and_unused_blobs_and_nothing_else() {
    let d = dirs();
    let s = &d.store;
    let two_days = 2 * DAY as u64;
    let (b_old, b_shared, b_queued, b_running) = (
        blob(s, "old", two_days).await,
        blob(s, "shared", two_days).await,
        blob(s, "queued", two_days).await,
        blob(s, "running", two_days).await,
    );
    let (b_schedule, b_orphan, b_fresh) = (
        blob(s, "schedule", two_days).await,
        blob(s, "orphan", two_days).await,
        blob(s, "fresh", 60).await,
    );
    let old_ok = job(s, JobStatus::Succeeded, 40 * DAY, &[&b_old, &b_shared]).await;
    let old_failed = job(s, JobStatus::Failed, 31 * DAY, &[&b_old]).await;
    let old_cancelled = job(s, JobStatus::Cancelled, 90 * DAY, &[]).await;
    let recent = job(s, JobStatus::Succeeded, 29 * DAY, &[&b_shared]).await;
    // Queued and running for ages: still never deleted, and neither are their blobs.
    let queued = job(s, JobStatus::Queued, 40 * DAY, &[&b_queued]).await;
    let running = job(s, JobStatus::Running, 40 * DAY, &[&b_running]).await;
    let spec = ScheduleSpec {
        name: Some("nightly".into()),
        cron: "0 3 * * *".into(),
        command: None,
        job: JobSpec {
            args: vec!["build".into()],
            files: files(&[&b_schedule]),
            ..Default::default()
        },
    };
    d.schedules
        .create_schedule(&Schedule::new(spec).unwrap())
        .await
        .unwrap();
    let left = leave_files(&d.work, &d.runs, old_ok);
    let kept_files = leave_files(&d.work, &d.runs, running);
    // Cache entries belong to no job: a pass leaves them.
    let cache =
        dbt_remote_core::state::CacheKey::new(dbt_remote_core::state::CacheKind::Deps, [3; 32]);
    s.put_cache(&cache, Bytes::from_static(b"zip"))
        .await
        .unwrap();

    let removed = collect(s, &d.schedules, &policy(&d), Utc::now())
        .await
        .unwrap();

    let mut expected_jobs = vec![old_ok, old_failed, old_cancelled];
    expected_jobs.sort_by(|a, b| b.cmp(a));
    assert_eq!(
        removed.jobs, expected_jobs,
        "old finished jobs, newest first"
    );
    let mut blobs = removed.blobs.clone();
    blobs.sort();
    let mut expected_blobs = vec![b_old.clone(), b_orphan.clone()];
    expected_blobs.sort();
    assert_eq!(blobs, expected_blobs, "unused blobs past the grace period");
    for id in &expected_jobs {
        assert!(s.get_job(*id).await.is_err());
        assert!(!s.root().join("jobs").join(id.to_string()).exists());
    }
    for p in &left {
        assert!(!p.exists(), "{} is removed", p.display());
    }
    assert!(!d.work.join(old_ok.to_string()).exists());
    for id in [recent, queued, running] {
        assert_eq!(s.read_logs(id, 0, 10).await.unwrap().len(), 1, "{id} kept");
    }
    for p in &kept_files {
        assert!(p.exists(), "a running job's {} stays", p.display());
    }
    assert!(
        s.get_cache(&cache).await.unwrap().is_some(),
        "the cache is left"
    );
    let wanted = [b_shared, b_queued, b_running, b_schedule, b_fresh];
    assert!(s.missing_blobs(&wanted).await.unwrap().is_empty());
    let again = collect(s, &d.schedules, &policy(&d), Utc::now())
        .await
        .unwrap();
    assert!(again.jobs.is_empty() && again.blobs.is_empty(), "{again:?}");
}

#[tokio::test]
async fn a_count_limit_keeps_the_newest_finished_jobs_and_the_just_finished() {
    let d = dirs();
    let s = &d.store;
    let mut finished = Vec::new();
    for age in [5, 4, 3, 2] {
        finished.push(job(s, JobStatus::Succeeded, age * 3600, &[]).await);
    }
    let queued = job(s, JobStatus::Queued, 6 * 3600, &[]).await;
    // Made before the others, so older by id, but it ended a minute ago.
    let mut late = JobRecord::new(JobSpec {
        args: vec!["run".into()],
        ..Default::default()
    });
    late.id = "00000000-0000-7000-8000-000000000001".parse().unwrap();
    late.status = JobStatus::Failed;
    late.finished_at = Some(Utc::now() - chrono::Duration::seconds(60));
    s.create_job(&late).await.unwrap();
    let policy = RetentionPolicy {
        max_age: None,
        max_jobs: Some(2),
        ..policy(&d)
    };
    let removed = collect(s, &d.schedules, &policy, Utc::now()).await.unwrap();
    // Newest first by id: finished[3], finished[2] kept; the two older ones go.
    assert_eq!(removed.jobs, vec![finished[1], finished[0]]);
    for id in [finished[3], finished[2], queued, late.id] {
        assert!(s.get_job(id).await.is_ok(), "{id} kept");
    }
}

/// Through the real binary: a job that ended 40 days ago is listed while retention is off
/// (`--gc-interval-minutes 0`), and gone from `GET /api/v1/jobs` and from the disk (state,
/// work dir, runner files, its blob) once a server with the default 30 days has started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_deletes_an_old_job_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, recent, old_blob) = {
        let store = LocalStore::new(tmp.path().join("state")).unwrap();
        let b = blob(&store, "old", 2 * DAY as u64).await;
        let old = job(&store, JobStatus::Succeeded, 40 * DAY, &[&b]).await;
        let recent = job(&store, JobStatus::Failed, DAY, &[]).await;
        (old, recent, b)
    };
    let left = leave_files(
        &tmp.path().join("work"),
        &tmp.path().join("state/runs"),
        old,
    );
    let ids = |v: serde_json::Value| -> Vec<String> {
        let jobs = v["jobs"].as_array().expect("a job list").clone();
        jobs.iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    {
        let off = common::RealServer::start_in(
            common::server_binary(),
            tmp.path(),
            &["--gc-interval-minutes", "0"],
        );
        let listed = ids(common::get_json(format!("{}/api/v1/jobs", off.url)).await);
        assert_eq!(listed, [recent.to_string(), old.to_string()]);
    }
    let server = common::RealServer::start_in(common::server_binary(), tmp.path(), &[]);
    let url = format!("{}/api/v1/jobs", server.url);
    common::eventually(Duration::from_secs(10), "the old job to go", || async {
        let listed = ids(common::get_json(&url).await);
        (listed == [recent.to_string()]).then_some(())
    })
    .await;
    let answer = reqwest::get(format!("{url}/{old}")).await.unwrap();
    assert_eq!(answer.status(), 404);
    assert!(!tmp.path().join("state/jobs").join(old.to_string()).exists());
    for p in &left {
        assert!(!p.exists(), "{} is removed", p.display());
    }
    let h = old_blob.as_str();
    assert!(!tmp
        .path()
        .join("state/blobs")
        .join(&h[..2])
        .join(&h[2..])
        .exists());
    assert!(tmp
        .path()
        .join("state/jobs")
        .join(recent.to_string())
        .exists());
}
