//! Schedules: a job spec that the server submits again on a cron schedule (the 0.4.6
//! protocol's `POST /schedule`). On the local default the server fires them itself; where
//! they are kept is a [`ScheduleStore`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::Job;
use crate::compat::{legacy_job, LegacyForm, LegacyPolicy};
use crate::job::{JobId, JobSpec};
use crate::service::JobService;
use crate::{Error, Result};

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
}

impl Schedule {
    /// A new schedule; `name` defaults to `dbt-server-<id>`. The error says what is wrong.
    pub fn new(name: Option<String>, cron: &str, command: String, spec: JobSpec) -> Result<Self> {
        parse_cron(cron)?;
        let id = Uuid::now_v7();
        let name = name.unwrap_or_else(|| format!("dbt-server-{id}"));
        check_name(&name)?;
        Ok(Schedule {
            id,
            name,
            cron: cron.trim().to_string(),
            command,
            spec,
            created_at: Utc::now(),
            last_run: None,
            last_job: None,
        })
    }

    /// The first time after the last run (or the creation) that the cron expression matches.
    pub fn next_run(&self) -> Result<DateTime<Utc>> {
        let from = self.last_run.unwrap_or(self.created_at);
        parse_cron(&self.cron)?
            .find_next_occurrence(&from, false)
            .map_err(|e| Error::invalid(format!("schedule {}: {e}", self.name)))
    }

    /// The cron expression in words, e.g. "At 08:00".
    pub fn describe(&self) -> String {
        parse_cron(&self.cron).map_or_else(|_| self.cron.clone(), |c| c.describe())
    }
}

/// A five-field cron expression (minute hour day-of-month month day-of-week).
pub fn parse_cron(expr: &str) -> Result<croner::Cron> {
    croner::Cron::from_str(expr.trim()).map_err(|e| {
        Error::invalid(format!(
            "invalid cron expression {expr:?} ({e}): expected five fields, e.g. '0 8 * * *'"
        ))
    })
}

fn check_name(name: &str) -> Result<()> {
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
///   the same name fails with [`Error::AlreadyExists`] and changes nothing.
/// - [`put_schedule`](Self::put_schedule) replaces the schedule of that name whole (last
///   writer wins); it fails with [`Error::NotFound`] once the schedule is deleted, so a
///   deleted schedule never comes back.
/// - [`list_schedules`](Self::list_schedules) returns every schedule, ordered by name.
#[async_trait]
pub trait ScheduleStore: fmt::Debug + Send + Sync + 'static {
    async fn create_schedule(&self, schedule: &Schedule) -> Result<()>;
    async fn put_schedule(&self, schedule: &Schedule) -> Result<()>;
    async fn list_schedules(&self) -> Result<Vec<Schedule>>;
    /// Deletes the schedule of that name; `false` when there was none.
    async fn delete_schedule(&self, name: &str) -> Result<bool>;
}

/// Schedules in memory, for tests and for servers that keep nothing.
#[derive(Debug, Default)]
pub struct MemorySchedules(Mutex<BTreeMap<String, Schedule>>);

impl MemorySchedules {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ScheduleStore for MemorySchedules {
    async fn create_schedule(&self, schedule: &Schedule) -> Result<()> {
        let mut map = self.0.lock().unwrap();
        if map.contains_key(&schedule.name) {
            return Err(Error::already_exists(format!("schedule {}", schedule.name)));
        }
        map.insert(schedule.name.clone(), schedule.clone());
        Ok(())
    }

    async fn put_schedule(&self, schedule: &Schedule) -> Result<()> {
        match self.0.lock().unwrap().get_mut(&schedule.name) {
            Some(s) => {
                *s = schedule.clone();
                Ok(())
            }
            None => Err(Error::not_found(format!("schedule {}", schedule.name))),
        }
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        Ok(self.0.lock().unwrap().values().cloned().collect())
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool> {
        Ok(self.0.lock().unwrap().remove(name).is_some())
    }
}

/// Schedules as JSON files `<dir>/<name>.json`, each written whole (temp file and rename).
#[derive(Debug)]
pub struct LocalSchedules {
    dir: PathBuf,
}

impl LocalSchedules {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        Ok(LocalSchedules { dir })
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Writes `schedule` to a temp file in the folder and returns it.
    fn write_temp(&self, schedule: &Schedule) -> Result<tempfile_path::TempPath> {
        let json =
            serde_json::to_vec_pretty(schedule).map_err(|e| Error::backend("schedules", e))?;
        tempfile_path::write(&self.dir, &json).map_err(|e| io_error(&self.dir, e))
    }
}

fn io_error(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::backend("schedules", format!("{}: {e}", path.display()))
}

#[async_trait]
impl ScheduleStore for LocalSchedules {
    async fn create_schedule(&self, schedule: &Schedule) -> Result<()> {
        let path = self.path(&schedule.name)?;
        let temp = self.write_temp(schedule)?;
        // A hard link is created only if the name is free: create-only, atomically.
        match std::fs::hard_link(temp.path(), &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::already_exists(format!("schedule {}", schedule.name)))
            }
            Err(e) => Err(io_error(&path, e)),
        }
    }

    async fn put_schedule(&self, schedule: &Schedule) -> Result<()> {
        let path = self.path(&schedule.name)?;
        if !path.exists() {
            return Err(Error::not_found(format!("schedule {}", schedule.name)));
        }
        let temp = self.write_temp(schedule)?;
        temp.persist(&path).map_err(|e| io_error(&path, e))
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| io_error(&self.dir, e))?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue; // deleted meanwhile
            };
            let schedule = serde_json::from_slice(&bytes)
                .map_err(|e| Error::backend("schedules", format!("{}: {e}", path.display())))?;
            out.push(schedule);
        }
        out.sort_by(|a: &Schedule, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool> {
        let path = self.path(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(&path, e)),
        }
    }
}

/// A temp file that is removed unless persisted.
mod tempfile_path {
    use std::io::Write;
    use std::path::{Path, PathBuf};

    pub struct TempPath(PathBuf);

    pub fn write(dir: &Path, content: &[u8]) -> std::io::Result<TempPath> {
        let path = dir.join(format!(".tmp-{}", uuid::Uuid::now_v7()));
        let temp = TempPath(path);
        let mut file = std::fs::File::create_new(&temp.0)?;
        file.write_all(content)?;
        file.sync_all()?;
        Ok(temp)
    }

    impl TempPath {
        pub fn path(&self) -> &Path {
            &self.0
        }

        pub fn persist(self, to: &Path) -> std::io::Result<()> {
            std::fs::rename(&self.0, to)
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl JobService {
    /// Stores the files and the schedule of a 0.4.6 `POST /schedule` form.
    pub async fn create_legacy_schedule(
        &self,
        form: &LegacyForm,
        policy: &LegacyPolicy,
    ) -> Result<Schedule> {
        let cron = form
            .schedule
            .as_deref()
            .ok_or_else(|| Error::invalid("form field schedule is missing"))?;
        let job = legacy_job(form, policy)?;
        let schedule = Schedule::new(form.schedule_name.clone(), cron, job.command, job.spec)?;
        for (file, content) in schedule.spec.files.iter().zip(job.blobs) {
            self.store().put_blob(&file.sha256, content).await?;
        }
        self.schedules().create_schedule(&schedule).await?;
        Ok(schedule)
    }

    /// Submits a schedule's job now and records the run.
    pub async fn start_schedule(&self, id: &str) -> Result<Job> {
        let id: Uuid = id
            .parse()
            .map_err(|_| Error::not_found(format!("schedule {id:?}")))?;
        let schedule = self
            .schedules()
            .list_schedules()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::not_found(format!("schedule {id}")))?;
        self.fire(schedule, Utc::now()).await
    }

    async fn fire(&self, mut schedule: Schedule, now: DateTime<Utc>) -> Result<Job> {
        // The run is recorded first: a failing submit does not fire again at every tick.
        schedule.last_run = Some(now);
        self.schedules().put_schedule(&schedule).await?;
        let job = self.submit_spec(schedule.spec.clone(), &[]).await?;
        schedule.last_job = Some(job.id);
        self.schedules().put_schedule(&schedule).await?;
        tracing::info!(schedule = %schedule.name, job = %job.id, "scheduled job submitted");
        Ok(job)
    }

    /// Submits the job of every schedule whose next run is at or before `now`. A schedule
    /// that missed several runs (the server was down) runs once.
    pub async fn run_due_schedules(&self, now: DateTime<Utc>) -> Result<Vec<JobId>> {
        let mut started = Vec::new();
        for schedule in self.schedules().list_schedules().await? {
            match schedule.next_run() {
                Ok(next) if next <= now => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            }
            let name = schedule.name.clone();
            match self.fire(schedule, now).await {
                Ok(job) => started.push(job.id),
                Err(Error::NotFound { .. }) => {} // deleted meanwhile
                Err(e) => tracing::error!(schedule = %name, "scheduled job failed to start: {e}"),
            }
        }
        Ok(started)
    }
}

/// Fires due schedules every `interval` until `stop` is cancelled.
pub async fn run_scheduler(service: JobService, interval: Duration, stop: CancellationToken) {
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

/// The [`ScheduleStore`] contract, run on every implementation.
#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Schedule {
        let spec = JobSpec {
            args: vec!["build".into()],
            ..Default::default()
        };
        Schedule::new(Some(name.into()), "*/5 * * * *", "build".into(), spec).unwrap()
    }

    async fn contract(store: &dyn ScheduleStore) {
        let a = sample("nightly");
        store.create_schedule(&a).await.unwrap();
        let err = store.create_schedule(&sample("nightly")).await.unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
        store.create_schedule(&sample("a-first")).await.unwrap();
        let names: Vec<String> = store
            .list_schedules()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["a-first", "nightly"]);
        let mut changed = a.clone();
        changed.last_run = Some(Utc::now());
        store.put_schedule(&changed).await.unwrap();
        assert!(store.list_schedules().await.unwrap().contains(&changed));
        assert!(store.delete_schedule("nightly").await.unwrap());
        assert!(!store.delete_schedule("nightly").await.unwrap());
        let err = store.put_schedule(&changed).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        assert_eq!(store.list_schedules().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn memory_schedules_keep_the_contract() {
        contract(&MemorySchedules::new()).await;
    }

    #[tokio::test]
    async fn local_schedules_keep_the_contract_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        contract(&LocalSchedules::new(dir.path()).unwrap()).await;
        let again = LocalSchedules::new(dir.path()).unwrap();
        assert_eq!(again.list_schedules().await.unwrap()[0].name, "a-first");
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0, "no temp file is left behind");
    }

    #[tokio::test]
    async fn a_due_schedule_fires_once_per_occurrence() {
        use std::sync::Arc;
        let store: Arc<dyn crate::StateStore> = Arc::new(crate::MemoryStore::new());
        let launcher = Arc::new(crate::testing::RecordingLauncher::new(store.clone()));
        let service = JobService::new(store, launcher.clone())
            .with_schedules(Arc::new(MemorySchedules::new()));
        let mut s = sample("every-minute");
        s.cron = "* * * * *".into();
        s.created_at = "2026-11-24T10:00:30Z".parse().unwrap();
        service.schedules().create_schedule(&s).await.unwrap();
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();

        assert!(service
            .run_due_schedules(at("2026-11-24T10:00:59Z"))
            .await
            .unwrap()
            .is_empty());
        let fired = service
            .run_due_schedules(at("2026-11-24T10:01:00Z"))
            .await
            .unwrap();
        assert_eq!(fired.len(), 1);
        assert!(service
            .run_due_schedules(at("2026-11-24T10:01:30Z"))
            .await
            .unwrap()
            .is_empty());
        // Down for an hour: one catch-up run, not sixty.
        let fired = service
            .run_due_schedules(at("2026-11-24T11:02:10Z"))
            .await
            .unwrap();
        assert_eq!(fired.len(), 1);
        assert_eq!(launcher.launched().len(), 2);
        let stored = &service.schedules().list_schedules().await.unwrap()[0];
        assert_eq!(stored.last_job, Some(fired[0]));
        assert_eq!(stored.last_run, Some(at("2026-11-24T11:02:10Z")));
    }

    #[test]
    fn bad_crons_and_names_are_refused() {
        let spec = JobSpec::default();
        for cron in ["", "* * *", "61 * * * *", "every day", "* * * * * * * *"] {
            assert!(
                Schedule::new(None, cron, "build".into(), spec.clone()).is_err(),
                "{cron:?}"
            );
        }
        for name in ["", "../x", "a b", &"x".repeat(101)] {
            assert!(
                Schedule::new(Some(name.into()), "0 8 * * *", "b".into(), spec.clone()).is_err(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn next_run_follows_the_cron_in_utc() {
        let mut s = sample("x");
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
