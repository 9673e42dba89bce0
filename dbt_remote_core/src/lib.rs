//! dbt-remote's core: the job model, where jobs live ([`StateStore`]), how they are started
//! ([`JobLauncher`]), the job runner that runs real dbt, and the HTTP API's wire types.
//!
//! Frontends (the `dbt-server` binary, the `dbt-remote` CLI and, later, the Python binding) only
//! translate their input into calls of this crate.
//!
//! ```
//! use std::sync::Arc;
//! use dbt_remote_core::{JobLifecycle, JobRecord, JobSpec, JobStatus, LogEntry, LogLevel, MemoryStore, StateStore, StateStoreExt};
//!
//! # tokio_test_block_on(async {
//! let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
//! let spec = JobSpec { args: vec!["build".into(), "--select".into(), "orders+".into()], ..Default::default() };
//! spec.validate()?;
//! let job = store.create_job(&JobRecord::new(spec)).await?;
//! store.log(job.id, LogEntry::remote(LogLevel::Info, "hello")).await?;
//! let done = store.finish_job(job.id, JobStatus::Succeeded, Some(0), None).await?;
//! assert_eq!(done.status, JobStatus::Succeeded);
//! assert_eq!(store.read_logs(job.id, 0, 10).await?[0].entry.message, "hello");
//! # Ok::<(), dbt_remote_core::Error>(())
//! # }).unwrap();
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Runtime::new().unwrap().block_on(f)
//! # }
//! ```

pub mod api;
pub mod auth;
pub mod blob;
pub mod client;
#[cfg(feature = "gcp")]
mod cloud_run;
pub mod compat;
pub mod config;
pub mod connect;
pub mod containment;
pub mod diagnose;
pub mod env;
mod error;
pub mod isolation;
pub mod job;
pub mod launcher;
pub mod lifecycle;
pub mod limits;
pub mod locator;
pub mod log;
pub mod outcome;
pub mod package;
pub mod paths;
mod process;
pub mod project;
pub mod retention;
pub mod runner;
pub mod schedule;
pub mod server;
pub mod service;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use blob::BlobHash;
pub use client::Client;
pub use error::{Error, Result};
pub use job::{FileEntry, JobId, JobMode, JobRecord, JobSpec, JobStatus};
pub use launcher::{InProcessLauncher, JobLauncher, ProcessLauncher};
pub use lifecycle::{Claim, JobLifecycle, Lease};
pub use limits::Limits;
pub use locator::{FixedLocator, ServerLocator};
pub use log::{LogEntry, LogLevel, LogRecord, NodeInfo};
pub use outcome::JobOutcome;
pub use paths::RelPath;
pub use service::JobService;
pub use state::{LocalStore, MemoryStore, StateStore, StateStoreExt};
