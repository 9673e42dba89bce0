//! dbt-remote's exit status: dbt's own code passed through, or one of sysexits' for what went
//! wrong around dbt (docs/cli.md).

use std::process::ExitCode;

use dbt_remote_core::outcome::{JobEnd, JobOutcome, EXIT_CANCELLED, EXIT_SOFTWARE};
use dbt_remote_core::Error;

/// How dbt-remote exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    /// 64: bad command line, settings or project.
    Usage,
    /// 69: the server could not be reached.
    Unavailable,
    /// 70: the server failed, or the job failed outside dbt (its runner died, dbt could not
    /// start).
    Software,
    /// 77: the server refused the credentials.
    NoPerm,
    /// 130: the job was cancelled (Ctrl-C or `dbt-remote cancel`).
    Cancelled,
    /// dbt's own exit code (1 dbt failure, 2 dbt error, …).
    Dbt(u8),
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Usage => 64,
            ExitStatus::Unavailable => 69,
            ExitStatus::Software => EXIT_SOFTWARE,
            ExitStatus::NoPerm => 77,
            ExitStatus::Cancelled => EXIT_CANCELLED,
            ExitStatus::Dbt(code) => code,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}

/// The exit status of an error of dbt-remote itself.
impl From<&Error> for ExitStatus {
    fn from(e: &Error) -> Self {
        match e {
            Error::InvalidInput(_)
            | Error::TooLarge { .. }
            | Error::TooMany { .. }
            | Error::NotFound { .. } => ExitStatus::Usage,
            Error::Server {
                status: 400..=499, ..
            } => ExitStatus::Usage,
            Error::Unauthenticated(_) => ExitStatus::NoPerm,
            Error::Unreachable { .. } => ExitStatus::Unavailable,
            _ => ExitStatus::Software,
        }
    }
}

/// The exit status of a job's end: dbt's code, or ours when dbt did not decide it (the same
/// numbers as [`JobOutcome::exit_code`]).
impl From<&JobOutcome> for ExitStatus {
    fn from(outcome: &JobOutcome) -> Self {
        match outcome.end {
            JobEnd::Succeeded => ExitStatus::Success,
            JobEnd::Cancelled => ExitStatus::Cancelled,
            JobEnd::DbtFailed { .. } | JobEnd::FailedOutsideDbt { .. } => {
                match outcome.exit_code() {
                    EXIT_SOFTWARE => ExitStatus::Software,
                    code => ExitStatus::Dbt(code),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbt_remote_core::{JobId, JobStatus};

    #[test]
    fn a_job_end_exits_with_the_cores_code() {
        let id = JobId::new();
        for (status, code, want) in [
            (JobStatus::Succeeded, Some(0), ExitStatus::Success),
            (JobStatus::Cancelled, None, ExitStatus::Cancelled),
            (JobStatus::Failed, Some(1), ExitStatus::Dbt(1)),
            (JobStatus::Failed, Some(2), ExitStatus::Dbt(2)),
            (JobStatus::Failed, Some(-1), ExitStatus::Software),
            (JobStatus::Failed, None, ExitStatus::Software),
        ] {
            let outcome = JobOutcome::new(id, status, code, None);
            let status = ExitStatus::from(&outcome);
            assert_eq!(status, want, "{outcome}");
            assert_eq!(status.code(), outcome.exit_code(), "{outcome}");
        }
    }

    #[test]
    fn errors_exit_by_their_variant() {
        let unreachable = Error::unreachable("http://127.0.0.1:9", "connection refused");
        assert_eq!(ExitStatus::from(&unreachable), ExitStatus::Unavailable);
        assert_eq!(ExitStatus::from(&Error::invalid("x")), ExitStatus::Usage);
        assert_eq!(
            ExitStatus::from(&Error::backend("dbt-server", "x")),
            ExitStatus::Software
        );
    }
}
