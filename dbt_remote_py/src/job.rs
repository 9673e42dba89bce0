//! `Job`: a submitted job, its last known state, and what can be done with it.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbt_remote_core::api::Job as JobState;
use dbt_remote_core::client::FailedNode as CoreFailedNode;
use dbt_remote_core::package::JobFiles;
use dbt_remote_core::{Client, JobOutcome, JobStatus};
use pyo3::prelude::*;

use crate::errors::JobFailed;
use crate::logs::{AsyncLogIterator, LogIterator, Records};
use crate::{block_on, to_py};

/// A job on the server. `status`, `exit_code` and the times are as last seen: `refresh()`,
/// `wait()`, `cancel()` and the end of a followed log update them.
#[pyclass(module = "dbt_remote._native", frozen)]
pub struct Job {
    client: Client,
    state: Arc<Mutex<JobState>>,
}

/// One artifact of a job (`manifest.json`, `run_results.json`, …).
#[pyclass(module = "dbt_remote._native", frozen, get_all)]
pub struct Artifact {
    pub name: String,
    pub size: u64,
}

/// A node that errored or failed, from the job's `run_results.json`.
#[pyclass(module = "dbt_remote._native", frozen, get_all)]
pub struct FailedNode {
    pub unique_id: String,
    pub status: String,
    pub message: Option<String>,
}

#[pymethods]
impl FailedNode {
    fn __repr__(&self) -> String {
        format!("FailedNode({:?}, {:?})", self.unique_id, self.status)
    }
}

#[pymethods]
impl Artifact {
    fn __repr__(&self) -> String {
        format!("Artifact({:?}, size={})", self.name, self.size)
    }
}

impl From<dbt_remote_core::state::ArtifactInfo> for Artifact {
    fn from(a: dbt_remote_core::state::ArtifactInfo) -> Self {
        Artifact {
            name: a.name.to_string(),
            size: a.size,
        }
    }
}

impl From<CoreFailedNode> for FailedNode {
    fn from(n: CoreFailedNode) -> Self {
        FailedNode {
            unique_id: n.unique_id,
            status: n.status,
            message: n.message,
        }
    }
}

impl Job {
    pub(crate) fn new(client: Client, state: JobState) -> Self {
        Job {
            client,
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn state(&self) -> JobState {
        self.state.lock().unwrap().clone()
    }

    fn id(&self) -> dbt_remote_core::JobId {
        self.state.lock().unwrap().id
    }
}

/// The end of a job: its last state and the nodes that failed in it.
pub(crate) struct Ended {
    job: JobState,
    failed: Vec<CoreFailedNode>,
}

impl Ended {
    /// `Ok` when the job succeeded, else `JobFailed` with the core's text of the failure and
    /// the failing nodes.
    fn into_result(self) -> PyResult<()> {
        let job = self.job;
        let outcome = JobOutcome::of(&job);
        let Some(failure) = outcome.failure() else {
            return Ok(());
        };
        let mut message = failure.to_string();
        if !self.failed.is_empty() {
            let nodes: Vec<&str> = self.failed.iter().map(|n| n.unique_id.as_str()).collect();
            message.push_str(&format!("; failing nodes: {}", nodes.join(", ")));
        }
        let failed: Vec<FailedNode> = self.failed.into_iter().map(FailedNode::from).collect();
        Err(JobFailed::new_err((
            message,
            job.id.to_string(),
            job.status.to_string(),
            job.exit_code,
            job.failure_reason,
            failed,
        )))
    }
}

/// What the inner futures of the operations are made of (each runs for the blocking method and
/// its `_async` twin alike; the table of twins below writes most of them). Those that get the
/// job's state from the server record it.
impl Job {
    /// An operation of the server on this job (its client and id), as a future of its own.
    fn on_server<T, F>(&self, operation: impl FnOnce(Client, dbt_remote_core::JobId) -> F) -> F
    where
        F: Future<Output = dbt_remote_core::Result<T>> + Send + 'static,
    {
        operation(self.client.clone(), self.id())
    }

    /// The log of the job, from after record `after` (live until the job ends with `follow`).
    fn records(&self, follow: bool, after: u64) -> Records {
        Records::new(self.client.clone(), self.state.clone(), follow, after)
    }

    /// An operation whose answer is the job's new state (`refresh`, `cancel`): records it.
    fn recording<F>(
        &self,
        operation: impl FnOnce(Client, dbt_remote_core::JobId) -> F,
    ) -> impl Future<Output = dbt_remote_core::Result<()>> + Send + 'static
    where
        F: Future<Output = dbt_remote_core::Result<JobState>> + Send + 'static,
    {
        let state = self.state.clone();
        let answer = self.on_server(operation);
        async move {
            *state.lock().unwrap() = answer.await?;
            Ok(())
        }
    }

    /// Waits for the job's end, asking every `poll`, and records it.
    fn do_wait(
        &self,
        poll: Duration,
    ) -> impl Future<Output = dbt_remote_core::Result<Ended>> + Send + 'static {
        let state = self.state.clone();
        self.on_server(move |client, id| async move {
            let job = client.wait(id, poll).await?;
            *state.lock().unwrap() = job.clone();
            let failed = if job.status == JobStatus::Succeeded {
                vec![]
            } else {
                // The failing nodes make the error say what to look at; no results is no list.
                client.failed_nodes(id).await.unwrap_or_default()
            };
            Ok(Ended { job, failed })
        })
    }
}

pymethods_with_twins! {
    impl Job {
        twins {
            /// Reads the job's state from the server again.
            fn refresh / refresh_async(&self) -> () =
                self.recording(|client, id| async move { client.job(id).await });

            /// Asks the server to cancel the job (a queued job ends at once; dbt is interrupted in
            /// a running one). Idempotent; an ended job stays as it is.
            fn cancel / cancel_async(&self) -> () =
                self.recording(|client, id| async move { client.cancel(id).await });

            /// The artifacts the job stored (once it has ended).
            fn artifacts / artifacts_async(&self) -> Vec<Artifact> =
                self.on_server(|client, id| async move {
                    let list = client.artifacts(id).await?;
                    Ok(list.artifacts.into_iter().map(Artifact::from).collect::<Vec<_>>())
                });

            /// Downloads every artifact into `dir` and returns the paths written.
            fn download_artifacts / download_artifacts_async(&self, dir: PathBuf) -> Vec<PathBuf> =
                self.on_server(|client, id| async move {
                    client.download_artifacts(id, &dir).await
                });

            /// The nodes that errored or failed, from the job's `run_results.json`.
            fn failed_nodes / failed_nodes_async(&self) -> Vec<FailedNode> =
                self.on_server(|client, id| async move {
                    let nodes = client.failed_nodes(id).await?;
                    Ok(nodes.into_iter().map(FailedNode::from).collect::<Vec<_>>())
                });

            /// Submits dbt's `retry` of this job and returns the new job: it re-runs the nodes
            /// that errored, failed or were skipped here, with this job's arguments, in the same
            /// environment (docs/slim-ci.md). With `project_dir`, the project as it is now is
            /// packed and sent, so a fix made since is used; without, the new job runs on this
            /// job's own files, which the server holds (nothing is read or uploaded). Raises
            /// `ServerError` (400) when this job stored no `run_results.json` to retry from.
            #[pyo3(signature = (project_dir=None))]
            fn retry / retry_async(&self, project_dir: Option<PathBuf>) -> Job =
                self.on_server(|client, id| async move {
                    let files = project_dir.map(|project_dir| JobFiles {
                        project_dir,
                        ..Default::default()
                    });
                    let (job, _) = client.retry(id, files.as_ref()).await?;
                    Ok(Job::new(client, job))
                });
        }

        #[getter(id)]
        fn py_id(&self) -> String {
            self.id().to_string()
        }

        /// `queued`, `running`, `succeeded`, `failed` or `cancelled`, as last seen.
        #[getter]
        fn status(&self) -> String {
            self.state().status.to_string()
        }

        /// dbt's exit code once dbt has run (0 success, 1 dbt failure, 2 dbt error).
        #[getter]
        fn exit_code(&self) -> Option<i32> {
            self.state().exit_code
        }

        #[getter]
        fn failure_reason(&self) -> Option<String> {
            self.state().failure_reason
        }

        /// How the job ended, as `dbt-remote` prints it (`job … succeeded`, `job … failed: dbt
        /// exited with code 1`, …); `None` until it has ended (as last seen).
        #[getter]
        fn outcome(&self) -> Option<String> {
            let state = self.state();
            state
                .status
                .is_final()
                .then(|| JobOutcome::of(&state).to_string())
        }

        /// dbt's arguments, subcommand first.
        #[getter]
        fn args(&self) -> Vec<String> {
            self.state().args
        }

        /// The dbt project's name, when the job's files name one plainly.
        #[getter]
        fn project(&self) -> Option<String> {
            self.state().project
        }

        /// The dbt target the job runs against, once known (its arguments' or its profile's
        /// default, recorded when it starts).
        #[getter]
        fn target(&self) -> Option<String> {
            self.state().target
        }

        /// The environment the job runs for, when it names one.
        #[getter]
        fn environment(&self) -> Option<String> {
            self.state().environment
        }

        /// ISO 8601 times (UTC); `None` until they happen.
        #[getter]
        fn created_at(&self) -> String {
            self.state().created_at.to_rfc3339()
        }

        #[getter]
        fn started_at(&self) -> Option<String> {
            self.state().started_at.map(|t| t.to_rfc3339())
        }

        #[getter]
        fn finished_at(&self) -> Option<String> {
            self.state().finished_at.map(|t| t.to_rfc3339())
        }

        /// Whether the status is final (`succeeded`, `failed` or `cancelled`).
        #[getter]
        fn done(&self) -> bool {
            self.state().status.is_final()
        }

        /// Whether the job makes an Elementary report after dbt (`submit(..., elementary=True)`).
        #[getter]
        fn elementary(&self) -> bool {
            self.state().elementary
        }

        /// Where the job's Elementary report is served
        /// (`<server>/api/v1/jobs/<id>/artifacts/elementary_report.html`), for a job that
        /// makes one, else `None`. The report is there once the job has ended with one stored
        /// (see `artifacts()`; a failed report is a warning in the log).
        fn report_url(&self) -> Option<String> {
            let state = self.state();
            state.elementary.then(|| self.client.report_url(state.id))
        }

        /// The job's log records: with `follow`, live until the job ends (reconnecting without
        /// loss); without, those written so far. `after` skips records up to that sequence
        /// number.
        #[pyo3(signature = (follow=true, after=0))]
        fn logs(&self, follow: bool, after: u64) -> LogIterator {
            LogIterator(self.records(follow, after))
        }

        /// `logs`, as an async iterator (`async for record in job.logs_async(): ...`).
        #[pyo3(signature = (follow=true, after=0))]
        fn logs_async(&self, follow: bool, after: u64) -> AsyncLogIterator {
            AsyncLogIterator(self.records(follow, after))
        }

        /// Blocks until the job ends (releasing the GIL; Ctrl-C interrupts). Raises `JobFailed`
        /// (with dbt's exit code and the failing nodes) unless it succeeded, `WaitTimeout` after
        /// `timeout` seconds (the job goes on).
        #[pyo3(signature = (timeout=None, poll_interval=1.0))]
        fn wait(&self, py: Python<'_>, timeout: Option<f64>, poll_interval: f64) -> PyResult<()> {
            let timeout = timeout.map(seconds).transpose()?;
            let fut = self.do_wait(seconds(poll_interval)?);
            block_on(py, timeout, fut)?.into_result()
        }

        /// `wait`, awaitable (`await job.wait_async()`): for Airflow triggers and asyncio code.
        #[pyo3(signature = (poll_interval=1.0))]
        fn wait_async<'py>(
            &self,
            py: Python<'py>,
            poll_interval: f64,
        ) -> PyResult<Bound<'py, PyAny>> {
            let fut = self.do_wait(seconds(poll_interval)?);
            pyo3_async_runtimes::tokio::future_into_py(py, async move {
                fut.await.map_err(to_py)?.into_result()
            })
        }

        fn __repr__(&self) -> String {
            let s = self.state();
            format!(
                "Job(id={:?}, status={:?})",
                s.id.to_string(),
                s.status.to_string()
            )
        }
    }
}

fn seconds(s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        to_py(dbt_remote_core::Error::invalid(format!(
            "{s} is not a number of seconds"
        )))
    })
}
