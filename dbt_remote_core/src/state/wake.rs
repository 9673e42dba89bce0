//! Wake-ups of a job's log reader: how a store tells the [`LogHub`](super::LogHub) that a job's
//! record or log may have changed, so that it reads at once instead of at its next poll.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::job::JobId;

/// A subscription to one job's changes, from [`StateStore::watch_job`](super::StateStore::watch_job).
///
/// A change that happens while nobody waits is kept: the next [`changed`](Self::changed) returns
/// at once. Wake-ups may be spurious (the reader then finds nothing new) and several changes may
/// give one wake-up; the reader always reads the store, which stays the source of truth.
///
/// A watch fed by a connection that can break (Firestore's Listen stream, [`with_waker`](
/// Self::with_waker)) says whether it is [`live`](Self::is_live): while it is not, its reader
/// polls as if there were no watch. Dropping the watch ends what feeds it.
#[derive(Debug)]
pub struct JobWatch {
    notify: Arc<Notify>,
    /// `None`: always live (the watches of [`JobWakeups`]).
    live: Option<Arc<AtomicBool>>,
    /// Stops the [`JobWaker`]'s task when the watch is dropped.
    _stop: Option<DropGuard>,
}

impl JobWatch {
    /// Returns once the job may have changed since the previous call (or since the watch began).
    pub async fn changed(&self) {
        self.notify.notified().await
    }

    /// Whether wake-ups come now. When not, the reader must poll (a changed job may not wake
    /// it); the watch wakes when it becomes live, and when it stops being live.
    pub fn is_live(&self) -> bool {
        self.live
            .as_ref()
            .is_none_or(|live| live.load(Ordering::Acquire))
    }

    /// A watch woken by a task of the store through the returned [`JobWaker`]; not live until
    /// the waker says so. The task should end when [`JobWaker::dropped`] returns.
    pub fn with_waker() -> (JobWatch, JobWaker) {
        let notify = Arc::new(Notify::new());
        let live = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let watch = JobWatch {
            notify: notify.clone(),
            live: Some(live.clone()),
            _stop: Some(stop.clone().drop_guard()),
        };
        (watch, JobWaker { notify, live, stop })
    }
}

/// The store's side of a [`JobWatch::with_waker`]: wakes the watch and says whether it is live.
#[derive(Debug)]
pub struct JobWaker {
    notify: Arc<Notify>,
    live: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl JobWaker {
    /// Wakes the watch (kept until its next [`JobWatch::changed`]).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Says whether wake-ups come now, and wakes the watch when that changes (so that its
    /// reader reads, and polls or stops polling, at once).
    pub fn set_live(&self, live: bool) {
        if self.live.swap(live, Ordering::AcqRel) != live {
            self.wake();
        }
    }

    /// Returns once the watch has been dropped.
    pub async fn dropped(&self) {
        self.stop.cancelled().await
    }

    /// Whether the watch has been dropped.
    pub fn is_dropped(&self) -> bool {
        self.stop.is_cancelled()
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
        JobWatch {
            notify,
            live: None,
            _stop: None,
        }
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
        assert!(other.is_live());
    }

    #[tokio::test]
    async fn a_waker_wakes_its_watch_says_when_it_is_live_and_sees_it_dropped() {
        let soon = Duration::from_secs(1);
        let (watch, waker) = JobWatch::with_waker();
        assert!(!watch.is_live(), "live before the store said so");
        waker.set_live(true);
        assert!(watch.is_live());
        // Becoming live wakes the watch: what changed before is read then.
        tokio::time::timeout(soon, watch.changed()).await.unwrap();
        waker.set_live(true);
        let idle = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        assert!(idle.is_err(), "no change, yet a wake-up");
        waker.wake();
        tokio::time::timeout(soon, watch.changed()).await.unwrap();
        waker.set_live(false);
        assert!(!watch.is_live());
        tokio::time::timeout(soon, watch.changed()).await.unwrap();
        assert!(!waker.is_dropped());
        drop(watch);
        assert!(waker.is_dropped());
        tokio::time::timeout(soon, waker.dropped()).await.unwrap();
    }
}
