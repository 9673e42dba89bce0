//! `Schedule`: a schedule as the server showed it (`Client.create_schedule`, `schedule`,
//! `list_schedules`).

use dbt_remote_core::api::ScheduleInfo;
use pyo3::prelude::*;

/// A schedule on the server: a dbt command run whenever `cron` (five fields, UTC) matches, on
/// the project files stored when it was created. Times are RFC 3339 strings.
#[pyclass(module = "dbt_remote._native", frozen, get_all)]
pub struct Schedule {
    /// Unique; the key of the other schedule calls.
    pub name: String,
    pub id: String,
    pub cron: String,
    /// The cron expression in words, e.g. "At 08:00.".
    pub description: String,
    /// The dbt command as written at creation.
    pub command: String,
    /// dbt's arguments, subcommand first.
    pub args: Vec<String>,
    /// Number of project files every run gets.
    pub file_count: usize,
    pub created_at: String,
    pub next_run: Option<String>,
    pub last_run: Option<String>,
    /// The id of the job it last submitted.
    pub last_job: Option<String>,
    /// The environment each run is a job of, when it names one.
    pub environment: Option<String>,
}

impl From<ScheduleInfo> for Schedule {
    fn from(s: ScheduleInfo) -> Self {
        Schedule {
            name: s.name,
            id: s.id.to_string(),
            cron: s.cron,
            description: s.description,
            command: s.command,
            args: s.args,
            file_count: s.file_count,
            created_at: s.created_at.to_rfc3339(),
            next_run: s.next_run.map(|t| t.to_rfc3339()),
            last_run: s.last_run.map(|t| t.to_rfc3339()),
            last_job: s.last_job.map(|j| j.to_string()),
            environment: s.environment,
        }
    }
}

#[pymethods]
impl Schedule {
    fn __repr__(&self) -> String {
        format!("Schedule({:?}, cron={:?})", self.name, self.cron)
    }
}
