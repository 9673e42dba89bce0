//! The operations of dbt-server, over a [`StateStore`], a [`JobLauncher`] and a
//! [`ScheduleStore`]. The HTTP server only translates requests into these calls (the 0.4.6
//! protocol through [`compat`](crate::compat), which calls these too).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::api::{ArtifactList, Job, JobList, LogPage, MissingBlobs, SubmitJob};
use crate::blob::BlobHash;
use crate::containment::{check_project_file, is_checked_file};
use crate::job::{FileEntry, JobId, JobRecord, JobSpec, JobStatus};
use crate::launcher::JobLauncher;
use crate::limits::Limits;
use crate::log::LogEntry;
use crate::paths::RelPath;
use crate::schedule::{LoopTrigger, MemorySchedules, ScheduleStore, ScheduleTrigger};
use crate::state::{FollowEvent, JobPage, JobQuery, LogHub, StateStore};
use crate::{Error, Result};

mod earlier;
mod schedules;
pub use schedules::run_scheduler;

/// Blob sizes looked up at once when a job's size is checked.
const SIZE_LOOKUPS: usize = 16;

/// Largest page of jobs or log records one call returns.
pub const MAX_PAGE: usize = 1000;

/// Which jobs [`JobService::list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListJobs {
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// At most this many (1..=[`MAX_PAGE`], default 50).
    pub limit: Option<usize>,
    /// The `next_page_token` of the previous page: only jobs older than this one.
    pub page_token: Option<JobId>,
    /// Only jobs of this dbt project (see [`JobRecord::project`]).
    pub project: Option<String>,
    /// Only jobs against this dbt target (see [`JobRecord::target`]).
    pub target: Option<String>,
    /// Only jobs of this environment (see [`JobSpec::environment`]).
    pub environment: Option<String>,
}

impl ListJobs {
    /// Whether the job passes the project and target filters (the store filters the status).
    fn matches(&self, job: &JobRecord) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        same(&self.project, &job.project)
            && same(&self.target, &job.target)
            && same(&self.environment, &job.spec.environment)
    }

    fn filters_labels(&self) -> bool {
        self.project.is_some() || self.target.is_some() || self.environment.is_some()
    }
}

/// Most job records one list call reads from the store while filtering by project or target;
/// past it the page ends early and its `next_page_token` goes on from there.
pub const MAX_SCAN: usize = 2000;

/// The artifact that is dbt's docs site (with `manifest.json` and `catalog.json`).
pub const DOCS_INDEX: &str = "index.html";

/// dbt-server's operations.
#[derive(Debug, Clone)]
pub struct JobService {
    store: Arc<dyn StateStore>,
    launcher: Arc<dyn JobLauncher>,
    schedules: Arc<dyn ScheduleStore>,
    trigger: Arc<dyn ScheduleTrigger>,
    limits: Limits,
    /// The readers of followed jobs' logs, one per job.
    hub: LogHub,
    /// How often a followed job's log is read when its store cannot say it changed.
    pub log_poll: Duration,
}

impl JobService {
    pub fn new(store: Arc<dyn StateStore>, launcher: Arc<dyn JobLauncher>) -> Self {
        let hub = LogHub::new(store.clone());
        JobService {
            store,
            launcher,
            schedules: Arc::new(MemorySchedules::new()),
            trigger: Arc::new(LoopTrigger),
            limits: Limits::new(),
            hub,
            log_poll: Duration::from_millis(100),
        }
    }

    /// Refuses what is past `limits` (by default [`Limits::new`]).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Keeps schedules in `schedules` (by default in memory).
    pub fn with_schedules(mut self, schedules: Arc<dyn ScheduleStore>) -> Self {
        self.schedules = schedules;
        self
    }

    /// Fires schedules with `trigger` (by default [`LoopTrigger`], the server's own loop).
    pub fn with_trigger(mut self, trigger: Arc<dyn ScheduleTrigger>) -> Self {
        self.trigger = trigger;
        self
    }

    pub fn trigger(&self) -> &Arc<dyn ScheduleTrigger> {
        &self.trigger
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    pub fn schedules(&self) -> &Arc<dyn ScheduleStore> {
        &self.schedules
    }

    /// Checks the request, stores the job and launches it. Nothing is stored when the request
    /// is refused, e.g. when a file's content was not uploaded first (see
    /// [`missing_files`](Self::missing_files)).
    ///
    /// A job that defers to an environment, or retries a failed job, gets that earlier job's
    /// artifacts in its state dir (see [`with_state_of`](Self::with_state_of)); one on an
    /// earlier job's files gets those ([`with_files_of`](Self::with_files_of)).
    pub async fn submit(&self, request: SubmitJob) -> Result<Job> {
        let files_of = request.files_of;
        let (spec, from) = request.into_parts()?;
        let spec = self.with_files_of(spec, files_of).await?;
        self.check_uploaded(&spec).await?;
        let spec = self.with_state_of(spec, from).await?;
        self.submit_spec(spec, &[]).await
    }

    /// Fails (a 400 that says how to upload them) unless the store holds the content of
    /// every file of `spec`, which are within [`Limits::job`]'s count.
    pub(crate) async fn check_uploaded(&self, spec: &JobSpec) -> Result<()> {
        self.limits.job.check_files(spec.files.len())?;
        let missing = self.missing_files(spec).await?;
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "{}: upload them with PUT /api/v1/blobs/{{sha256}}",
            not_uploaded(&missing)
        )))
    }

    /// The paths of the files of `spec` whose content the store does not hold, in order.
    pub async fn missing_files(&self, spec: &JobSpec) -> Result<Vec<RelPath>> {
        let hashes: Vec<BlobHash> = spec.files.iter().map(|f| f.sha256.clone()).collect();
        let missing = self.store.missing_blobs(&hashes).await?;
        Ok(spec
            .files
            .iter()
            .filter(|f| missing.contains(&f.sha256))
            .map(|f| f.path.clone())
            .collect())
    }

    /// Fails unless the job's files are within [`Limits::job`]: their count, and the bytes
    /// they would materialise (each path counts its blob's stored size, so one blob listed
    /// under many paths counts each time). Stores nothing.
    pub async fn check_job_size(&self, spec: &JobSpec) -> Result<()> {
        let limits = &self.limits.job;
        limits.check_files(spec.files.len())?;
        // Each blob's size once, a few lookups at a time (a remote store answers each slowly).
        let mut seen = std::collections::HashSet::new();
        let lookups: Vec<_> = spec
            .files
            .iter()
            .filter(|f| seen.insert(f.sha256.clone()))
            .map(|f| self.stored_size(f))
            .collect();
        let sizes: std::collections::HashMap<BlobHash, u64> = futures::stream::iter(lookups)
            .buffer_unordered(SIZE_LOOKUPS)
            .try_collect()
            .await?;
        let mut bytes = limits.bytes();
        spec.files
            .iter()
            .try_for_each(|f| bytes.charge(sizes.get(&f.sha256).copied().unwrap_or(0)))
    }

    /// A file's hash and the stored size of its blob; a 400 naming the file when it was not
    /// uploaded.
    async fn stored_size(&self, file: &FileEntry) -> Result<(BlobHash, u64)> {
        match self.store.blob_size(&file.sha256).await {
            Ok(size) => Ok((file.sha256.clone(), size)),
            Err(Error::NotFound { .. }) => Err(Error::invalid(not_uploaded(std::slice::from_ref(
                &file.path,
            )))),
            Err(e) => Err(e),
        }
    }

    /// Stores a checked spec (whose files are all stored) with `notes` as its first log
    /// records, and launches it. Refused past [`Limits::job`] before anything is stored.
    pub async fn submit_spec(&self, spec: JobSpec, notes: &[LogEntry]) -> Result<Job> {
        spec.validate()?;
        self.check_job_size(&spec).await?;
        self.check_project_files(&spec).await?;
        let mut record = JobRecord::new(spec);
        record.project = self.project_of(&record.spec).await;
        record.target = crate::project::target_from_args(&record.spec.args);
        let job = self.store.create_job(&record).await?;
        if !notes.is_empty() {
            self.store.append_logs(job.id, notes).await?;
        }
        self.launcher.launch(job.id).await?;
        Ok(job.into())
    }

    /// Fails unless the paths in the project's `dbt_project.yml` and packages files stay
    /// inside the work dir (see [`check_project_file`]). Stores nothing.
    pub async fn check_project_files(&self, spec: &JobSpec) -> Result<()> {
        let packages = spec.installs_packages();
        let checked = |f: &&FileEntry| is_checked_file(f.path.as_str(), packages);
        for file in spec.files.iter().filter(checked) {
            let content = match self.store.get_blob(&file.sha256).await {
                Err(Error::NotFound { what }) => Err(Error::invalid(format!(
                    "{}: {what}",
                    not_uploaded(std::slice::from_ref(&file.path))
                ))),
                other => other,
            }?;
            check_project_file(file.path.as_str(), &content)?;
        }
        Ok(())
    }

    pub async fn missing_blobs(&self, hashes: &[BlobHash]) -> Result<MissingBlobs> {
        Ok(MissingBlobs {
            missing: self.store.missing_blobs(hashes).await?,
        })
    }

    pub async fn put_blob(&self, hash: &BlobHash, content: Bytes) -> Result<()> {
        self.store.put_blob(hash, content).await
    }

    pub async fn job(&self, id: JobId) -> Result<Job> {
        Ok(self.store.get_job(id).await?.into())
    }

    /// The project a job's files name (see [`crate::project`]); `None` when they name none.
    pub(crate) async fn project_of(&self, spec: &JobSpec) -> Option<String> {
        let (file, name) = crate::project::naming_file(spec)?;
        name(&self.store.get_blob(&file.sha256).await.ok()?)
    }

    /// Jobs newest first, one page. With a project or target filter, the store is read page
    /// by page (at most [`MAX_SCAN`] records) and a page may hold fewer jobs than asked for
    /// while a `next_page_token` says there may be more.
    pub async fn list(&self, query: &ListJobs) -> Result<JobList> {
        if let Some(environment) = &query.environment {
            crate::job::check_environment(environment)?;
        }
        let limit = page_limit(query.limit, 50)?;
        let page = self.list_records(query, limit).await?;
        Ok(JobList {
            jobs: page.jobs.into_iter().map(Job::from).collect(),
            next_page_token: page.next.map(|id| id.to_string()),
        })
    }

    pub(crate) async fn list_records(&self, query: &ListJobs, limit: usize) -> Result<JobPage> {
        let mut store_query = JobQuery {
            status: query.status,
            before: query.page_token,
            limit,
        };
        if !query.filters_labels() {
            return self.store.list_jobs(&store_query).await;
        }
        store_query.limit = MAX_PAGE;
        let (mut jobs, mut scanned) = (Vec::new(), 0);
        loop {
            let page = self.store.list_jobs(&store_query).await?;
            let count = page.jobs.len();
            for (i, job) in page.jobs.into_iter().enumerate() {
                scanned += 1;
                let id = job.id;
                if query.matches(&job) {
                    jobs.push(job);
                }
                if jobs.len() == limit || scanned == MAX_SCAN {
                    // More may follow, unless this was the store's very last job.
                    let store_done = page.next.is_none() && i + 1 == count;
                    let next = (!store_done).then_some(id);
                    return Ok(JobPage { jobs, next });
                }
            }
            match page.next {
                None => return Ok(JobPage { jobs, next: None }),
                Some(next) => store_query.before = Some(next),
            }
        }
    }

    /// The newest succeeded `dbt docs generate` job of `project` and `target` that stored dbt's
    /// docs site (`index.html`), among the last [`MAX_SCAN`] succeeded jobs.
    pub async fn latest_docs(&self, project: &str, target: &str) -> Result<JobId> {
        let query = ListJobs {
            status: Some(JobStatus::Succeeded),
            project: Some(project.to_string()),
            target: Some(target.to_string()),
            ..Default::default()
        };
        let page = self.list_records(&query, MAX_SCAN).await?;
        for job in page.jobs {
            if job.spec.command() == Some("docs generate") && self.has_docs(job.id).await? {
                return Ok(job.id);
            }
        }
        Err(Error::not_found(format!(
            "a recent docs site of project {project:?} and target {target:?} (run `dbt docs \
             generate` with that target to make one)"
        )))
    }

    /// Whether a job stored dbt's docs site.
    pub async fn has_docs(&self, id: JobId) -> Result<bool> {
        let artifacts = self.store.list_artifacts(id).await?;
        Ok(artifacts.iter().any(|a| a.name.as_str() == DOCS_INDEX))
    }

    pub async fn cancel(&self, id: JobId) -> Result<Job> {
        self.store.get_job(id).await?;
        Ok(self.launcher.cancel(id).await?.into())
    }

    /// Log records after `after`.
    pub async fn logs(&self, id: JobId, after: u64, limit: Option<usize>) -> Result<LogPage> {
        // Status first: records read after a final status are the last ones.
        let after = log_cursor(after)?;
        let job = self.store.get_job(id).await?;
        let limit = page_limit(limit, MAX_PAGE)?;
        let records = self.store.read_logs(id, after, limit).await?;
        let next_after = records.last().map_or(after, |r| r.seq);
        let done = job.status.is_final() && records.len() < limit;
        Ok(LogPage {
            records,
            next_after,
            status: job.status,
            done,
        })
    }

    /// Every record after `after` as it is written, then the final job.
    pub async fn follow(
        &self,
        id: JobId,
        after: u64,
    ) -> Result<impl futures::Stream<Item = Result<FollowEvent>> + Send + 'static> {
        let after = log_cursor(after)?;
        self.store.get_job(id).await?;
        Ok(self.hub.follow(id, after, self.log_poll))
    }

    pub async fn artifacts(&self, id: JobId) -> Result<ArtifactList> {
        Ok(ArtifactList {
            artifacts: self.store.list_artifacts(id).await?,
        })
    }

    pub async fn artifact(&self, id: JobId, name: &RelPath) -> Result<Bytes> {
        self.store.get_artifact(id, name).await
    }

    /// Takes over the jobs left queued or running by a previous server.
    pub async fn recover(&self) -> Result<()> {
        self.launcher.recover().await
    }
}

/// Says which files were not uploaded: how many, and the first five.
pub fn not_uploaded(missing: &[RelPath]) -> String {
    let paths: Vec<&str> = missing.iter().map(RelPath::as_str).take(5).collect();
    format!(
        "{} file(s) were not uploaded first (e.g. {})",
        missing.len(),
        paths.join(", ")
    )
}

/// A log position from a client: a sequence number, which the API documents as a signed
/// 64-bit integer (JSON clients cannot hold more).
pub fn log_cursor(after: u64) -> Result<u64> {
    if after > i64::MAX as u64 {
        return Err(Error::invalid(format!(
            "log position {after} is past the largest sequence number ({})",
            i64::MAX
        )));
    }
    Ok(after)
}

fn page_limit(limit: Option<usize>, default: usize) -> Result<usize> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(Error::invalid(format!(
            "limit {n} is out of range 1..={MAX_PAGE}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{sample_job, RecordingLauncher};
    use crate::MemoryStore;

    /// Jobs of two projects and two targets, listed by project and target a page at a time:
    /// every matching job once, newest first, whatever the page size.
    #[tokio::test]
    async fn jobs_are_listed_by_project_and_target_across_pages() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let service = JobService::new(
            store.clone(),
            Arc::new(RecordingLauncher::new(store.clone())),
        );
        let mut want = vec![];
        for i in 0..9 {
            let mut job = sample_job();
            job.project = Some(if i % 3 == 0 { "shop" } else { "other" }.to_string());
            job.target = Some(if i % 2 == 0 { "dev" } else { "prod" }.to_string());
            let job = store.create_job(&job).await.unwrap();
            if i % 3 == 0 && i % 2 == 0 {
                want.push(job.id);
            }
        }
        want.reverse();
        for limit in [1, 2, 5] {
            let (mut got, mut token) = (vec![], None);
            loop {
                let query = ListJobs {
                    project: Some("shop".into()),
                    target: Some("dev".into()),
                    limit: Some(limit),
                    page_token: token,
                    ..Default::default()
                };
                let page = service.list(&query).await.unwrap();
                assert!(page.jobs.len() <= limit);
                got.extend(page.jobs.iter().map(|j| j.id));
                match page.next_page_token {
                    Some(t) => token = Some(t.parse().unwrap()),
                    None => break,
                }
            }
            assert_eq!(got, want, "limit {limit}");
        }
        let other = ListJobs {
            project: Some("nope".into()),
            ..Default::default()
        };
        let page = service.list(&other).await.unwrap();
        assert!(page.jobs.is_empty() && page.next_page_token.is_none());
    }
}
