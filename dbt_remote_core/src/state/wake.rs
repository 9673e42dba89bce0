//! Wake-ups of a job's log reader: how a store tells the [`LogHub`](super::LogHub) that a job's
//! record or log may have changed, so that it reads at once instead of at its next poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::job::JobId;

/// A subscription to one job's changes, from [`StateStore::watch_job`](super::StateStore::watch_job).
///
/// A change that happens while nobody waits is kept: the next [`changed`](Self::changed) returns
/// at once. Wake-ups may be spurious (the reader then finds nothing new) and several changes may
/// give one wake-up; the reader always reads the store, which stays the source of truth.
#[derive(Debug)]
pub struct JobWatch {
    notify: Arc<Notify>,
}

impl JobWatch {
    /// Returns once the job may have changed since the previous call (or since the watch began).
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

/// The watchers of one store's jobs: readers [`watch`](Self::watch), writers [`wake`](Self::wake).
#[derive(Debug, Default)]
pub struct JobWakeups {
    jobs: Mutex<HashMap<JobId, Vec<Weak<Notify>>>>,
}

impl JobWakeups {
    /// A new watch of job `id`.
    pub fn watch(&self, id: JobId) -> JobWatch {
        let notify = Arc::new(Notify::new());
        let mut jobs = self.jobs.lock().unwrap();
        // Forget watches that have been dropped, so the map stays as small as what is watched.
        jobs.retain(|_, watchers| {
            watchers.retain(|w| w.strong_count() > 0);
            !watchers.is_empty()
        });
        jobs.entry(id).or_default().push(Arc::downgrade(&notify));
        JobWatch { notify }
    }

    /// Wakes every watch of job `id`.
    pub fn wake(&self, id: JobId) {
        let jobs = self.jobs.lock().unwrap();
        for notify in jobs
            .get(&id)
            .into_iter()
            .flatten()
            .filter_map(Weak::upgrade)
        {
            notify.notify_one();
        }
    }

    /// Wakes every watch of every job (when the store cannot tell which job changed).
    pub fn wake_all(&self) {
        let jobs = self.jobs.lock().unwrap();
        for notify in jobs.values().flatten().filter_map(Weak::upgrade) {
            notify.notify_one();
        }
    }

    /// Whether job `id` has a live watch.
    pub fn is_watched(&self, id: JobId) -> bool {
        let jobs = self.jobs.lock().unwrap();
        jobs.get(&id)
            .is_some_and(|w| w.iter().any(|w| w.strong_count() > 0))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept_and_reaches_every_watch_of_the_job() {
        let wakeups = JobWakeups::default();
        let (a, b) = (JobId::new(), JobId::new());
        let (first, second, other) = (wakeups.watch(a), wakeups.watch(a), wakeups.watch(b));
        wakeups.wake(a);
        let soon = Duration::from_secs(1);
        tokio::time::timeout(soon, first.changed()).await.unwrap();
        tokio::time::timeout(soon, second.changed()).await.unwrap();
        let idle = tokio::time::timeout(Duration::from_millis(50), other.changed()).await;
        assert!(idle.is_err(), "another job's watch was woken");
        wakeups.wake_all();
        tokio::time::timeout(soon, other.changed()).await.unwrap();
        drop((first, second));
        assert!(!wakeups.is_watched(a));
        assert!(wakeups.is_watched(b));
    }
}
