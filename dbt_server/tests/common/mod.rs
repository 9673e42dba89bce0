//! Test harness: dbt-server in-process over the memory store, or the real binary with real dbt.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dbt_remote_core::testing::RecordingLauncher;
use dbt_remote_core::{JobService, Limits, MemoryStore, StateStore};
use dbt_server::Config;

/// dbt-server served in this process on 127.0.0.1, over a memory store and a launcher that
/// starts nothing; stopped when dropped.
pub struct InProcess {
    pub url: String,
    pub port: u16,
    pub store: Arc<dyn StateStore>,
    pub launcher: Arc<RecordingLauncher>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl InProcess {
    pub async fn start(max_upload_bytes: u64) -> InProcess {
        Self::start_with(max_upload_bytes, |_| {}).await
    }

    /// Starts with the configuration changed by `configure`.
    pub async fn start_with(
        max_upload_bytes: u64,
        configure: impl FnOnce(&mut Config),
    ) -> InProcess {
        Self::start_limited(max_upload_bytes, configure, Limits::new()).await
    }

    /// Starts with the service's caps changed by `limit`.
    pub async fn start_with_limits(
        max_upload_bytes: u64,
        limit: impl FnOnce(&mut Limits),
    ) -> InProcess {
        let mut limits = Limits::new();
        limit(&mut limits);
        Self::start_limited(max_upload_bytes, |_| {}, limits).await
    }

    async fn start_limited(
        max_upload_bytes: u64,
        configure: impl FnOnce(&mut Config),
        limits: Limits,
    ) -> InProcess {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let launcher = Arc::new(RecordingLauncher::new(store.clone()));
        let mut service = JobService::new(store.clone(), launcher.clone()).with_limits(limits);
        service.log_poll = Duration::from_millis(20);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut config = Config::new(port, max_upload_bytes);
        configure(&mut config);
        tokio::spawn(dbt_server::serve(listener, service, config, async {
            let _ = rx.await;
        }));
        InProcess {
            url: format!("http://127.0.0.1:{port}"),
            port,
            store,
            launcher,
            stop: Some(tx),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub mod legacy;

#[allow(unused_imports)]
pub use dbt_remote_test_support::server::*;

/// Appends one record of `level` saying `message` to job `id`'s log.
pub async fn log(
    store: &dyn StateStore,
    id: dbt_remote_core::JobId,
    level: dbt_remote_core::LogLevel,
    message: impl Into<String>,
) {
    use dbt_remote_core::StateStoreExt;
    let entry = dbt_remote_core::LogEntry::remote(level, message);
    store.log(id, entry).await.unwrap();
}

/// `GET url`: the answer's JSON body.
pub async fn get_json(url: impl reqwest::IntoUrl) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The strings of the JSON array `array`.
pub fn strings(array: &serde_json::Value) -> Vec<String> {
    let items = array.as_array().expect("an array");
    items
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// The dbt-server of this package.
pub fn server_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dbt-server"))
}

/// A project file of `path` with `content`.
pub fn file(path: &str, content: &'static [u8]) -> dbt_remote_core::package::ProjectFile {
    let path = dbt_remote_core::RelPath::new(path).unwrap();
    dbt_remote_core::package::ProjectFile::new(path, bytes::Bytes::from_static(content))
}

/// How many jobs `store` holds.
pub async fn job_count(store: &dyn StateStore) -> usize {
    dbt_remote_core::testing::all_jobs(store).await.len()
}
