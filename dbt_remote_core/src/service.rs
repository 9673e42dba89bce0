//! The operations of dbt-server, over a [`StateStore`], a [`JobLauncher`] and a
//! [`ScheduleStore`]. The HTTP server only translates requests into these calls (the 0.4.6
//! protocol through [`compat`](crate::compat), which calls these too).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{ArtifactList, CreateSchedule, Job, JobList, LogPage, MissingBlobs, SubmitJob};
use crate::blob::BlobHash;
use crate::containment::{check_project_file, is_checked_file};
use crate::job::{FileEntry, JobId, JobRecord, JobSpec, JobStatus};
use crate::launcher::JobLauncher;
use crate::limits::Limits;
use crate::log::LogEntry;
use crate::paths::RelPath;
use crate::schedule::{
    LoopTrigger, MemorySchedules, Schedule, ScheduleSpec, ScheduleStore, ScheduleStoreExt,
    ScheduleTrigger,
};
use crate::state::{FollowEvent, JobPage, JobQuery, LogHub, StateStore};
use crate::{Error, Result};

mod earlier;

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
        self.limits.job.check_files(spec.files.len())?;
        let missing = self.missing_files(&spec).await?;
        if !missing.is_empty() {
            return Err(Error::invalid(not_uploaded(&missing)));
        }
        let spec = self.with_state_of(spec, from).await?;
        self.submit_spec(spec, &[]).await
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

    /// Stores a new schedule (its files must be stored already). Fails with
    /// [`Error::AlreadyExists`] when the name is taken, and past [`Limits::max_schedules`]
    /// or [`Limits::job`].
    pub async fn create_schedule(&self, spec: ScheduleSpec) -> Result<Schedule> {
        spec.job.validate()?;
        self.check_room_for_schedule().await?;
        self.check_job_size(&spec.job).await?;
        let schedule = Schedule::new(spec)?;
        self.schedules.create_schedule(&schedule).await?;
        // No schedule without its trigger: a trigger that cannot be made undoes the create.
        if let Err(e) = self.trigger.on_created(&schedule).await {
            if let Err(undo) = self.schedules.delete_schedule(&schedule.name).await {
                tracing::error!(schedule = %schedule.name, "could not remove the schedule whose trigger failed: {undo}");
            }
            return Err(e);
        }
        Ok(schedule)
    }

    /// Fails when there are [`Limits::max_schedules`] schedules already. (Concurrent creates
    /// may each see room for one: the cap may be passed by as many.)
    pub async fn check_room_for_schedule(&self) -> Result<()> {
        let existing = self.schedules.list_schedules().await?.len();
        self.limits.check_new_schedule(existing)
    }

    /// Every schedule, by name.
    pub async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        self.schedules.list_schedules().await
    }

    pub async fn schedule(&self, id: Uuid) -> Result<Schedule> {
        self.schedules
            .list_schedules()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::not_found(format!("schedule {id}")))
    }

    /// The schedule of that name; [`Error::NotFound`] for an unknown (or impossible) name.
    pub async fn schedule_named(&self, name: &str) -> Result<Schedule> {
        let unknown = || Error::not_found(format!("schedule {name:?}"));
        crate::schedule::check_name(name).map_err(|_| unknown())?;
        self.schedules.get_schedule(name).await
    }

    /// Checks a native `POST /api/v1/schedules` request as a job submit is checked (arguments,
    /// files uploaded, project files contained, size) and stores the schedule. Nothing is
    /// stored when it is refused.
    pub async fn create_schedule_from(&self, request: CreateSchedule) -> Result<Schedule> {
        let spec = request.into_spec()?;
        self.limits.job.check_files(spec.job.files.len())?;
        let missing = self.missing_files(&spec.job).await?;
        if !missing.is_empty() {
            return Err(Error::invalid(format!(
                "{}: upload them with PUT /api/v1/blobs/{{sha256}}",
                not_uploaded(&missing)
            )));
        }
        self.check_project_files(&spec.job).await?;
        self.create_schedule(spec).await
    }

    /// Submits the job of the schedule of that name now, with the files stored at its creation.
    pub async fn run_schedule_named(&self, name: &str) -> Result<Job> {
        let schedule = self.schedule_named(name).await?;
        self.run_schedule_now(schedule.id).await
    }

    /// Deletes the schedule of that name and its trigger; `false` when there was none.
    pub async fn delete_schedule(&self, name: &str) -> Result<bool> {
        let existed = self.schedules.delete_schedule(name).await?;
        self.trigger.on_deleted(name).await?;
        Ok(existed)
    }

    /// Submits a schedule's job now, outside its cron (claims no occurrence), and records the
    /// run.
    pub async fn run_schedule_now(&self, id: Uuid) -> Result<Job> {
        let schedule = self.schedule(id).await?;
        self.submit_for(&schedule, Utc::now()).await
    }

    /// Runs the occurrence `at` of the schedule `name` (what Cloud Scheduler calls, with `at`
    /// from its `X-CloudScheduler-ScheduleTime` header): `Some(job)` when this call won the
    /// occurrence and submitted its job, `None` when the occurrence (or a later one) ran
    /// already, so a retried call never runs it twice. `at` must be a time the cron matches,
    /// not in the future (beyond a minute of clock skew), else [`Error::InvalidInput`].
    pub async fn run_schedule_occurrence(
        &self,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Job>> {
        let now = Utc::now();
        let schedule = self.schedules.get_schedule(name).await?;
        if !schedule.is_occurrence(at) {
            return Err(Error::invalid(format!(
                "{} is not a time at which schedule {name} runs ({})",
                at.to_rfc3339(),
                schedule.cron
            )));
        }
        if at > now + chrono::Duration::seconds(MAX_CLOCK_SKEW_SECONDS) {
            return Err(Error::invalid(format!(
                "the occurrence {} of schedule {name} is in the future",
                at.to_rfc3339()
            )));
        }
        self.fire(name, at, now).await
    }

    /// Claims `occurrence` and, if this caller won, submits the schedule's job.
    async fn fire(
        &self,
        name: &str,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Job>> {
        // The claim is stored first: a failing submit does not fire again at every tick, and
        // a second server (or a retried call) sees the occurrence taken.
        let Some(schedule) = self
            .schedules
            .claim_occurrence(name, occurrence, now)
            .await?
        else {
            return Ok(None);
        };
        self.submit_for(&schedule, now).await.map(Some)
    }

    /// Submits the schedule's job and records it as the schedule's last.
    async fn submit_for(&self, schedule: &Schedule, now: DateTime<Utc>) -> Result<Job> {
        let job = self.submit_spec(schedule.spec.clone(), &[]).await?;
        self.schedules
            .record_job(&schedule.name, job.id, now)
            .await?;
        tracing::info!(schedule = %schedule.name, job = %job.id, "scheduled job submitted");
        Ok(job)
    }

    /// Submits the job of every schedule whose next run is at or before `now`, once per
    /// occurrence however many servers share the schedule store. A schedule that missed
    /// several runs (the server was down) runs once, for its latest occurrence.
    pub async fn run_due_schedules(&self, now: DateTime<Utc>) -> Result<Vec<JobId>> {
        let mut started = Vec::new();
        for schedule in self.schedules.list_schedules().await? {
            let occurrence = match schedule.due_occurrence(now) {
                Ok(Some(at)) => at,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            };
            let name = schedule.name;
            match self.fire(&name, occurrence, now).await {
                Ok(Some(job)) => started.push(job.id),
                Ok(None) => {}                    // another server ran it
                Err(Error::NotFound { .. }) => {} // deleted meanwhile
                Err(e) => tracing::error!(schedule = %name, "scheduled job failed to start: {e}"),
            }
        }
        Ok(started)
    }

    /// Brings the triggers in step with the stored schedules (at server start).
    pub async fn reconcile_triggers(&self) -> Result<()> {
        let all = self.schedules.list_schedules().await?;
        self.trigger.reconcile(&all).await
    }
}

/// Seconds an occurrence given to [`JobService::run_schedule_occurrence`] may lie ahead of
/// this server's clock.
const MAX_CLOCK_SKEW_SECONDS: i64 = 60;

/// The scheduler: fires due schedules every `interval` until `stop` is cancelled. Returns at
/// once when the service's trigger fires schedules from outside the server.
pub async fn run_scheduler(service: JobService, interval: Duration, stop: CancellationToken) {
    if !service.trigger.fires_in_server() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = service.run_due_schedules(Utc::now()).await {
            tracing::error!("could not read the schedules: {e}");
        }
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
    use crate::testing::{sample_job, sample_schedule, RecordingLauncher};
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

    #[tokio::test]
    async fn a_due_schedule_fires_once_per_occurrence() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let launcher = Arc::new(RecordingLauncher::new(store.clone()));
        let service = JobService::new(store, launcher.clone())
            .with_schedules(Arc::new(MemorySchedules::new()));
        let mut s = sample_schedule("every-minute");
        s.cron = "* * * * *".into();
        s.created_at = "2026-11-24T10:00:30Z".parse().unwrap();
        service.schedules().create_schedule(&s).await.unwrap();
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();

        let due = |t: &'static str| {
            let service = service.clone();
            async move { service.run_due_schedules(at(t)).await.unwrap() }
        };

        assert!(due("2026-11-24T10:00:59Z").await.is_empty());
        let fired = due("2026-11-24T10:01:00Z").await;
        assert_eq!(fired.len(), 1);
        assert!(due("2026-11-24T10:01:30Z").await.is_empty());
        // Down for an hour: one catch-up run, not sixty.
        let fired = due("2026-11-24T11:02:10Z").await;
        assert_eq!(fired.len(), 1);
        assert_eq!(launcher.launched().len(), 2);
        let stored = &service.schedules().list_schedules().await.unwrap()[0];
        assert_eq!(stored.last_job, Some(fired[0]));
        assert_eq!(stored.last_run, Some(at("2026-11-24T11:02:10Z")));
    }

    /// Two servers (two services, each with its own `LocalSchedules` on one folder) tick the
    /// same schedule at the same times: one job per occurrence.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_servers_on_one_schedule_folder_run_each_occurrence_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let launcher = Arc::new(RecordingLauncher::new(store.clone()));
        let server = || {
            let schedules = crate::schedule::LocalSchedules::new(dir.path()).unwrap();
            JobService::new(store.clone(), launcher.clone()).with_schedules(Arc::new(schedules))
        };
        let (a, b) = (server(), server());
        let mut s = sample_schedule("every-minute");
        s.cron = "* * * * *".into();
        s.created_at = "2026-11-24T10:00:30Z".parse().unwrap();
        a.schedules().create_schedule(&s).await.unwrap();
        let mut fired = 0;
        for minute in 1..=5 {
            let now: DateTime<Utc> = format!("2026-11-24T10:0{minute}:00.2Z").parse().unwrap();
            let ticks = [a.clone(), b.clone(), a.clone(), b.clone()].map(|service| {
                tokio::spawn(async move { service.run_due_schedules(now).await.unwrap() })
            });
            for tick in ticks {
                fired += tick.await.unwrap().len();
            }
            assert_eq!(fired, minute, "one job per occurrence up to 10:0{minute}");
        }
        assert_eq!(launcher.launched().len(), 5);
    }

    /// Cloud Scheduler's call for an occurrence, retried: one job; times that are no
    /// occurrence, or in the future, are refused and change nothing.
    #[tokio::test]
    async fn an_occurrence_called_twice_runs_once() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let launcher = Arc::new(RecordingLauncher::new(store.clone()));
        let service = JobService::new(store, launcher.clone());
        let mut s = sample_schedule("hourly");
        s.cron = "0 * * * *".into();
        service.schedules().create_schedule(&s).await.unwrap();
        let hour = |h: i64| {
            let now = Utc::now().timestamp();
            DateTime::from_timestamp(now - now % 3600 + h * 3600, 0).unwrap()
        };
        let first = service.run_schedule_occurrence("hourly", hour(0)).await;
        let job = first.unwrap().expect("the first call runs the occurrence");
        assert!(service
            .run_schedule_occurrence("hourly", hour(0))
            .await
            .unwrap()
            .is_none());
        assert!(service
            .run_schedule_occurrence("hourly", hour(-1))
            .await
            .unwrap()
            .is_none());
        for bad in [hour(0) + chrono::Duration::minutes(7), hour(2)] {
            let err = service
                .run_schedule_occurrence("hourly", bad)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        }
        let err = service.run_schedule_occurrence("nope", hour(0)).await;
        assert!(matches!(err.unwrap_err(), Error::NotFound { .. }));
        assert_eq!(launcher.launched(), [job.id]);
        let stored = service.schedules().get_schedule("hourly").await.unwrap();
        assert_eq!(stored.last_job, Some(job.id));
        assert_eq!(stored.last_occurrence, Some(hour(0)));
    }

    #[tokio::test]
    async fn a_schedule_runs_now_by_id() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let launcher = Arc::new(RecordingLauncher::new(store.clone()));
        let service = JobService::new(store, launcher.clone());
        let s = service
            .create_schedule(ScheduleSpec {
                name: Some("nightly".into()),
                cron: "0 8 * * *".into(),
                command: None,
                job: JobSpec {
                    args: vec!["build".into()],
                    ..Default::default()
                },
            })
            .await
            .unwrap();
        assert_eq!(s.command, "build");
        let job = service.run_schedule_now(s.id).await.unwrap();
        assert_eq!(launcher.launched(), [job.id]);
        assert_eq!(service.schedule(s.id).await.unwrap().last_job, Some(job.id));
        let err = service.run_schedule_now(Uuid::now_v7()).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        assert!(service.delete_schedule("nightly").await.unwrap());
        assert!(service.list_schedules().await.unwrap().is_empty());
    }
}
