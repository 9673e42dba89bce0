//! The [`ScheduleStore`] conformance suite: one async fn per behaviour of its contract.

use chrono::Utc;

use crate::job::JobSpec;
use crate::schedule::{Schedule, ScheduleSpec, ScheduleStore};
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
    deleted_schedules_never_come_back(store).await;
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
    changed.last_run = Some(Utc::now());
    store.put_schedule(&changed).await.unwrap();
    assert!(store.list_schedules().await.unwrap().contains(&changed));
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
