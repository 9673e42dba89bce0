//! The caps on what one client may make the server hold or write: files and bytes per job
//! (counted per path, so one blob listed under many paths counts each time), schedules, and
//! the entries and unzipped bytes of a 0.4.6 zip. Each is a setting (docs/configuration.md);
//! a request past one is refused before anything is stored ([`Error::TooLarge`], 413).

use crate::{Error, Result};

/// Default most files one job may have.
pub const DEFAULT_MAX_JOB_FILES: usize = 50_000;
/// Default most bytes one job's files may add up to, counted per path (1 GiB).
pub const DEFAULT_MAX_JOB_BYTES: u64 = 1024 * 1024 * 1024;
/// Default most schedules.
pub const DEFAULT_MAX_SCHEDULES: usize = 1_000;
/// Default most entries in a 0.4.6 `zipped_artifacts` zip.
pub const DEFAULT_MAX_ZIP_ENTRIES: usize = 10_000;
/// Default most bytes the entries of a 0.4.6 zip may unzip to (64 MiB).
pub const DEFAULT_MAX_UNZIPPED_BYTES: u64 = 64 * 1024 * 1024;

/// What one job may materialise in its work dir. The service checks it at submit (with the
/// stored size of each blob) and the runner again as it writes (with the real sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLimits {
    /// Most paths in the job's spec.
    pub max_files: usize,
    /// Most bytes written, the sum over the spec's paths of each blob's size.
    pub max_bytes: u64,
}

impl Default for JobLimits {
    fn default() -> Self {
        JobLimits {
            max_files: DEFAULT_MAX_JOB_FILES,
            max_bytes: DEFAULT_MAX_JOB_BYTES,
        }
    }
}

impl JobLimits {
    /// Fails when a job has more than [`max_files`](Self::max_files) files.
    pub fn check_files(&self, count: usize) -> Result<()> {
        check_count("files in the job", count, self.max_files)
    }

    /// A running total of the job's bytes against [`max_bytes`](Self::max_bytes).
    pub fn bytes(&self) -> ByteBudget {
        ByteBudget::new("the job's files", self.max_bytes)
    }
}

/// What a 0.4.6 `zipped_artifacts` zip may hold. Its header's claims are checked and then
/// not trusted: the real sizes are counted as the entries are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZipLimits {
    pub max_entries: usize,
    pub max_unzipped_bytes: u64,
}

impl Default for ZipLimits {
    fn default() -> Self {
        ZipLimits {
            max_entries: DEFAULT_MAX_ZIP_ENTRIES,
            max_unzipped_bytes: DEFAULT_MAX_UNZIPPED_BYTES,
        }
    }
}

impl ZipLimits {
    /// Fails when a zip has more than [`max_entries`](Self::max_entries) entries.
    pub fn check_entries(&self, count: u64) -> Result<()> {
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        check_count("entries in zipped_artifacts", count, self.max_entries)
    }

    /// A running total of the unzipped bytes against the cap.
    pub fn bytes(&self) -> ByteBudget {
        ByteBudget::new("zipped_artifacts unzipped", self.max_unzipped_bytes)
    }
}

/// Every cap of a [`JobService`](crate::JobService).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub job: JobLimits,
    pub zip: ZipLimits,
    /// Most schedules at once.
    pub max_schedules: usize,
}

impl Limits {
    /// The defaults (`Default` gives 0 schedules for `max_schedules`, so use this).
    pub fn new() -> Self {
        Limits {
            job: JobLimits::default(),
            zip: ZipLimits::default(),
            max_schedules: DEFAULT_MAX_SCHEDULES,
        }
    }

    /// Fails when `existing` schedules leave no room for one more.
    pub fn check_new_schedule(&self, existing: usize) -> Result<()> {
        check_count("schedules", existing.saturating_add(1), self.max_schedules)
    }
}

/// A running total of bytes against a limit; [`charge`](Self::charge) fails past it.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    what: &'static str,
    used: u64,
    limit: u64,
}

impl ByteBudget {
    pub fn new(what: &'static str, limit: u64) -> Self {
        ByteBudget {
            what,
            used: 0,
            limit,
        }
    }

    /// Adds `bytes`; [`Error::TooLarge`] when the total passes the limit (nothing overflows,
    /// whatever `bytes` claims).
    pub fn charge(&mut self, bytes: u64) -> Result<()> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(Error::TooLarge {
                what: self.what.into(),
                size: self.used,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// The bytes charged so far.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The bytes left before the limit.
    pub fn left(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
}

/// Fails when `count` things are over `limit`: "101 files in the job, over the limit of 100".
fn check_count(what: &str, count: usize, limit: usize) -> Result<()> {
    if count > limit {
        return Err(Error::TooMany {
            what: what.into(),
            count: count as u64,
            limit: limit as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_past_its_limit_without_overflowing() {
        let mut b = ByteBudget::new("x", 10);
        b.charge(4).unwrap();
        b.charge(6).unwrap();
        assert!(matches!(b.charge(1), Err(Error::TooLarge { size: 11, .. })));
        let mut b = ByteBudget::new("x", 10);
        b.charge(3).unwrap();
        assert!(b.charge(u64::MAX).is_err());
        assert_eq!(b.used(), u64::MAX);
    }

    #[test]
    fn counts_are_checked_against_their_caps() {
        let limits = Limits::new();
        assert!(limits.job.check_files(DEFAULT_MAX_JOB_FILES).is_ok());
        let err = limits
            .job
            .check_files(DEFAULT_MAX_JOB_FILES + 1)
            .unwrap_err();
        assert!(err.to_string().contains("50001 files in the job"), "{err}");
        assert!(limits.check_new_schedule(DEFAULT_MAX_SCHEDULES - 1).is_ok());
        assert!(limits.check_new_schedule(DEFAULT_MAX_SCHEDULES).is_err());
        assert!(limits.zip.check_entries(u64::MAX).is_err());
    }
}
