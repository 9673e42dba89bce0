//! Wire types of dbt-server's HTTP API (`/api/v1`), shared by the server and the client.
//! docs/openapi.json describes the same shapes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::blob::BlobHash;
use crate::job::{FileEntry, JobId, JobMode, JobRecord, JobSpec, JobStatus};
use crate::log::LogRecord;
use crate::paths::RelPath;
use crate::state::ArtifactInfo;
use crate::{Error, Result};

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
    /// Checks every field and turns the request into a job spec; the error says what is wrong.
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
        };
        spec.validate()?;
        Ok(spec)
    }
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
}

impl From<JobRecord> for Job {
    fn from(r: JobRecord) -> Self {
        Job {
            id: r.id,
            status: r.status,
            file_count: r.spec.files.len(),
            mode: r.spec.mode,
            args: r.spec.args,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            exit_code: r.exit_code,
            failure_reason: r.failure_reason,
            cancel_requested: r.cancel_requested,
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

/// Server-Sent Events of `GET /api/v1/jobs/{id}/logs/stream`: event `log` carries a
/// [`LogRecord`] with the event id set to its sequence number; event `end` carries the final
/// [`Job`] and closes the stream.
pub const SSE_EVENT_LOG: &str = "log";
pub const SSE_EVENT_END: &str = "end";

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
