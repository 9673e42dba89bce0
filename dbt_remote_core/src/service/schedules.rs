//! Schedules: [`JobService`]'s calls that store, fire and delete them, and the scheduler
//! loop of a server whose schedules fire inside it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::JobService;
use crate::api::{CreateSchedule, Job};
use crate::job::JobId;
use crate::schedule::{Schedule, ScheduleSpec, ScheduleStoreExt};
use crate::{Error, Result};

impl JobService {
    /// Stores a new schedule (its files must be stored already). Fails with
    /// [`Error::AlreadyExists`] when the name is taken, and past [`Limits::max_schedules`]
    /// or [`Limits::job`].
    pub async fn create_schedule(&self, spec: ScheduleSpec) -> Result<Schedule> {
        spec.job.validate()?;
        self.check_room_for_schedule().await?;
        self.check_job_size(&spec.job).await?;
        let schedule = Schedule::new(spec)?;
        self.schedules.create_schedule(&schedule).await?;
        // No schedule without its trigger: a trigger that cannot be made undoes the create.
        if let Err(e) = self.trigger.on_created(&schedule).await {
            if let Err(undo) = self.schedules.delete_schedule(&schedule.name).await {
                tracing::error!(schedule = %schedule.name, "could not remove the schedule whose trigger failed: {undo}");
            }
            return Err(e);
        }
        Ok(schedule)
    }

    /// Fails when there are [`Limits::max_schedules`] schedules already. (Concurrent creates
    /// may each see room for one: the cap may be passed by as many.)
    pub async fn check_room_for_schedule(&self) -> Result<()> {
        let existing = self.schedules.list_schedules().await?.len();
        self.limits.check_new_schedule(existing)
    }

    /// Every schedule, by name.
    pub async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        self.schedules.list_schedules().await
    }

    pub async fn schedule(&self, id: Uuid) -> Result<Schedule> {
        self.schedules
            .list_schedules()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::not_found(format!("schedule {id}")))
    }

    /// The schedule of that name; [`Error::NotFound`] for an unknown (or impossible) name.
    pub async fn schedule_named(&self, name: &str) -> Result<Schedule> {
        let unknown = || Error::not_found(format!("schedule {name:?}"));
        crate::schedule::check_name(name).map_err(|_| unknown())?;
        self.schedules.get_schedule(name).await
    }

    /// Checks a native `POST /api/v1/schedules` request as a job submit is checked (arguments,
    /// files uploaded, project files contained, size) and stores the schedule. Nothing is
    /// stored when it is refused.
    pub async fn create_schedule_from(&self, request: CreateSchedule) -> Result<Schedule> {
        let spec = request.into_spec()?;
        self.check_uploaded(&spec.job).await?;
        self.check_project_files(&spec.job).await?;
        self.create_schedule(spec).await
    }

    /// Submits the job of the schedule of that name now, with the files stored at its creation.
    pub async fn run_schedule_named(&self, name: &str) -> Result<Job> {
        let schedule = self.schedule_named(name).await?;
        self.run_schedule_now(schedule.id).await
    }

    /// Deletes the schedule of that name and its trigger; `false` when there was none.
    pub async fn delete_schedule(&self, name: &str) -> Result<bool> {
        let existed = self.schedules.delete_schedule(name).await?;
        self.trigger.on_deleted(name).await?;
        Ok(existed)
    }

    /// Submits a schedule's job now, outside its cron (claims no occurrence), and records the
    /// run.
    pub async fn run_schedule_now(&self, id: Uuid) -> Result<Job> {
        let schedule = self.schedule(id).await?;
        self.submit_for(&schedule, Utc::now()).await
    }

    /// Runs the occurrence `at` of the schedule `name` (what Cloud Scheduler calls, with `at`
    /// from its `X-CloudScheduler-ScheduleTime` header): `Some(job)` when this call won the
    /// occurrence and submitted its job, `None` when the occurrence (or a later one) ran
    /// already, so a retried call never runs it twice. `at` must be a time the cron matches,
    /// not in the future (beyond a minute of clock skew), else [`Error::InvalidInput`].
    pub async fn run_schedule_occurrence(
        &self,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Job>> {
        let now = Utc::now();
        let schedule = self.schedules.get_schedule(name).await?;
        if !schedule.is_occurrence(at) {
            return Err(Error::invalid(format!(
                "{} is not a time at which schedule {name} runs ({})",
                at.to_rfc3339(),
                schedule.cron
            )));
        }
        if at > now + chrono::Duration::seconds(MAX_CLOCK_SKEW_SECONDS) {
            return Err(Error::invalid(format!(
                "the occurrence {} of schedule {name} is in the future",
                at.to_rfc3339()
            )));
        }
        self.fire(name, at, now).await
    }

    /// Claims `occurrence` and, if this caller won, submits the schedule's job.
    async fn fire(
        &self,
        name: &str,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Job>> {
        // The claim is stored first: a failing submit does not fire again at every tick, and
        // a second server (or a retried call) sees the occurrence taken.
        let Some(schedule) = self
            .schedules
            .claim_occurrence(name, occurrence, now)
            .await?
        else {
            return Ok(None);
        };
        self.submit_for(&schedule, now).await.map(Some)
    }

    /// Submits the schedule's job and records it as the schedule's last.
    async fn submit_for(&self, schedule: &Schedule, now: DateTime<Utc>) -> Result<Job> {
        let job = self.submit_spec(schedule.spec.clone(), &[]).await?;
        self.schedules
            .record_job(&schedule.name, job.id, now)
            .await?;
        tracing::info!(schedule = %schedule.name, job = %job.id, "scheduled job submitted");
        Ok(job)
    }

    /// Submits the job of every schedule whose next run is at or before `now`, once per
    /// occurrence however many servers share the schedule store. A schedule that missed
    /// several runs (the server was down) runs once, for its latest occurrence.
    pub async fn run_due_schedules(&self, now: DateTime<Utc>) -> Result<Vec<JobId>> {
        let mut started = Vec::new();
        for schedule in self.schedules.list_schedules().await? {
            let occurrence = match schedule.due_occurrence(now) {
                Ok(Some(at)) => at,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            };
            let name = schedule.name;
            match self.fire(&name, occurrence, now).await {
                Ok(Some(job)) => started.push(job.id),
                Ok(None) => {}                    // another server ran it
                Err(Error::NotFound { .. }) => {} // deleted meanwhile
                Err(e) => tracing::error!(schedule = %name, "scheduled job failed to start: {e}"),
            }
        }
        Ok(started)
    }

    /// Brings the triggers in step with the stored schedules (at server start).
    pub async fn reconcile_triggers(&self) -> Result<()> {
        let all = self.schedules.list_schedules().await?;
        self.trigger.reconcile(&all).await
    }
}

/// Seconds an occurrence given to [`JobService::run_schedule_occurrence`] may lie ahead of
/// this server's clock.
const MAX_CLOCK_SKEW_SECONDS: i64 = 60;

/// The scheduler: fires due schedules every `interval` until `stop` is cancelled. Returns at
/// once when the service's trigger fires schedules from outside the server.
pub async fn run_scheduler(service: JobService, interval: Duration, stop: CancellationToken) {
    if !service.trigger.fires_in_server() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = service.run_due_schedules(Utc::now()).await {
            tracing::error!("could not read the schedules: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobSpec;
    use crate::schedule::MemorySchedules;
    use crate::state::StateStore;
    use crate::testing::{sample_schedule, RecordingLauncher};
    use crate::MemoryStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_due_schedule_fires_once_per_occurrence() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let launcher = Arc::new(RecordingLauncher::new(store.clone()));
        let service = JobService::new(store, launcher.clone())
            .with_schedules(Arc::new(MemorySchedules::new()));
        let mut s = sample_schedule("every-minute");
        s.cron = "* * * * *".into();
        s.created_at = "2026-11-24T10:00:30Z".parse().unwrap();
        service.schedules().create_schedule(&s).await.unwrap();
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();

        let due = |t: &'static str| {
            let service = service.clone();
            async move { service.run_due_schedules(at(t)).await.unwrap() }
        };

        assert!(due("2026-11-24T10:00:59Z").await.is_empty());
        let fired = due("2026-11-24T10:01:00Z").await;
        assert_eq!(fired.len(), 1);
        assert!(due("2026-11-24T10:01:30Z").await.is_empty());
        // Down for an hour: one catch-up run, not sixty.
        let fired = due("2026-11-24T11:02:10Z").await;
        assert_eq!(fired.len(), 1);
        assert_eq!(launcher.launched().len(), 2);
        let stored = &service.schedules().list_schedules().await.unwrap()[0];
        assert_eq!(stored.last_job, Some(fired[0]));
        assert_eq!(stored.last_run, Some(at("2026-11-24T11:02:10Z")));
    }

    /// Two servers (two services, each with its own `LocalSchedules` on one folder) tick the
    /// same schedule at the same times: one job per occurrence.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_servers_on_one_schedule_folder_run_each_occurrence_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let launcher = Arc::new(RecordingLauncher::new(store.clone()));
        let server = || {
            let schedules = crate::schedule::LocalSchedules::new(dir.path()).unwrap();
            JobService::new(store.clone(), launcher.clone()).with_schedules(Arc::new(schedules))
        };
        let (a, b) = (server(), server());
        let mut s = sample_schedule("every-minute");
        s.cron = "* * * * *".into();
        s.created_at = "2026-11-24T10:00:30Z".parse().unwrap();
        a.schedules().create_schedule(&s).await.unwrap();
        let mut fired = 0;
        for minute in 1..=5 {
            let now: DateTime<Utc> = format!("2026-11-24T10:0{minute}:00.2Z").parse().unwrap();
            let ticks = [a.clone(), b.clone(), a.clone(), b.clone()].map(|service| {
                tokio::spawn(async move { service.run_due_schedules(now).await.unwrap() })
            });
            for tick in ticks {
                fired += tick.await.unwrap().len();
            }
            assert_eq!(fired, minute, "one job per occurrence up to 10:0{minute}");
        }
        assert_eq!(launcher.launched().len(), 5);
    }

    /// Cloud Scheduler's call for an occurrence, retried: one job; times that are no
    /// occurrence, or in the future, are refused and change nothing.
    #[tokio::test]
    async fn an_occurrence_called_twice_runs_once() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let launcher = Arc::new(RecordingLauncher::new(store.clone()));
        let service = JobService::new(store, launcher.clone());
        let mut s = sample_schedule("hourly");
        s.cron = "0 * * * *".into();
        service.schedules().create_schedule(&s).await.unwrap();
        let hour = |h: i64| {
            let now = Utc::now().timestamp();
            DateTime::from_timestamp(now - now % 3600 + h * 3600, 0).unwrap()
        };
        let first = service.run_schedule_occurrence("hourly", hour(0)).await;
        let job = first.unwrap().expect("the first call runs the occurrence");
        assert!(service
            .run_schedule_occurrence("hourly", hour(0))
            .await
            .unwrap()
            .is_none());
        assert!(service
            .run_schedule_occurrence("hourly", hour(-1))
            .await
            .unwrap()
            .is_none());
        for bad in [hour(0) + chrono::Duration::minutes(7), hour(2)] {
            let err = service
                .run_schedule_occurrence("hourly", bad)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        }
        let err = service.run_schedule_occurrence("nope", hour(0)).await;
        assert!(matches!(err.unwrap_err(), Error::NotFound { .. }));
        assert_eq!(launcher.launched(), [job.id]);
        let stored = service.schedules().get_schedule("hourly").await.unwrap();
        assert_eq!(stored.last_job, Some(job.id));
        assert_eq!(stored.last_occurrence, Some(hour(0)));
    }

    #[tokio::test]
    async fn a_schedule_runs_now_by_id() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let launcher = Arc::new(RecordingLauncher::new(store.clone()));
        let service = JobService::new(store, launcher.clone());
        let s = service
            .create_schedule(ScheduleSpec {
                name: Some("nightly".into()),
                cron: "0 8 * * *".into(),
                command: None,
                job: JobSpec {
                    args: vec!["build".into()],
                    ..Default::default()
                },
            })
            .await
            .unwrap();
        assert_eq!(s.command, "build");
        let job = service.run_schedule_now(s.id).await.unwrap();
        assert_eq!(launcher.launched(), [job.id]);
        assert_eq!(service.schedule(s.id).await.unwrap().last_job, Some(job.id));
        let err = service.run_schedule_now(Uuid::now_v7()).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        assert!(service.delete_schedule("nightly").await.unwrap());
        assert!(service.list_schedules().await.unwrap().is_empty());
    }
}
