//! The [`ScheduleStore`] conformance suite: one async fn per behaviour of its contract.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::job::JobSpec;
use crate::schedule::{Schedule, ScheduleSpec, ScheduleStore, ScheduleStoreExt};
use crate::Error;

/// A schedule named `name` running `dbt build` every five minutes.
pub fn sample_schedule(name: &str) -> Schedule {
    Schedule::new(ScheduleSpec {
        name: Some(name.into()),
        cron: "*/5 * * * *".into(),
        command: Some("build".into()),
        job: JobSpec {
            args: vec!["build".into()],
            ..Default::default()
        },
    })
    .unwrap()
}

/// Runs every schedule store behaviour against `store`. `store` must start empty; it is left
/// holding one schedule, `a-first`.
pub async fn run_schedule_suite(store: &dyn ScheduleStore) {
    create_is_create_only_by_name(store).await;
    list_is_ordered_by_name(store).await;
    put_replaces_a_schedule_whole(store).await;
    put_is_compare_and_set_on_the_version(store).await;
    deleted_schedules_never_come_back(store).await;
}

/// Runs the concurrent behaviours against `stores`: handles of one shared store (the same
/// `Arc` twice, or two instances opened on the same folder or database), as two servers
/// would hold them. Leaves the schedule `claimed` behind.
pub async fn run_concurrent_schedule_suite(stores: [Arc<dyn ScheduleStore>; 2]) {
    one_claimer_wins_each_occurrence(stores).await;
}

pub async fn create_is_create_only_by_name(store: &dyn ScheduleStore) {
    store
        .create_schedule(&sample_schedule("nightly"))
        .await
        .unwrap();
    let err = store
        .create_schedule(&sample_schedule("nightly"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
}

pub async fn list_is_ordered_by_name(store: &dyn ScheduleStore) {
    store
        .create_schedule(&sample_schedule("a-first"))
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["a-first", "nightly"]);
}

pub async fn put_replaces_a_schedule_whole(store: &dyn ScheduleStore) {
    let mut changed = nightly(store).await;
    assert_eq!(changed.version, 1, "create stores version 1");
    changed.last_run = Some(Utc::now());
    let stored = store.put_schedule(&changed).await.unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(
        Schedule {
            version: 1,
            ..stored.clone()
        },
        changed
    );
    assert!(store.list_schedules().await.unwrap().contains(&stored));
    assert_eq!(store.get_schedule("nightly").await.unwrap(), stored);
    let err = store.get_schedule("missing").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

pub async fn put_is_compare_and_set_on_the_version(store: &dyn ScheduleStore) {
    let current = nightly(store).await;
    let mut stale = current.clone();
    stale.version -= 1;
    stale.command = "stale".into();
    let err = store.put_schedule(&stale).await.unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err:?}");
    assert_eq!(
        nightly(store).await,
        current,
        "a refused put changes nothing"
    );
    // Two writers of the same version: the first wins, the second is refused.
    store.put_schedule(&current).await.unwrap();
    let err = store.put_schedule(&current).await.unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err:?}");
}

/// Eight claimers over two handles race for each of three occurrences: one wins each; an
/// older occurrence than the last claimed one is never claimed.
pub async fn one_claimer_wins_each_occurrence(stores: [Arc<dyn ScheduleStore>; 2]) {
    stores[0]
        .create_schedule(&sample_schedule("claimed"))
        .await
        .unwrap();
    let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
    for occurrence in [
        "2026-11-24T10:05:00Z",
        "2026-11-24T10:10:00Z",
        "2026-11-24T10:15:00Z",
    ] {
        // Tasks, so that on a multi-threaded runtime the claims really run at once.
        let claims = (0..8).map(|i| {
            let store = stores[i % 2].clone();
            let occurrence = at(occurrence);
            tokio::spawn(async move {
                store
                    .claim_occurrence("claimed", occurrence, Utc::now())
                    .await
                    .unwrap()
            })
        });
        let won: Vec<Schedule> = futures::future::join_all(claims)
            .await
            .into_iter()
            .filter_map(|claim| claim.expect("a claimer panicked"))
            .collect();
        assert_eq!(won.len(), 1, "one winner of {occurrence}: {won:?}");
        assert_eq!(won[0].last_occurrence, Some(at(occurrence)));
        for store in &stores {
            let again = store.claim_occurrence("claimed", at(occurrence), Utc::now());
            assert!(again.await.unwrap().is_none(), "{occurrence} claimed twice");
        }
    }
    let older = stores[1].claim_occurrence("claimed", at("2026-11-24T10:00:00Z"), Utc::now());
    assert!(older.await.unwrap().is_none(), "an older occurrence ran");
    let gone = stores[0].claim_occurrence("missing", at("2026-11-24T10:00:00Z"), Utc::now());
    assert!(matches!(gone.await.unwrap_err(), Error::NotFound { .. }));
}

pub async fn deleted_schedules_never_come_back(store: &dyn ScheduleStore) {
    let changed = nightly(store).await;
    assert!(store.delete_schedule("nightly").await.unwrap());
    assert!(!store.delete_schedule("nightly").await.unwrap());
    let err = store.put_schedule(&changed).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(store.list_schedules().await.unwrap().len(), 1);
}

async fn nightly(store: &dyn ScheduleStore) -> Schedule {
    store
        .list_schedules()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == "nightly")
        .expect("the suite created it")
}
