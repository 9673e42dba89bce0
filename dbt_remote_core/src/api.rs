//! Wire types of dbt-server's HTTP API (`/api/v1`), shared by the server and the client.
//! docs/openapi.json describes the same shapes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::blob::BlobHash;
use crate::job::{FileEntry, JobId, JobMode, JobRecord, JobSpec, JobStatus};
use crate::log::LogRecord;
use crate::paths::RelPath;
use crate::schedule::{Schedule, ScheduleSpec};
use crate::state::ArtifactInfo;
use crate::{Error, Result};

pub mod sse;

/// `POST /api/v1/jobs`: the dbt arguments and the project files, by content address. Every
/// blob must have been uploaded first (`POST /api/v1/blobs/missing` says which are needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    pub args: Vec<String>,
    #[serde(default)]
    pub files: Vec<SubmitFile>,
    /// `manifest` runs dbt from the `manifest.json` among the files instead of parsing sources.
    #[serde(default, skip_serializing_if = "JobMode::is_project")]
    pub mode: JobMode,
    /// Make an Elementary report (`edr report`) after the dbt command, stored as the artifact
    /// `elementary_report.html` (docs/elementary.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub elementary: bool,
    /// The environment the job runs for (`prod`, `ci`, …: 1 to 64 letters, digits, `_`, `.`,
    /// `-`); the jobs list filters by it, and later jobs defer to it or retry its failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Run with the `manifest.json` of the latest succeeded job of the same project in this
    /// environment as dbt's state (`--state`; the job's own `--defer` stays as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defer_to: Option<String>,
    /// For a `retry` job: the failed job whose `run_results.json` and `manifest.json` dbt
    /// retries from. Default: the latest failed job of the same project and environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<JobId>,
    /// Run on the files (and the mode) of this earlier job instead of files sent with the
    /// request (`files` must be empty): the server holds every blob of them, so nothing is
    /// uploaded. `Job.retry()` in Python retries a job this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_of: Option<JobId>,
}

/// Where a submitted job's dbt state comes from: an earlier job's artifacts, which the server
/// places in the job's state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateFrom {
    /// The job's own files (a `--manifest` sent with it, or none).
    Own,
    /// The manifest of the latest succeeded job of the same project in this environment.
    DeferTo(String),
    /// The run results and manifest of this failed job, or (`None`) of the latest failed job
    /// of the same project and environment.
    Retry(Option<JobId>),
}

/// One file of a [`SubmitJob`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitFile {
    /// Relative `/`-separated path in the project.
    pub path: String,
    /// SHA-256 of the content, 64 lowercase hex digits.
    pub sha256: String,
    /// What the entry is: only `file` is accepted (symlinks, directories and devices are not
    /// sent; the client resolves or refuses them).
    #[serde(default = "file_kind")]
    pub kind: String,
}

fn file_kind() -> String {
    "file".into()
}

impl SubmitJob {
    /// Checks every field and turns the request into a job spec and where its state comes
    /// from; the error says what is wrong.
    pub fn into_parts(self) -> Result<(JobSpec, StateFrom)> {
        let (defer_to, retry_of) = (self.defer_to.clone(), self.retry_of);
        if self.files_of.is_some() && !self.files.is_empty() {
            return Err(Error::invalid(
                "files_of runs on an earlier job's files: send no files with it",
            ));
        }
        let spec = self.into_spec()?;
        let retry = spec.command() == Some("retry");
        let from = match (defer_to, retry_of) {
            (Some(_), _) if retry => {
                return Err(Error::invalid(
                    "a retry job takes the state of the job it retries: drop defer_to",
                ))
            }
            (Some(env), _) => {
                crate::job::check_environment(&env)?;
                StateFrom::DeferTo(env)
            }
            (None, Some(_)) if !retry => {
                return Err(Error::invalid("retry_of is only for the dbt command retry"))
            }
            (None, id) if retry && !spec_sets_state(&spec) => StateFrom::Retry(id),
            (None, _) => StateFrom::Own,
        };
        Ok((spec, from))
    }

    /// Checks every field but `defer_to`, `retry_of` and `files_of` and turns the request into a job spec;
    /// the error says what is wrong.
    pub fn into_spec(self) -> Result<JobSpec> {
        let files = self
            .files
            .into_iter()
            .map(|f| {
                if f.kind != "file" {
                    return Err(Error::invalid(format!(
                        "{:?} is a {}: only regular files can be uploaded",
                        f.path, f.kind
                    )));
                }
                Ok(FileEntry {
                    path: RelPath::new(f.path)?,
                    sha256: f.sha256.parse()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let spec = JobSpec {
            args: self.args,
            files,
            mode: self.mode,
            client_profiles: false,
            elementary: self.elementary,
            environment: self.environment,
            state_of: None,
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Whether dbt's arguments name a `--state` of their own (a retry that reads its own files).
fn spec_sets_state(spec: &JobSpec) -> bool {
    spec.args
        .iter()
        .any(|a| a == "--state" || a.starts_with("--state="))
}

/// `POST /api/v1/schedules`: a cron expression and the job to run whenever it matches, given
/// as `POST /api/v1/jobs` takes it (`args`, `files`, `mode`: the same checks apply). Every
/// blob must have been uploaded first; each run uses exactly these files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Unique; 1 to 100 letters, digits, `-` and `_`. Default `dbt-server-<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Five fields (minute hour day-of-month month day-of-week), in UTC.
    pub cron: String,
    /// The dbt command as the user wrote it, for display. Default: `args` joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub args: Vec<String>,
    #[serde(default)]
    pub files: Vec<SubmitFile>,
    #[serde(default, skip_serializing_if = "JobMode::is_project")]
    pub mode: JobMode,
    /// Each run makes an Elementary report, as [`SubmitJob::elementary`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub elementary: bool,
    /// Each run is a job of this environment, as [`SubmitJob::environment`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

impl CreateSchedule {
    /// Checks every field as [`SubmitJob::into_spec`] does and turns the request into a
    /// schedule spec; the error says what is wrong. (The cron and the name are checked by
    /// [`Schedule::new`].)
    pub fn into_spec(self) -> Result<ScheduleSpec> {
        let job = SubmitJob {
            args: self.args,
            files: self.files,
            mode: self.mode,
            elementary: self.elementary,
            environment: self.environment,
            defer_to: None,
            retry_of: None,
            files_of: None,
        }
        .into_spec()?;
        Ok(ScheduleSpec {
            name: self.name,
            cron: self.cron,
            command: self.command,
            job,
        })
    }
}

/// A schedule, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    pub name: String,
    pub id: Uuid,
    pub cron: String,
    /// The cron expression in words, e.g. "At 08:00.".
    pub description: String,
    /// The dbt command as the user wrote it.
    pub command: String,
    /// dbt's arguments, subcommand first.
    pub args: Vec<String>,
    /// Number of project files every run gets.
    pub file_count: usize,
    pub created_at: DateTime<Utc>,
    /// When the cron next matches (UTC); absent if it never will.
    pub next_run: Option<DateTime<Utc>>,
    /// When the schedule last submitted a job.
    pub last_run: Option<DateTime<Utc>>,
    /// The job it last submitted.
    pub last_job: Option<JobId>,
    /// The environment each run is a job of, when it names one.
    #[serde(default)]
    pub environment: Option<String>,
}

impl From<&Schedule> for ScheduleInfo {
    fn from(s: &Schedule) -> Self {
        ScheduleInfo {
            name: s.name.clone(),
            id: s.id,
            cron: s.cron.clone(),
            description: s.describe(),
            command: s.command.clone(),
            args: s.spec.args.clone(),
            file_count: s.spec.files.len(),
            created_at: s.created_at,
            next_run: s.next_run().ok(),
            last_run: s.last_run,
            last_job: s.last_job,
            environment: s.spec.environment.clone(),
        }
    }
}

/// `GET /api/v1/schedules` answer: every schedule, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleInfo>,
}

/// `POST /api/v1/blobs/missing` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobQuery {
    pub hashes: Vec<BlobHash>,
}

/// `POST /api/v1/blobs/missing` answer: the hashes the server lacks, in the asked order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingBlobs {
    pub missing: Vec<BlobHash>,
}

/// A job, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub status: JobStatus,
    /// dbt's arguments, subcommand first.
    pub args: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// dbt's exit code (0 success, 1 dbt failure, 2 dbt error), once dbt has run.
    pub exit_code: Option<i32>,
    pub failure_reason: Option<String>,
    pub cancel_requested: bool,
    /// Number of project files the job was submitted with.
    pub file_count: usize,
    /// `manifest` for a job run from a compiled manifest; absent for the default `project`.
    #[serde(default, skip_serializing_if = "JobMode::is_project")]
    pub mode: JobMode,
    /// The dbt project's name, when its files name one plainly.
    #[serde(default)]
    pub project: Option<String>,
    /// The dbt target, when the arguments or the profile's default name one.
    #[serde(default)]
    pub target: Option<String>,
    /// Whether the job makes an Elementary report after dbt (the artifact
    /// `elementary_report.html`, when `edr` wrote one).
    #[serde(default)]
    pub elementary: bool,
    /// The environment the job runs for, when it names one.
    #[serde(default)]
    pub environment: Option<String>,
    /// The earlier job whose artifacts were the job's dbt state (`defer_to`, `retry`).
    #[serde(default)]
    pub state_of: Option<JobId>,
}

impl From<JobRecord> for Job {
    fn from(r: JobRecord) -> Self {
        Job {
            id: r.id,
            status: r.status,
            file_count: r.spec.files.len(),
            mode: r.spec.mode,
            elementary: r.spec.elementary,
            environment: r.spec.environment,
            state_of: r.spec.state_of,
            args: r.spec.args,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            exit_code: r.exit_code,
            failure_reason: r.failure_reason,
            cancel_requested: r.cancel_requested,
            project: r.project,
            target: r.target,
        }
    }
}

/// `GET /api/v1/jobs` answer: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<Job>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `GET /api/v1/jobs/{id}/logs` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogPage {
    pub records: Vec<LogRecord>,
    /// Pass as `after` to read on: the last returned sequence number (or the given `after`).
    pub next_after: u64,
    /// The job's status when the records were read.
    pub status: JobStatus,
    /// True when the job had ended and these are its last records.
    pub done: bool,
}

/// `GET /api/v1/jobs/{id}/artifacts` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactList {
    pub artifacts: Vec<ArtifactInfo>,
}

/// Body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// `GET /health` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
}

pub use sse::{
    sse_event, sse_log_event, SSE_EVENT_END, SSE_EVENT_ERROR, SSE_EVENT_LOG, SSE_HEARTBEAT,
};

impl ErrorBody {
    /// The body of an error answer.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}
