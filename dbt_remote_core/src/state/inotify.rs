//! Wake-ups of the [`LocalStore`](super::LocalStore) from inotify: job processes write the
//! state dir, and the server watches `jobs/<id>/` of each job it follows, so that a record's
//! append or a status change wakes the job's log reader at once.
//!
//! One inotify instance per store, read by one task; each event wakes the watches of the job
//! whose folder it names. A queue overflow wakes every watch. When inotify cannot be used (no
//! runtime, no instance left), [`DirWatcher::start`] returns `None` and readers poll.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio_util::sync::CancellationToken;

use super::wake::{JobWakeups, JobWatch};
use crate::job::JobId;

/// The inotify watcher of one store; its task stops when it is dropped.
#[derive(Debug)]
pub(super) struct DirWatcher {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Shared {
    fd: AsyncFd<Instance>,
    dirs: Mutex<HashMap<WatchDescriptor, JobId>>,
    wakeups: JobWakeups,
}

/// The inotify instance, as tokio's reactor registers it.
#[derive(Debug)]
struct Instance(Inotify);

impl AsRawFd for Instance {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// What changes in a job's folder: records and their index written, the record replaced.
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE_SELF
}

impl DirWatcher {
    /// Starts the watcher's task on the current tokio runtime; `None` when there is none or
    /// inotify cannot be used.
    pub(super) fn start() -> Option<DirWatcher> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| tracing::warn!("inotify unavailable, log followers poll: {e}"))
            .ok()?;
        let _entered = runtime.enter();
        // SAFETY: the descriptor is owned by the `Inotify` inside, which the `AsyncFd` owns: it
        // stays open, and the same, for the whole life of the registration.
        let fd = unsafe { AsyncFd::register_with_interest(Instance(inotify), Interest::READABLE) }
            .ok()?;
        let shared = Arc::new(Shared {
            fd,
            dirs: Mutex::default(),
            wakeups: JobWakeups::default(),
        });
        let stop = CancellationToken::new();
        runtime.spawn(read_events(shared.clone(), stop.clone()));
        Some(DirWatcher { shared, stop })
    }

    /// A watch of job `id`, whose folder is `dir`; `None` when the folder cannot be watched.
    pub(super) fn watch(&self, id: JobId, dir: &Path) -> Option<JobWatch> {
        // Registered before the folder is watched: no change after this call is missed.
        let watch = self.shared.wakeups.watch(id);
        let wd = self
            .shared
            .fd
            .get_ref()
            .0
            .add_watch(dir, mask())
            .map_err(|e| tracing::warn!(job = %id, "cannot watch {}: {e}", dir.display()))
            .ok()?;
        self.shared.dirs.lock().unwrap().insert(wd, id);
        Some(watch)
    }
}

impl Drop for DirWatcher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn read_events(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let mut ready = tokio::select! {
            _ = stop.cancelled() => return,
            ready = shared.fd.readable() => match ready {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::warn!("inotify failed, log followers poll: {e}");
                    return;
                }
            },
        };
        let events = match ready.try_io(|fd| fd.get_ref().0.read_events().map_err(Into::into)) {
            Ok(Ok(events)) => events,
            Ok(Err(e)) => {
                tracing::warn!("reading inotify failed, log followers poll: {e}");
                return;
            }
            Err(_would_block) => continue,
        };
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                shared.wakeups.wake_all();
                continue;
            }
            let id = {
                let mut dirs = shared.dirs.lock().unwrap();
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    dirs.remove(&event.wd)
                } else {
                    dirs.get(&event.wd).copied()
                }
            };
            if let Some(id) = id {
                shared.wakeups.wake(id);
            }
        }
        // Forget the folders of jobs nobody watches any more.
        let unwatched: Vec<WatchDescriptor> = {
            let dirs = shared.dirs.lock().unwrap();
            dirs.iter()
                .filter(|(_, id)| !shared.wakeups.is_watched(**id))
                .map(|(wd, _)| *wd)
                .collect()
        };
        for wd in unwatched {
            shared.dirs.lock().unwrap().remove(&wd);
            let _ = shared.fd.get_ref().0.rm_watch(wd);
        }
    }
}
