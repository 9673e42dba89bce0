//! The launcher conformance suite on the process launcher, whose job processes are this
//! package's `dbt-server run-job`, started with the settings of `JobSettings::to_env`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use dbt_remote_core::launcher::{JobCommand, ProcessLauncherConfig};
use dbt_remote_core::server::JobSettings;
use dbt_remote_core::testing::{fake_dbt, run_launcher_suite};
use dbt_remote_core::{LocalStore, ProcessLauncher, StateStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_launcher_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let settings = JobSettings {
        state_dir: dir.path().join("state"),
        dbt_path: fake_dbt(dir.path(), 0),
        ..Default::default()
    }
    .absolute()
    .unwrap();
    let store: Arc<dyn StateStore> = Arc::new(LocalStore::new(&settings.state_dir).unwrap());
    let launcher = ProcessLauncher::new(
        store.clone(),
        ProcessLauncherConfig {
            command: JobCommand {
                program: common::server_binary().to_path_buf(),
                args: vec!["run-job".into()],
                env: settings.to_env(),
            },
            runs_dir: settings.state_dir.join("runs"),
            max_concurrent: 2,
            cancel_grace: Duration::from_secs(5),
            watch_interval: Duration::from_millis(200),
            dbt_workers: None,
        },
    )
    .unwrap();
    run_launcher_suite(store, Arc::new(launcher)).await;
}
