//! The operations of dbt-server, over a [`StateStore`] and a [`JobLauncher`]. The HTTP server
//! only translates requests into these calls.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::api::{self, ArtifactList, Job, JobList, LogPage, MissingBlobs, SubmitJob};
use crate::blob::BlobHash;
use crate::job::{JobId, JobRecord, JobSpec, JobStatus};
use crate::launcher::JobLauncher;
use crate::log::LogEntry;
use crate::paths::RelPath;
use crate::schedule::{MemorySchedules, ScheduleStore};
use crate::state::{follow_logs, FollowEvent, JobQuery, StateStore};
use crate::{Error, Result};

/// Largest page of jobs or log records one call returns.
pub const MAX_PAGE: usize = 1000;

/// dbt-server's operations.
#[derive(Debug, Clone)]
pub struct JobService {
    store: Arc<dyn StateStore>,
    launcher: Arc<dyn JobLauncher>,
    schedules: Arc<dyn ScheduleStore>,
    /// How often a log follower looks for new records.
    pub log_poll: Duration,
}

impl JobService {
    pub fn new(store: Arc<dyn StateStore>, launcher: Arc<dyn JobLauncher>) -> Self {
        JobService {
            store,
            launcher,
            schedules: Arc::new(MemorySchedules::new()),
            log_poll: Duration::from_millis(100),
        }
    }

    /// Keeps schedules in `schedules` (by default in memory).
    pub fn with_schedules(mut self, schedules: Arc<dyn ScheduleStore>) -> Self {
        self.schedules = schedules;
        self
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    pub fn schedules(&self) -> &Arc<dyn ScheduleStore> {
        &self.schedules
    }

    /// Checks the request, stores the job and launches it. Nothing is stored when the request
    /// is refused.
    pub async fn submit(&self, request: SubmitJob) -> Result<Job> {
        let spec = request.into_spec()?;
        let hashes: Vec<BlobHash> = spec.files.iter().map(|f| f.sha256.clone()).collect();
        let missing = self.store.missing_blobs(&hashes).await?;
        if !missing.is_empty() {
            let paths: Vec<&str> = spec
                .files
                .iter()
                .filter(|f| missing.contains(&f.sha256))
                .map(|f| f.path.as_str())
                .take(5)
                .collect();
            return Err(Error::invalid(format!(
                "{} file(s) were not uploaded first (e.g. {}): upload them with PUT /api/v1/blobs/{{sha256}}",
                missing.len(),
                paths.join(", ")
            )));
        }
        self.submit_spec(spec, &[]).await
    }

    /// Stores a checked spec (whose files are all stored) with `notes` as its first log
    /// records, and launches it.
    pub async fn submit_spec(&self, spec: JobSpec, notes: &[LogEntry]) -> Result<Job> {
        spec.validate()?;
        let job = self.store.create_job(&JobRecord::new(spec)).await?;
        if !notes.is_empty() {
            self.store.append_logs(job.id, notes).await?;
        }
        self.launcher.launch(job.id).await?;
        Ok(job.into())
    }

    pub async fn missing_blobs(&self, hashes: &[BlobHash]) -> Result<MissingBlobs> {
        Ok(MissingBlobs {
            missing: self.store.missing_blobs(hashes).await?,
        })
    }

    pub async fn put_blob(&self, hash: &str, content: Bytes) -> Result<()> {
        self.store.put_blob(&hash.parse()?, content).await
    }

    pub async fn job(&self, id: &str) -> Result<Job> {
        Ok(self.store.get_job(job_id(id)?).await?.into())
    }

    /// Jobs newest first; `page_token` is the `next_page_token` of the previous page.
    pub async fn list(
        &self,
        status: Option<&str>,
        limit: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<JobList> {
        let query = JobQuery {
            status: status.map(str::parse::<JobStatus>).transpose()?,
            before: page_token
                .map(|t| {
                    t.parse::<JobId>()
                        .map_err(|_| Error::invalid("invalid page_token"))
                })
                .transpose()?,
            limit: page_limit(limit, 50)?,
        };
        let page = self.store.list_jobs(&query).await?;
        Ok(JobList {
            jobs: page.jobs.into_iter().map(Job::from).collect(),
            next_page_token: page.next.map(|id| id.to_string()),
        })
    }

    pub async fn cancel(&self, id: &str) -> Result<Job> {
        let id = job_id(id)?;
        self.store.get_job(id).await?;
        Ok(self.launcher.cancel(id).await?.into())
    }

    /// Log records after `after`.
    pub async fn logs(&self, id: &str, after: u64, limit: Option<usize>) -> Result<LogPage> {
        let id = job_id(id)?;
        // Status first: records read after a final status are the last ones.
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
        id: &str,
        after: u64,
    ) -> Result<impl futures::Stream<Item = Result<FollowEvent>> + Send + 'static> {
        let id = job_id(id)?;
        self.store.get_job(id).await?;
        Ok(follow_logs(self.store.clone(), id, after, self.log_poll))
    }

    pub async fn artifacts(&self, id: &str) -> Result<ArtifactList> {
        Ok(ArtifactList {
            artifacts: self.store.list_artifacts(job_id(id)?).await?,
        })
    }

    pub async fn artifact(&self, id: &str, name: &str) -> Result<Bytes> {
        let id = job_id(id)?;
        let name = RelPath::new(name)?;
        self.store.get_artifact(id, &name).await
    }

    /// Takes over the jobs left queued or running by a previous server.
    pub async fn recover(&self) -> Result<()> {
        self.launcher.recover().await
    }
}

/// A job id from a URL: one that is not a UUID names no job.
pub(crate) fn job_id(id: &str) -> Result<JobId> {
    id.parse()
        .map_err(|_| Error::not_found(format!("job {id:?}")))
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

/// The error body of an error.
pub fn error_body(code: &str, message: impl Into<String>) -> api::ErrorBody {
    api::ErrorBody {
        error: api::ErrorDetail {
            code: code.into(),
            message: message.into(),
        },
    }
}
