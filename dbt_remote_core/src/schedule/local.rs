//! Schedules as JSON files in a folder.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{check_name, Schedule, ScheduleStore};
use crate::{Error, Result};

/// Schedules as JSON files `<dir>/<name>.json`, each written whole (temp file and rename).
/// Writers take an exclusive lock on `<dir>/.lock` (`flock`, held only while a write
/// compares and renames), so the compare-and-set of `put_schedule` holds across processes
/// and servers sharing the folder; readers take no lock.
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

    /// Takes the writers' lock of the folder; it is released when the file is dropped.
    fn lock(&self) -> Result<std::fs::File> {
        let path = self.dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        file.lock().map_err(|e| io_error(&path, e))?;
        Ok(file)
    }

    /// The stored schedule at `path`, if there is one.
    fn read(&self, path: &std::path::Path) -> Result<Option<Schedule>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io_error(path, std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// Writes `schedule` to a temp file in the folder and returns it.
    fn write_temp(&self, schedule: &Schedule) -> Result<tempfile_path::TempPath> {
        let json =
            serde_json::to_vec_pretty(schedule).map_err(|e| Error::backend("schedules", e))?;
        tempfile_path::write(&self.dir, &json).map_err(|e| io_error(&self.dir, e))
    }
}

/// The writers' lock file in the folder (not a schedule: only `*.json` files are).
const LOCK_FILE: &str = ".lock";

/// An I/O error with its path; its kind is kept, so a full disk is
/// [`Error::InsufficientStorage`].
fn io_error(path: &std::path::Path, e: std::io::Error) -> Error {
    let e = std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    Error::backend("schedules", e)
}

#[async_trait]
impl ScheduleStore for LocalSchedules {
    async fn create_schedule(&self, schedule: &Schedule) -> Result<()> {
        let path = self.path(&schedule.name)?;
        let temp = self.write_temp(&Schedule {
            version: 1,
            ..schedule.clone()
        })?;
        let _lock = self.lock()?;
        // A hard link is created only if the name is free: create-only, atomically.
        match std::fs::hard_link(temp.path(), &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::already_exists(format!("schedule {}", schedule.name)))
            }
            Err(e) => Err(io_error(&path, e)),
        }
    }

    async fn get_schedule(&self, name: &str) -> Result<Schedule> {
        self.read(&self.path(name)?)?
            .ok_or_else(|| Error::not_found(format!("schedule {name}")))
    }

    async fn put_schedule(&self, schedule: &Schedule) -> Result<Schedule> {
        let path = self.path(&schedule.name)?;
        let stored = Schedule {
            version: schedule.version + 1,
            ..schedule.clone()
        };
        let temp = self.write_temp(&stored)?;
        let _lock = self.lock()?;
        match self.read(&path)? {
            None => Err(Error::not_found(format!("schedule {}", schedule.name))),
            Some(s) if s.version != schedule.version => Err(super::stale(schedule)),
            Some(_) => {
                temp.persist(&path).map_err(|e| io_error(&path, e))?;
                Ok(stored)
            }
        }
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
            // A damaged file breaks its schedule only: the others are listed (and fired).
            match serde_json::from_slice(&bytes) {
                Ok(schedule) => out.push(schedule),
                Err(e) => tracing::warn!("skipping the damaged schedule {}: {e}", path.display()),
            }
        }
        out.sort_by(|a: &Schedule, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool> {
        let path = self.path(name)?;
        let _lock = self.lock()?;
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
