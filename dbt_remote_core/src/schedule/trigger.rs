//! What makes schedules fire: the server's own loop, or something outside the server that
//! calls its run endpoint (Cloud Scheduler, feature `gcp`).

use std::fmt;

use async_trait::async_trait;

use super::Schedule;
use crate::Result;

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
