//! Claims on a schedule's occurrences: read, change, compare-and-set, retried on a concurrent
//! write. Written once for every [`ScheduleStore`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Schedule, ScheduleStore};
use crate::job::JobId;
use crate::{Error, Result};

/// Compare-and-set attempts before giving up (each lost attempt means another writer won).
const MAX_ATTEMPTS: u32 = 100;

/// Conveniences over the compare-and-set of [`ScheduleStore::put_schedule`], implemented for
/// every store.
#[async_trait]
pub trait ScheduleStoreExt: ScheduleStore {
    /// Claims the run of `occurrence` (a time the cron matches): `Some(schedule)` as stored by
    /// the claim (its `last_occurrence` is `occurrence`, its `last_run` `now`) when this caller
    /// won and must submit the job; `None` when this occurrence, or a later one, was claimed
    /// already. Of any number of concurrent claimers of one occurrence, exactly one wins.
    /// [`Error::NotFound`] when the schedule is gone.
    async fn claim_occurrence(
        &self,
        name: &str,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Schedule>> {
        update(self, name, |s| {
            if s.last_occurrence.is_some_and(|last| last >= occurrence) {
                return false;
            }
            s.last_occurrence = Some(occurrence);
            s.last_run = Some(now);
            true
        })
        .await
    }

    /// Records that the schedule submitted `job` at `now` (`last_job`, `last_run`).
    async fn record_job(&self, name: &str, job: JobId, now: DateTime<Utc>) -> Result<Schedule> {
        let stored = update(self, name, |s| {
            s.last_job = Some(job);
            s.last_run = Some(now);
            true
        })
        .await?;
        stored.ok_or_else(|| Error::not_found(format!("schedule {name}")))
    }
}

impl<S: ScheduleStore + ?Sized> ScheduleStoreExt for S {}

/// Reads the schedule, lets `change` edit it (`false`: leave it as it is, return `None`) and
/// stores it with a compare-and-set, again on the newer version when another writer won.
async fn update<S: ScheduleStore + ?Sized>(
    store: &S,
    name: &str,
    mut change: impl FnMut(&mut Schedule) -> bool + Send,
) -> Result<Option<Schedule>> {
    for _ in 0..MAX_ATTEMPTS {
        let mut schedule = store.get_schedule(name).await?;
        if !change(&mut schedule) {
            return Ok(None);
        }
        match store.put_schedule(&schedule).await {
            Ok(stored) => return Ok(Some(stored)),
            Err(Error::Precondition { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::unavailable(format!(
        "schedule {name} kept changing under concurrent writers; try again"
    )))
}
