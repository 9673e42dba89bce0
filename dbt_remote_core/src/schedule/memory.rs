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
