//! Schedules: a job spec that the server submits again on a cron schedule. Where they are
//! kept is a [`ScheduleStore`]; [`JobService`](crate::service::JobService) creates them and
//! fires the due ones.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::{JobId, JobSpec};
use crate::{Error, Result};

mod claim;
#[cfg(feature = "gcp")]
mod cloud_scheduler;
#[cfg(feature = "gcp")]
mod firestore;
mod local;
mod memory;
mod trigger;

pub use claim::ScheduleStoreExt;
#[cfg(feature = "gcp")]
pub use cloud_scheduler::{
    CloudSchedulerTrigger, CloudSchedulerTriggerBuilder, DEFAULT_JOB_PREFIX, MANAGED_BY,
};
#[cfg(feature = "gcp")]
pub use firestore::{FirestoreSchedules, FirestoreSchedulesBuilder};
pub use local::LocalSchedules;
pub use memory::MemorySchedules;
pub use trigger::{parse_schedule_time, LoopTrigger, ScheduleTrigger, SCHEDULE_TIME_HEADER};

/// What a client asks for: run `job` whenever `cron` matches.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// Unique; letters, digits, `-` and `_`. Default `dbt-server-<id>`.
    pub name: Option<String>,
    /// Five fields (minute hour day-of-month month day-of-week), in UTC.
    pub cron: String,
    /// The dbt command as the client wrote it, for display. Default: the job's arguments.
    pub command: Option<String>,
    /// The dbt command (arguments) and the files of every run.
    pub job: JobSpec,
}

/// Longest schedule name.
pub const MAX_NAME_LEN: usize = 100;

/// A job spec and the cron expression (five fields, UTC) that says when it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: Uuid,
    /// Unique; letters, digits, `-` and `_`.
    pub name: String,
    pub cron: String,
    /// The dbt command as the client wrote it.
    pub command: String,
    pub spec: JobSpec,
    pub created_at: DateTime<Utc>,
    /// When the schedule last submitted a job.
    #[serde(default)]
    pub last_run: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_job: Option<JobId>,
    /// The latest occurrence (a time the cron matches) whose run was claimed: each occurrence
    /// runs once ([`ScheduleStoreExt::claim_occurrence`]).
    #[serde(default)]
    pub last_occurrence: Option<DateTime<Utc>>,
    /// Set by the store: 1 when created, one more at every [`ScheduleStore::put_schedule`],
    /// which is compare-and-set on it.
    #[serde(default)]
    pub version: u64,
}

impl Schedule {
    /// A new schedule from its spec (checked: the error says what is wrong).
    pub fn new(spec: ScheduleSpec) -> Result<Self> {
        check_fires(&spec.cron, &parse_cron(&spec.cron)?, Utc::now())?;
        let id = Uuid::now_v7();
        let name = spec.name.unwrap_or_else(|| format!("dbt-server-{id}"));
        check_name(&name)?;
        let command = spec.command.unwrap_or_else(|| {
            shlex::try_join(spec.job.args.iter().map(String::as_str)).unwrap_or_default()
        });
        Ok(Schedule {
            id,
            name,
            cron: spec.cron.trim().to_string(),
            command,
            spec: spec.job,
            created_at: Utc::now(),
            last_run: None,
            last_job: None,
            last_occurrence: None,
            version: 1,
        })
    }

    /// The first time the cron expression matches after the last claimed occurrence (else
    /// the last run, else the creation).
    pub fn next_run(&self) -> Result<DateTime<Utc>> {
        let from = self
            .last_occurrence
            .or(self.last_run)
            .unwrap_or(self.created_at);
        parse_cron(&self.cron)?
            .find_next_occurrence(&from, false)
            .map_err(|e| Error::invalid(format!("schedule {}: {e}", self.name)))
    }

    /// The occurrence to run at `now`, if the schedule is due: the latest time at or before
    /// `now` that the cron matches (a schedule that missed several runs runs once).
    pub fn due_occurrence(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        if self.next_run()? > now {
            return Ok(None);
        }
        parse_cron(&self.cron)?
            .find_previous_occurrence(&now, true)
            .map(Some)
            .map_err(|e| Error::invalid(format!("schedule {}: {e}", self.name)))
    }

    /// Whether the cron expression matches `at` (to the minute, seconds zero).
    pub fn is_occurrence(&self, at: DateTime<Utc>) -> bool {
        use chrono::Timelike;
        at.second() == 0
            && at.nanosecond() == 0
            && parse_cron(&self.cron).is_ok_and(|c| c.is_time_matching(&at).unwrap_or(false))
    }

    /// The cron expression in words, e.g. "At 08:00".
    pub fn describe(&self) -> String {
        parse_cron(&self.cron).map_or_else(|_| self.cron.clone(), |c| c.describe())
    }
}

/// Years ahead within which a new schedule must fire (28 years hold every weekday of every
/// date of the Gregorian calendar, 29 February included).
const MAX_YEARS_TO_FIRST_RUN: i64 = 28;

/// A five-field cron expression (minute hour day-of-month month day-of-week). Seconds and
/// year fields, and nicknames such as `@daily`, are refused.
pub fn parse_cron(expr: &str) -> Result<croner::Cron> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(Error::invalid(format!(
            "invalid cron expression {expr:?}: it has {fields} fields, expected five \
             (minute hour day-of-month month day-of-week), e.g. '0 8 * * *'"
        )));
    }
    croner::Cron::from_str(expr.trim()).map_err(|e| {
        Error::invalid(format!(
            "invalid cron expression {expr:?} ({e}): expected five fields, e.g. '0 8 * * *'"
        ))
    })
}

/// Fails unless `cron` fires within [`MAX_YEARS_TO_FIRST_RUN`] years of `now` (`0 0 30 2 *`
/// never does). Checks each day once at the first time of day the expression matches, so an
/// impossible date costs about 10,000 cheap checks, not a search to the year 5000.
fn check_fires(expr: &str, cron: &croner::Cron, now: DateTime<Utc>) -> Result<()> {
    let never = || {
        Error::invalid(format!(
            "cron expression {expr:?} never fires (no matching date in the next \
             {MAX_YEARS_TO_FIRST_RUN} years)"
        ))
    };
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let time_of_day = parse_cron(&format!("{} {} * * *", fields[0], fields[1]))?;
    let midnight = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let first = time_of_day
        .find_next_occurrence(&midnight, true)
        .map_err(|_| never())?
        - midnight;
    let fires = (0..366 * MAX_YEARS_TO_FIRST_RUN).any(|day| {
        let at = midnight + chrono::Duration::days(day) + first;
        cron.is_time_matching(&at).unwrap_or(false)
    });
    if fires {
        Ok(())
    } else {
        Err(never())
    }
}

/// The [`Error::Precondition`] of a put whose version is not the stored one.
pub(crate) fn stale(schedule: &Schedule) -> Error {
    Error::precondition(format!(
        "schedule {} has changed since version {}",
        schedule.name, schedule.version
    ))
}

/// Fails unless `name` is a valid schedule name (1 to [`MAX_NAME_LEN`] letters, digits, `-`, `_`).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid schedule name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '-' or '_'"
        )))
    }
}

/// Where schedules are kept.
///
/// # Contract
/// - [`create_schedule`](Self::create_schedule) is create-only by name: a second schedule of
///   the same name fails with [`Error::AlreadyExists`] and changes nothing. It stores
///   `version = 1`.
/// - [`get_schedule`](Self::get_schedule) returns the schedule of that name as last stored,
///   or [`Error::NotFound`].
/// - [`put_schedule`](Self::put_schedule) is compare-and-set on [`Schedule::version`]: it
///   replaces the stored schedule whole, with `version + 1` (returned), only if the stored
///   version is the given one; else it fails with [`Error::Precondition`] and changes
///   nothing. Of two concurrent puts of the same version, exactly one wins, also across
///   processes and servers sharing the store. It fails with [`Error::NotFound`] once the
///   schedule is deleted, so a deleted schedule never comes back.
/// - [`list_schedules`](Self::list_schedules) returns every schedule, ordered by name; a
///   schedule being replaced concurrently appears once, in one of its versions.
/// - [`delete_schedule`](Self::delete_schedule) is idempotent: it says whether there was one.
/// - Names that [`Schedule::new`] would refuse are never stored.
///
/// On this compare-and-set, [`ScheduleStoreExt::claim_occurrence`] makes each occurrence of a
/// schedule run once, however many servers fire it.
#[async_trait]
pub trait ScheduleStore: fmt::Debug + Send + Sync + 'static {
    async fn create_schedule(&self, schedule: &Schedule) -> Result<()>;
    async fn get_schedule(&self, name: &str) -> Result<Schedule>;
    /// Compare-and-set on `schedule.version`; returns the stored schedule (its new version).
    async fn put_schedule(&self, schedule: &Schedule) -> Result<Schedule>;
    async fn list_schedules(&self) -> Result<Vec<Schedule>>;
    /// Deletes the schedule of that name; `false` when there was none.
    async fn delete_schedule(&self, name: &str) -> Result<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: Option<&str>, cron: &str) -> ScheduleSpec {
        ScheduleSpec {
            name: name.map(Into::into),
            cron: cron.into(),
            command: Some("build".into()),
            job: JobSpec::default(),
        }
    }

    #[test]
    fn bad_crons_and_names_are_refused() {
        for cron in [
            "",
            "* * *",
            "61 * * * *",
            "every day",
            "* * * * * * * *",
            "0 0 8 * * *",
            "0 0 8 * * * 2030",
            "@daily",
            "0 0 30 2 *",
            "0 0 31 4 *",
        ] {
            assert!(Schedule::new(spec(None, cron)).is_err(), "{cron:?}");
        }
        for name in ["", "../x", "a b", &"x".repeat(101)] {
            assert!(
                Schedule::new(spec(Some(name), "0 8 * * *")).is_err(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn rare_but_real_dates_are_accepted() {
        let started = std::time::Instant::now();
        for cron in ["0 0 29 2 *", "0 8 * * 1-5", "*/5 * * * *"] {
            assert!(Schedule::new(spec(None, cron)).is_ok(), "{cron:?}");
        }
        assert!(Schedule::new(spec(None, "0 0 30 2 *")).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn the_command_defaults_to_the_arguments() {
        let mut s = spec(Some("x"), "0 8 * * *");
        s.command = None;
        s.job.args = vec!["run".into(), "--select".into(), "a b".into()];
        assert_eq!(Schedule::new(s).unwrap().command, "run --select 'a b'");
    }

    #[test]
    fn next_run_follows_the_cron_in_utc() {
        let mut s = Schedule::new(spec(Some("x"), "*/5 * * * *")).unwrap();
        s.cron = "0 8 * * *".into();
        s.created_at = "2026-11-24T07:59:00Z".parse().unwrap();
        assert_eq!(
            s.next_run().unwrap().to_rfc3339(),
            "2026-11-24T08:00:00+00:00"
        );
        s.last_run = Some("2026-11-24T08:00:30Z".parse().unwrap());
        assert_eq!(
            s.next_run().unwrap().to_rfc3339(),
            "2026-11-25T08:00:00+00:00"
        );
        assert!(s.describe().contains("08:00"), "{}", s.describe());
    }
}
