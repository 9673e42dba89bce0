//! `Job`: a submitted job, its last known state, and what can be done with it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbt_remote_core::api::Job as JobState;
use dbt_remote_core::client::FailedNode as CoreFailedNode;
use dbt_remote_core::{Client, JobStatus};
use pyo3::prelude::*;

use crate::logs::{AsyncLogIterator, LogIterator, Records};
use crate::{block_on, error, to_py};

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

/// Waits for the job's end, records it in `state`, and fails with `JobFailed` unless it
/// succeeded.
async fn wait_for_end(
    client: Client,
    state: Arc<Mutex<JobState>>,
    poll: Duration,
) -> dbt_remote_core::Result<Outcome> {
    let id = state.lock().unwrap().id;
    let job = client.wait(id, poll).await?;
    *state.lock().unwrap() = job.clone();
    let failed = if job.status == JobStatus::Succeeded {
        vec![]
    } else {
        // The failing nodes make the error say what to look at; no results is no list.
        client.failed_nodes(id).await.unwrap_or_default()
    };
    Ok(Outcome { job, failed })
}

struct Outcome {
    job: JobState,
    failed: Vec<CoreFailedNode>,
}

impl Outcome {
    /// `None` when the job succeeded, else the `JobFailed` error.
    fn error(self, py: Python<'_>) -> Option<PyErr> {
        let job = self.job;
        if job.status == JobStatus::Succeeded {
            return None;
        }
        let mut message = match (job.status, job.exit_code) {
            (JobStatus::Cancelled, _) => format!("job {} was cancelled", job.id),
            (_, Some(code)) => format!("job {} failed: dbt exited with code {code}", job.id),
            _ => format!(
                "job {} failed before dbt finished: {}",
                job.id,
                job.failure_reason.as_deref().unwrap_or("no reason given")
            ),
        };
        if !self.failed.is_empty() {
            let nodes: Vec<&str> = self.failed.iter().map(|n| n.unique_id.as_str()).collect();
            message.push_str(&format!("; failing nodes: {}", nodes.join(", ")));
        }
        let failed: Vec<FailedNode> = self.failed.into_iter().map(FailedNode::from).collect();
        Some(error(
            py,
            "JobFailed",
            (
                message,
                job.id.to_string(),
                job.status.to_string(),
                job.exit_code,
                job.failure_reason,
                failed,
            ),
        ))
    }
}

#[pymethods]
impl Job {
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

    /// dbt's arguments, subcommand first.
    #[getter]
    fn args(&self) -> Vec<String> {
        self.state().args
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

    /// Reads the job's state from the server again.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        let (client, id) = (self.client.clone(), self.id());
        let job = block_on(py, None, async move { client.job(id).await })?;
        *self.state.lock().unwrap() = job;
        Ok(())
    }

    /// The job's log records: with `follow`, live until the job ends (reconnecting without
    /// loss); without, those written so far. `after` skips records up to that sequence number.
    #[pyo3(signature = (follow=true, after=0))]
    fn logs(&self, follow: bool, after: u64) -> LogIterator {
        LogIterator(Records::new(
            self.client.clone(),
            self.state.clone(),
            follow,
            after,
        ))
    }

    /// `logs`, as an async iterator (`async for record in job.logs_async(): ...`).
    #[pyo3(signature = (follow=true, after=0))]
    fn logs_async(&self, follow: bool, after: u64) -> AsyncLogIterator {
        AsyncLogIterator(Records::new(
            self.client.clone(),
            self.state.clone(),
            follow,
            after,
        ))
    }

    /// Blocks until the job ends (releasing the GIL; Ctrl-C interrupts). Raises `JobFailed`
    /// (with dbt's exit code and the failing nodes) unless it succeeded, `WaitTimeout` after
    /// `timeout` seconds (the job goes on).
    #[pyo3(signature = (timeout=None, poll_interval=1.0))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>, poll_interval: f64) -> PyResult<()> {
        let timeout = timeout.map(seconds).transpose()?;
        let fut = wait_for_end(
            self.client.clone(),
            self.state.clone(),
            seconds(poll_interval)?,
        );
        let outcome = block_on(py, timeout, fut)?;
        outcome.error(py).map_or(Ok(()), Err)
    }

    /// `wait`, awaitable (`await job.wait_async()`): for Airflow triggers and asyncio code.
    #[pyo3(signature = (poll_interval=1.0))]
    fn wait_async<'py>(&self, py: Python<'py>, poll_interval: f64) -> PyResult<Bound<'py, PyAny>> {
        let fut = wait_for_end(
            self.client.clone(),
            self.state.clone(),
            seconds(poll_interval)?,
        );
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let outcome = fut.await.map_err(to_py)?;
            Python::attach(|py| outcome.error(py).map_or(Ok(()), Err))
        })
    }

    /// Asks the server to cancel the job (a queued job ends at once; dbt is interrupted in a
    /// running one). Idempotent; an ended job stays as it is.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        let (client, id) = (self.client.clone(), self.id());
        let job = block_on(py, None, async move { client.cancel(id).await })?;
        *self.state.lock().unwrap() = job;
        Ok(())
    }

    /// `cancel`, awaitable.
    fn cancel_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (client, id, state) = (self.client.clone(), self.id(), self.state.clone());
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let job = client.cancel(id).await.map_err(to_py)?;
            *state.lock().unwrap() = job;
            Ok(())
        })
    }

    /// The artifacts the job stored (once it has ended).
    fn artifacts(&self, py: Python<'_>) -> PyResult<Vec<Artifact>> {
        let (client, id) = (self.client.clone(), self.id());
        let list = block_on(py, None, async move { client.artifacts(id).await })?;
        Ok(list
            .artifacts
            .into_iter()
            .map(|a| Artifact {
                name: a.name.to_string(),
                size: a.size,
            })
            .collect())
    }

    /// Downloads every artifact into `dir` and returns the paths written.
    fn download_artifacts(&self, py: Python<'_>, dir: PathBuf) -> PyResult<Vec<PathBuf>> {
        let (client, id) = (self.client.clone(), self.id());
        block_on(py, None, async move {
            client.download_artifacts(id, &dir).await
        })
    }

    /// The nodes that errored or failed, from the job's `run_results.json`.
    fn failed_nodes(&self, py: Python<'_>) -> PyResult<Vec<FailedNode>> {
        let (client, id) = (self.client.clone(), self.id());
        let nodes = block_on(py, None, async move { client.failed_nodes(id).await })?;
        Ok(nodes.into_iter().map(FailedNode::from).collect())
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

fn seconds(s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        to_py(dbt_remote_core::Error::invalid(format!(
            "{s} is not a number of seconds"
        )))
    })
}
