//! Schedules as JSON files in a folder.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{check_name, Schedule, ScheduleStore};
use crate::{Error, Result};

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
