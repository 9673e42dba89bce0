//! The 0.4.6 wire protocol of the original dbt-remote (`gcp-dbt-remote` on PyPI), as an
//! adapter over the native [`JobService`]: a `POST /dbt` form becomes a [`JobMode::Manifest`]
//! job, a `POST /schedule` form a native schedule, logs are read back as the tab-separated lines
//! that CLI prints, and statuses are mapped onto the four it knows. docs/compat.md describes the
//! protocol.
//!
//! [`JobMode::Manifest`]: crate::job::JobMode::Manifest

use chrono::SecondsFormat;
use uuid::Uuid;

use crate::api::Job;
use crate::job::{JobId, JobRecord, JobStatus};
use crate::log::{LogEntry, LogLevel, LogRecord};
use crate::schedule::{Schedule, ScheduleSpec};
use crate::service::JobService;
use crate::{Error, Result};

mod form;
mod log_body;
mod unzip;

pub use form::{legacy_job, LegacyForm, LegacyJob, LegacyPolicy};
pub use log_body::{legacy_logs_body, LOG_BODY_PAGE};

/// What `GET /version` answers: the protocol version the 0.4.6 CLI insists on (dbt-remote's
/// own version is in `GET /health`).
pub const PROTOCOL_VERSION: &str = "0.4.6";

/// The name of the `last_logs` read cursor in
/// [`JobRecord::reader_cursors`](crate::job::JobRecord::reader_cursors).
const LAST_LOGS_READER: &str = "last_logs";

/// Most lines one `last_logs` answer carries; the rest come with the next poll.
const MAX_LINES_PAGE: usize = 10_000;

/// The 0.4.6 protocol's operations, over a [`JobService`].
#[derive(Debug, Clone)]
pub struct LegacyService {
    service: JobService,
    policy: LegacyPolicy,
}

impl LegacyService {
    pub fn new(service: JobService, policy: LegacyPolicy) -> Self {
        LegacyService { service, policy }
    }

    /// The native service underneath.
    pub fn service(&self) -> &JobService {
        &self.service
    }

    /// Stores and launches the job of a `POST /dbt` form.
    pub async fn submit(&self, form: &LegacyForm) -> Result<Job> {
        let job = legacy_job(form, &self.policy)?;
        self.check_job_size(&job)?;
        self.store_files(&job).await?;
        let notes: Vec<LogEntry> = job
            .notes
            .into_iter()
            .map(|n| LogEntry::remote(LogLevel::Warn, n))
            .collect();
        self.service.submit_spec(job.spec, &notes).await
    }

    /// Stores the files and the schedule of a `POST /schedule` form.
    pub async fn create_schedule(&self, form: &LegacyForm) -> Result<Schedule> {
        let cron = form
            .schedule
            .as_deref()
            .ok_or_else(|| Error::invalid("form field schedule is missing"))?;
        let job = legacy_job(form, &self.policy)?;
        let spec = ScheduleSpec {
            name: form.schedule_name.clone(),
            cron: cron.to_string(),
            command: Some(job.command.clone()),
            job: job.spec.clone(),
        };
        // Checked before any file is stored.
        Schedule::new(spec.clone())?;
        self.check_job_size(&job)?;
        self.service.check_room_for_schedule().await?;
        self.store_files(&job).await?;
        self.service.create_schedule(spec).await
    }

    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<Schedule>> {
        self.service.list_schedules().await
    }

    /// Deletes the schedule of that name; `false` when there was none.
    pub async fn delete_schedule(&self, name: &str) -> Result<bool> {
        self.service.delete_schedule(name).await
    }

    /// Submits a schedule's job now.
    pub async fn start_schedule(&self, id: Uuid) -> Result<Job> {
        self.service.run_schedule_now(id).await
    }

    /// The service's job caps, checked on the form's files before any is stored.
    fn check_job_size(&self, job: &LegacyJob) -> Result<()> {
        let limits = &self.service.limits().job;
        limits.check_files(job.spec.files.len())?;
        let mut bytes = limits.bytes();
        job.blobs
            .iter()
            .try_for_each(|blob| bytes.charge(blob.len() as u64))
    }

    async fn store_files(&self, job: &LegacyJob) -> Result<()> {
        for (file, content) in job.spec.files.iter().zip(&job.blobs) {
            self.service
                .store()
                .put_blob(&file.sha256, content.clone())
                .await?;
        }
        Ok(())
    }

    /// The 0.4.6 status word of a job.
    pub async fn status(&self, id: JobId) -> Result<&'static str> {
        Ok(legacy_status(
            self.service.store().get_job(id).await?.status,
        ))
    }

    /// Every line of a job's log, as the JSON body of a [`LegacyLogs`] in chunks of
    /// [`LOG_BODY_PAGE`] records (read as they are sent: memory stays bounded however long
    /// the log). [`Error::NotFound`] for an unknown job, before any chunk.
    pub async fn logs(
        &self,
        id: JobId,
    ) -> Result<impl futures::Stream<Item = Result<bytes::Bytes>> + Send + 'static> {
        let store = self.service.store();
        // Status first: records read after a final status are the last ones.
        let job = store.get_job(id).await?;
        Ok(legacy_logs_body(store.clone(), id, job.status))
    }

    /// The lines no earlier `last_logs` call returned for this job (a read cursor kept in the
    /// job record, moved with compare-and-set, so concurrent callers never get a line twice).
    pub async fn last_logs(&self, id: JobId) -> Result<LegacyLogs> {
        let store = self.service.store();
        loop {
            let mut job = store.get_job(id).await?;
            let records = store
                .read_logs(id, last_logs_cursor(&job), MAX_LINES_PAGE)
                .await?;
            // More records than one page: the job is not over for this reader yet.
            let status = if records.len() == MAX_LINES_PAGE && job.status.is_final() {
                JobStatus::Running
            } else {
                job.status
            };
            let Some(last) = records.last() else {
                return Ok(legacy_answer(id, status, &[]));
            };
            job.reader_cursors.insert(LAST_LOGS_READER.into(), last.seq);
            match store.update_job(&job).await {
                Ok(_) => return Ok(legacy_answer(id, status, &records)),
                Err(Error::Precondition { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

fn last_logs_cursor(job: &JobRecord) -> u64 {
    job.reader_cursors
        .get(LAST_LOGS_READER)
        .copied()
        .unwrap_or(0)
}

/// The status word of the 0.4.6 protocol: a cancelled job is `failed` there.
pub fn legacy_status(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "pending",
        JobStatus::Running => "running",
        JobStatus::Succeeded => "success",
        JobStatus::Failed | JobStatus::Cancelled => "failed",
    }
}

/// A record as the 0.4.6 CLI prints it: `TIME<TAB>LEVEL<TAB>message`, one line per line of
/// the message.
pub fn push_legacy_lines(record: &LogRecord, lines: &mut Vec<String>) {
    let entry: &LogEntry = &record.entry;
    let time = entry.time.to_rfc3339_opts(SecondsFormat::Secs, true);
    let level = match entry.level {
        LogLevel::Debug => "DEBUG",
        LogLevel::Info => "INFO",
        LogLevel::Warn => "WARNING",
        LogLevel::Error => "ERROR",
    };
    for line in entry.message.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        lines.push(format!("{time}\t{level}\t{line}"));
    }
}

/// The answer of `GET /job/{uuid}/logs` and `/last_logs`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LegacyLogs {
    pub run_logs: Vec<String>,
    pub run_status: String,
    pub uuid: String,
}

fn legacy_answer(id: JobId, status: JobStatus, records: &[LogRecord]) -> LegacyLogs {
    let mut lines = Vec::new();
    records
        .iter()
        .for_each(|r| push_legacy_lines(r, &mut lines));
    LegacyLogs {
        run_logs: lines,
        run_status: legacy_status(status).into(),
        uuid: id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_tab_separated_without_newlines() {
        let mut entry = LogEntry::remote(LogLevel::Warn, "first\r\nsecond");
        entry.time = "2026-11-23T20:26:15.123Z".parse().unwrap();
        let record = LogRecord { seq: 1, entry };
        let mut lines = vec![];
        push_legacy_lines(&record, &mut lines);
        assert_eq!(
            lines,
            [
                "2026-11-23T20:26:15Z\tWARNING\tfirst",
                "2026-11-23T20:26:15Z\tWARNING\tsecond"
            ]
        );
    }

    #[test]
    fn statuses_map_onto_the_four_of_the_protocol() {
        assert_eq!(legacy_status(JobStatus::Queued), "pending");
        assert_eq!(legacy_status(JobStatus::Succeeded), "success");
        assert_eq!(legacy_status(JobStatus::Cancelled), "failed");
    }
}
