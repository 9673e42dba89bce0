//! The GCP store wakes the log hub through Firestore Listen streams, on the Firestore and
//! Cloud Storage emulators: a follower gets each record well before its poll (set to 30 s)
//! would bring it, a dropped watch ends its stream in the emulator, a dropped stream is opened
//! again, and a store keeps at most `MAX_WATCHES` streams. Skipped, saying so, when the
//! emulators are not installed (`scripts/setup-emulators.sh`).
#![cfg(feature = "gcp")]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbt_remote_core::state::gcp::MAX_WATCHES;
use dbt_remote_core::state::{FollowEvent, GcpStore, LogHub, Modify, StateStore, StateStoreExt};
use dbt_remote_core::testing::sample_job;
use dbt_remote_core::{JobId, JobStatus, LogEntry, LogLevel};
use dbt_remote_test_support::gcp::{unique_prefix, Emulators};
use futures::{Stream, StreamExt};

/// Longer than any test: a record that comes came through the listener.
const POLL: Duration = Duration::from_secs(30);
/// What a delivery may take at most.
const DELIVERY: Duration = Duration::from_secs(5);

/// Waits (up to 5 s) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DELIVERY;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {DELIVERY:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A reader (the server's store) and a writer (a job process's store) on one prefix, and a
/// running job.
async fn reader_writer(emulators: &Emulators) -> (Arc<GcpStore>, Arc<GcpStore>, JobId) {
    let prefix = unique_prefix();
    let reader = Arc::new(emulators.store_on(&prefix).await);
    let writer = Arc::new(emulators.store_on(&prefix).await);
    let id = writer.create_job(&sample_job()).await.unwrap().id;
    set_status(&writer, id, JobStatus::Running).await;
    (reader, writer, id)
}

async fn set_status(store: &GcpStore, id: JobId, status: JobStatus) {
    store
        .modify_job(id, |j| {
            j.status = status;
            Modify::Write
        })
        .await
        .unwrap();
}

fn line(i: usize) -> LogEntry {
    LogEntry::remote(LogLevel::Info, format!("line {i}"))
}

/// The next event of `events`, within [`DELIVERY`].
async fn next_event(
    events: &mut (impl Stream<Item = dbt_remote_core::Result<FollowEvent>> + Unpin),
) -> FollowEvent {
    tokio::time::timeout(DELIVERY, events.next())
        .await
        .unwrap_or_else(|_| panic!("no event within {DELIVERY:?} (the poll is {POLL:?})"))
        .expect("an event")
        .expect("no error")
}

/// `f`'s time.
async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_on_firestore_gets_each_record_well_before_the_poll() {
    let Some(emulators) = Emulators::start("a_follower_on_firestore_gets_each_record").await else {
        return;
    };
    let (reader, writer, id) = reader_writer(&emulators).await;
    let hub = LogHub::new(reader.clone()).with_safety_poll(POLL);
    let mut events = Box::pin(hub.follow(id, 0, POLL));
    // The first read happens when the follower first asks: start it, with nothing to read.
    let first = tokio::spawn(async move {
        let event = next_event(&mut events).await;
        (event, events)
    });
    eventually("the feed's Listen stream in the emulator", || {
        emulators.listen_streams() == 1 && reader.listen_streams() == 1
    })
    .await;
    writer.append_logs(id, &[line(0)]).await.unwrap();
    let (event, mut events) = first.await.unwrap();
    assert!(matches!(event, FollowEvent::Record(ref r) if r.seq == 1));

    // From the job process's append to the follower: 50 times, one record at a time.
    let (mut latencies, mut commits) = (Vec::new(), Vec::new());
    for i in 1..=50 {
        let started = Instant::now();
        writer.append_logs(id, &[line(i)]).await.unwrap();
        commits.push(started.elapsed());
        let event = next_event(&mut events).await;
        latencies.push(started.elapsed());
        match event {
            FollowEvent::Record(r) => assert_eq!(r.seq, i as u64 + 1),
            other => panic!("{other:?}"),
        }
    }
    latencies.sort();
    commits.sort();
    let (p50, max) = (percentile(&latencies, 50), latencies[latencies.len() - 1]);
    println!(
        "append -> follower on the Firestore emulator, 50 appends: p50 {p50:?}, p90 {:?}, max \
         {max:?} (the append's own commit: p50 {:?}, max {:?}; poll {POLL:?})",
        percentile(&latencies, 90),
        percentile(&commits, 50),
        commits[commits.len() - 1],
    );
    assert!(max < DELIVERY, "max {max:?}");

    // The end wakes the feed too (the job's record document).
    set_status(&writer, id, JobStatus::Succeeded).await;
    let (event, took) = timed(next_event(&mut events)).await;
    assert!(
        matches!(event, FollowEvent::End(ref j) if j.status == JobStatus::Succeeded),
        "{event:?}"
    );
    assert!(took < DELIVERY);
    // The feed has ended: its stream with it.
    eventually("the ended feed's stream to close", || {
        emulators.listen_streams() == 0 && reader.listen_streams() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_watch_ends_its_listen_stream() {
    let Some(emulators) = Emulators::start("a_dropped_watch_ends_its_listen_stream").await else {
        return;
    };
    let (reader, writer, id) = reader_writer(&emulators).await;
    let watch = reader.watch_job(id).expect("the GCP store watches");
    assert!(!watch.is_live(), "live before the stream is");
    // Live once the target is current, and it says so by waking.
    tokio::time::timeout(DELIVERY, watch.changed())
        .await
        .expect("no wake-up when the stream became live");
    assert!(watch.is_live());
    assert_eq!(reader.listen_streams(), 1);
    eventually("the stream in the emulator", || {
        emulators.listen_streams() == 1
    })
    .await;
    writer.append_logs(id, &[line(0)]).await.unwrap();
    tokio::time::timeout(DELIVERY, watch.changed())
        .await
        .expect("an append did not wake the watch");
    drop(watch);
    eventually("the dropped watch's stream to close", || {
        reader.listen_streams() == 0 && emulators.listen_streams() == 0
    })
    .await;

    // A follower that leaves: its feed ends, and the feed's stream with it.
    let hub = LogHub::new(reader.clone()).with_safety_poll(POLL);
    let mut events = Box::pin(hub.follow(id, 0, POLL));
    let event = next_event(&mut events).await;
    assert!(matches!(event, FollowEvent::Record(ref r) if r.seq == 1));
    eventually("the feed's stream", || emulators.listen_streams() == 1).await;
    drop(events);
    eventually("the left feed's stream to close", || {
        hub.feeds() == 0 && emulators.listen_streams() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_server_ends_is_opened_again() {
    let Some(emulators) = Emulators::start("a_stream_the_server_ends_is_opened_again").await else {
        return;
    };
    let (reader, writer, id) = reader_writer(&emulators).await;
    let hub = LogHub::new(reader.clone()).with_safety_poll(POLL);
    let mut events = Box::pin(hub.follow(id, 0, POLL));
    writer.append_logs(id, &[line(0)]).await.unwrap();
    next_event(&mut events).await;
    for round in 1..=3 {
        eventually("a stream", || emulators.listen_streams() == 1).await;
        let opened = emulators.listen_streams_opened();
        emulators.drop_listen_streams();
        // Listening again after a short pause (meanwhile the feed polls every POLL, 30 s): the
        // old stream is gone, so only the new one can bring this record.
        eventually("the stream to be opened again", || {
            emulators.listen_streams_opened() == opened + 1
                && emulators.listen_streams() == 1
                && reader.listen_streams() == 1
        })
        .await;
        writer.append_logs(id, &[line(round)]).await.unwrap();
        match next_event(&mut events).await {
            FollowEvent::Record(r) => assert_eq!(r.seq, round as u64 + 1),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_keeps_at_most_max_watches_streams() {
    let Some(emulators) = Emulators::start("a_store_keeps_at_most_max_watches_streams").await
    else {
        return;
    };
    let (reader, _writer, id) = reader_writer(&emulators).await;
    let mut watches: Vec<_> = (0..MAX_WATCHES)
        .map(|_| reader.watch_job(id).expect("a watch below the cap"))
        .collect();
    assert!(reader.watch_job(id).is_none(), "a watch past the cap");
    eventually("every stream open", || {
        reader.listen_streams() == MAX_WATCHES && emulators.listen_streams() == MAX_WATCHES
    })
    .await;
    watches.pop();
    let mut again = None;
    eventually("the freed place to be given again", || {
        again = reader.watch_job(id);
        again.is_some()
    })
    .await;
    drop((watches, again));
    eventually("every stream to close", || {
        reader.listen_streams() == 0 && emulators.listen_streams() == 0
    })
    .await;
}
