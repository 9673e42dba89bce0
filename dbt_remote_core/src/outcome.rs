//! How a job ended, in one type: what the CLI prints and exits with, what Python raises, what
//! the server's `run-job` exits with.
//!
//! ```
//! use dbt_remote_core::outcome::{JobEnd, JobOutcome};
//! use dbt_remote_core::{JobId, JobStatus};
//!
//! let id = JobId::new();
//! let failed = JobOutcome::new(id, JobStatus::Failed, Some(1), Some("dbt exited with code 1"));
//! assert_eq!(failed.end, JobEnd::DbtFailed { code: 1 });
//! assert_eq!(failed.to_string(), format!("job {id} failed: dbt exited with code 1"));
//! assert_eq!(failed.exit_code(), 1);
//! let cancelled = JobOutcome::new(id, JobStatus::Cancelled, None, None);
//! assert_eq!(cancelled.exit_code(), 130);
//! assert_eq!(cancelled.run_job_exit_code(), 1);
//! ```

use std::fmt;

use crate::api::Job;
use crate::job::{JobId, JobRecord, JobStatus};

/// Exit status of a job cancelled (Ctrl-C or a cancel request), as a shell reports SIGINT.
pub const EXIT_CANCELLED: u8 = 130;
/// Exit status of a job that failed outside dbt (sysexits' `EX_SOFTWARE`).
pub const EXIT_SOFTWARE: u8 = 70;

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    Succeeded,
    /// Cancelled on request; dbt, if it ran, was interrupted.
    Cancelled,
    /// dbt ran and exited with `code` (1 dbt failure, 2 dbt error).
    DbtFailed {
        code: i32,
    },
    /// The job failed before dbt decided it: the runner died, dbt could not start, …
    FailedOutsideDbt {
        reason: String,
    },
}

/// The end of one job: its id and how it ended.
///
/// `Display` is the line the CLI prints at the end of a job (`job X succeeded`, `job X
/// cancelled`, `job X failed: dbt exited with code N`, `job X failed before dbt finished:
/// REASON`); [`failure`](Self::failure) is the text of the error raised for a job that did not
/// succeed (Python's `JobFailed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    pub id: JobId,
    pub end: JobEnd,
}

impl JobOutcome {
    /// The outcome of a job with these final fields. Meant for a job whose status is final; a
    /// job still queued or running reads as failed outside dbt.
    pub fn new(
        id: JobId,
        status: JobStatus,
        exit_code: Option<i32>,
        failure_reason: Option<&str>,
    ) -> Self {
        let end = match (status, exit_code) {
            (JobStatus::Succeeded, _) => JobEnd::Succeeded,
            (JobStatus::Cancelled, _) => JobEnd::Cancelled,
            (_, Some(code)) => JobEnd::DbtFailed { code },
            _ => JobEnd::FailedOutsideDbt {
                reason: failure_reason.unwrap_or("no reason given").to_string(),
            },
        };
        JobOutcome { id, end }
    }

    /// The outcome of a job as the API shows it.
    pub fn of(job: &Job) -> Self {
        Self::new(
            job.id,
            job.status,
            job.exit_code,
            job.failure_reason.as_deref(),
        )
    }

    /// The outcome of a stored job.
    pub fn of_record(record: &JobRecord) -> Self {
        Self::new(
            record.id,
            record.status,
            record.exit_code,
            record.failure_reason.as_deref(),
        )
    }

    pub fn succeeded(&self) -> bool {
        self.end == JobEnd::Succeeded
    }

    /// The exit status of the `dbt-remote` CLI for this end (docs/cli.md): 0 succeeded,
    /// [`EXIT_CANCELLED`] cancelled, dbt's own code when dbt decided (a code outside 0-255:
    /// [`EXIT_SOFTWARE`]), [`EXIT_SOFTWARE`] when the job failed outside dbt.
    pub fn exit_code(&self) -> u8 {
        match &self.end {
            JobEnd::Succeeded => 0,
            JobEnd::Cancelled => EXIT_CANCELLED,
            JobEnd::DbtFailed { code } => u8::try_from(*code).unwrap_or(EXIT_SOFTWARE),
            JobEnd::FailedOutsideDbt { .. } => EXIT_SOFTWARE,
        }
    }

    /// The exit status of the server's `dbt-server run-job` for this end: 0 succeeded, dbt's
    /// code when it is 1-255, otherwise 1 (cancelled, failed outside dbt, a code out of range).
    pub fn run_job_exit_code(&self) -> u8 {
        match &self.end {
            JobEnd::Succeeded => 0,
            JobEnd::DbtFailed { code } => u8::try_from(*code).unwrap_or(1).max(1),
            JobEnd::Cancelled | JobEnd::FailedOutsideDbt { .. } => 1,
        }
    }

    /// Why the job did not succeed, as an error says it (`job X was cancelled`, `job X failed:
    /// …`); `None` when it succeeded.
    pub fn failure(&self) -> Option<Failure<'_>> {
        (!self.succeeded()).then_some(Failure(self))
    }
}

impl fmt::Display for JobOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.id;
        match &self.end {
            JobEnd::Succeeded => write!(f, "job {id} succeeded"),
            JobEnd::Cancelled => write!(f, "job {id} cancelled"),
            JobEnd::DbtFailed { code } => write!(f, "job {id} failed: dbt exited with code {code}"),
            JobEnd::FailedOutsideDbt { reason } => {
                write!(f, "job {id} failed before dbt finished: {reason}")
            }
        }
    }
}

/// The error text of a job that did not succeed: see [`JobOutcome::failure`].
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a>(&'a JobOutcome);

impl fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.end {
            JobEnd::Cancelled => write!(f, "job {} was cancelled", self.0.id),
            _ => self.0.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_end_has_its_text_and_exit_codes() {
        let id = JobId::new();
        let cases = [
            (JobStatus::Succeeded, Some(0), None, "succeeded", 0, 0, None),
            (
                JobStatus::Cancelled,
                None,
                Some("cancelled on request"),
                "cancelled",
                130,
                1,
                Some("was cancelled"),
            ),
            (
                JobStatus::Failed,
                Some(2),
                None,
                "failed: dbt exited with code 2",
                2,
                2,
                Some("failed: dbt exited with code 2"),
            ),
            (
                JobStatus::Failed,
                Some(300),
                None,
                "failed: dbt exited with code 300",
                70,
                1,
                Some("failed: dbt exited with code 300"),
            ),
            (
                JobStatus::Failed,
                None,
                Some("the runner died"),
                "failed before dbt finished: the runner died",
                70,
                1,
                Some("failed before dbt finished: the runner died"),
            ),
            (
                JobStatus::Failed,
                None,
                None,
                "failed before dbt finished: no reason given",
                70,
                1,
                Some("failed before dbt finished: no reason given"),
            ),
        ];
        for (status, code, reason, text, cli, run_job, failure) in cases {
            let o = JobOutcome::new(id, status, code, reason);
            assert_eq!(o.to_string(), format!("job {id} {text}"));
            assert_eq!(o.exit_code(), cli, "{o}");
            assert_eq!(o.run_job_exit_code(), run_job, "{o}");
            assert_eq!(
                o.failure().map(|f| f.to_string()),
                failure.map(|f| format!("job {id} {f}"))
            );
        }
    }
}
