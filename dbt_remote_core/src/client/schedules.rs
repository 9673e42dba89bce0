//! The schedule calls of [`Client`]: create (packing and uploading the project as a job submit
//! does), list, get, delete and run now, keyed by the schedule's name.

use crate::api::{CreateSchedule, Job, ScheduleInfo, ScheduleList};
use crate::package::JobFiles;
use crate::schedule::{check_name, parse_cron};
use crate::Result;

use super::{pack_project, submit_files, Client, UploadStats};

/// What [`Client::create_schedule`] asks for: run `args` on the project whenever `cron`
/// matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewSchedule {
    /// Unique; letters, digits, `-` and `_`. Default: the server's `dbt-server-<id>`.
    pub name: Option<String>,
    /// Five fields (minute hour day-of-month month day-of-week), in UTC.
    pub cron: String,
    /// The dbt command as the user wrote it, for display. Default: `args` joined.
    pub command: Option<String>,
    /// dbt's arguments, subcommand first.
    pub args: Vec<String>,
    /// Each run makes an Elementary report after dbt (docs/elementary.md).
    pub elementary: bool,
    /// Each run is a job of this environment (docs/slim-ci.md).
    pub environment: Option<String>,
}

impl Client {
    /// Packs the project as `files` says, uploads what the server lacks and stores the
    /// schedule: every run uses the files sent now. A bad command, name or cron expression is
    /// refused before anything is read or sent.
    pub async fn create_schedule(
        &self,
        schedule: NewSchedule,
        files: &JobFiles,
    ) -> Result<(ScheduleInfo, UploadStats)> {
        if let Some(name) = &schedule.name {
            check_name(name)?;
        }
        parse_cron(&schedule.cron)?;
        let (args, packed) = pack_project(schedule.args, files).await?;
        let stats = self.upload_missing(&packed).await?;
        let request = CreateSchedule {
            name: schedule.name,
            cron: schedule.cron,
            command: schedule.command,
            args,
            files: submit_files(&packed),
            mode: Default::default(),
            elementary: schedule.elementary,
            environment: schedule.environment,
        };
        let created = self
            .json(self.http.post(self.url("/api/v1/schedules")).json(&request))
            .await?;
        Ok((created, stats))
    }

    /// Every schedule, by name.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleInfo>> {
        let list: ScheduleList = self
            .json(self.http.get(self.url("/api/v1/schedules")))
            .await?;
        Ok(list.schedules)
    }

    /// The schedule of that name ([`Error::NotFound`](crate::Error::NotFound) if none).
    pub async fn schedule(&self, name: &str) -> Result<ScheduleInfo> {
        self.json(self.http.get(self.schedule_url(name, "")?)).await
    }

    /// Deletes the schedule of that name ([`Error::NotFound`](crate::Error::NotFound) if none).
    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        self.send(self.http.delete(self.schedule_url(name, "")?))
            .await?;
        Ok(())
    }

    /// Submits the schedule's job now (with the files stored at its creation) and returns it.
    pub async fn run_schedule(&self, name: &str) -> Result<Job> {
        self.json(self.http.post(self.schedule_url(name, "/run")?))
            .await
    }

    /// The URL of a schedule (plus `rest`); a name the server would refuse fails here.
    fn schedule_url(&self, name: &str, rest: &str) -> Result<String> {
        check_name(name)?;
        Ok(self.url(&format!("/api/v1/schedules/{name}{rest}")))
    }
}
