//! What makes schedules fire: the server's own loop, or something outside the server that
//! calls its run endpoint (Cloud Scheduler, feature `gcp`).

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::Schedule;
use crate::{Error, Result};

/// The header in which Cloud Scheduler sends the occurrence it runs (RFC 3339, UTC), on
/// every call of a job with a unix-cron schedule.
pub const SCHEDULE_TIME_HEADER: &str = "X-CloudScheduler-ScheduleTime";

/// The occurrence in a [`SCHEDULE_TIME_HEADER`] value, for
/// [`JobService::run_schedule_occurrence`](crate::service::JobService::run_schedule_occurrence);
/// a value that is no RFC 3339 time is [`Error::InvalidInput`] naming the header.
pub fn parse_schedule_time(value: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Error::invalid(format!(
                "{SCHEDULE_TIME_HEADER} {value:?} is not an RFC 3339 time ({e})"
            ))
        })
}

/// What fires schedules, kept in step with the [`ScheduleStore`](super::ScheduleStore) by
/// [`JobService`](crate::service::JobService).
///
/// # Contract
/// - [`on_created`](Self::on_created) is called after a schedule is stored; when it fails,
///   the service removes the schedule again and returns the error. It is idempotent: a
///   trigger that exists already is brought up to date.
/// - [`on_deleted`](Self::on_deleted) is called after a schedule is deleted (also when the
///   store had none of that name); a trigger that does not exist is no error.
/// - [`reconcile`](Self::reconcile) runs at server start with every stored schedule: it
///   makes the triggers of exactly these schedules exist and be up to date, and removes the
///   triggers it manages that no schedule has any more (never another's).
/// - [`fires_in_server`](Self::fires_in_server): whether the server's own loop must fire
///   due schedules. Either way each occurrence runs once: the loop and the run endpoint both
///   claim it ([`ScheduleStoreExt::claim_occurrence`](super::ScheduleStoreExt::claim_occurrence)).
#[async_trait]
pub trait ScheduleTrigger: fmt::Debug + Send + Sync + 'static {
    async fn on_created(&self, schedule: &Schedule) -> Result<()>;
    async fn on_deleted(&self, name: &str) -> Result<()>;
    async fn reconcile(&self, all: &[Schedule]) -> Result<()>;
    fn fires_in_server(&self) -> bool;
    /// What fires schedules, for the start-up log.
    fn describe(&self) -> String;
}

/// The local default: the server's own loop fires due schedules; nothing outside to manage.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopTrigger;

#[async_trait]
impl ScheduleTrigger for LoopTrigger {
    async fn on_created(&self, _: &Schedule) -> Result<()> {
        Ok(())
    }

    async fn on_deleted(&self, _: &str) -> Result<()> {
        Ok(())
    }

    async fn reconcile(&self, _: &[Schedule]) -> Result<()> {
        Ok(())
    }

    fn fires_in_server(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "schedules fired by the server's own loop".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_time_header_is_read_as_rfc3339() {
        let at = parse_schedule_time("2026-11-24T08:00:00Z").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-24T08:00:00+00:00");
        let at = parse_schedule_time("2026-11-24T09:00:00+01:00").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-24T08:00:00+00:00");
        for bad in ["", "yesterday", "2026-11-24 08:00"] {
            let err = parse_schedule_time(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{bad:?}: {err:?}");
            assert!(err.to_string().contains(SCHEDULE_TIME_HEADER), "{err}");
        }
    }
}
