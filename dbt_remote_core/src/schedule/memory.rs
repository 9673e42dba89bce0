//! Schedules in memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Schedule, ScheduleStore};
use crate::{Error, Result};

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
        let stored = Schedule {
            version: 1,
            ..schedule.clone()
        };
        map.insert(schedule.name.clone(), stored);
        Ok(())
    }

    async fn get_schedule(&self, name: &str) -> Result<Schedule> {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("schedule {name}")))
    }

    async fn put_schedule(&self, schedule: &Schedule) -> Result<Schedule> {
        match self.0.lock().unwrap().get_mut(&schedule.name) {
            Some(s) if s.version != schedule.version => Err(super::stale(schedule)),
            Some(s) => {
                *s = Schedule {
                    version: schedule.version + 1,
                    ..schedule.clone()
                };
                Ok(s.clone())
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
