//! Log records and the (blocking and async) iterators over a job's log.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use dbt_remote_core::api::Job as JobState;
use dbt_remote_core::client::StreamEvent;
use dbt_remote_core::Client;
use futures::{Stream, StreamExt, TryStreamExt};
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;

use crate::{block_on, to_py};

/// One record of a job's log.
#[pyclass(module = "dbt_remote._native", frozen, get_all)]
pub struct LogRecord {
    /// 1, 2, 3… with no gaps.
    pub seq: u64,
    /// ISO 8601, UTC.
    pub time: String,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
    /// `dbt` (a JSON event of dbt), `dbt-text` (another line of dbt) or `dbt-remote`.
    pub source: String,
    /// The dbt node the record is about, e.g. `model.jaffle_duckdb.orders`.
    pub node: Option<String>,
    /// dbt's status of that node at this event (`started`, `success`, `error`, `fail`, …).
    pub node_status: Option<String>,
    /// dbt's event name, e.g. `LogModelResult`.
    pub event: Option<String>,
}

#[pymethods]
impl LogRecord {
    fn __repr__(&self) -> String {
        format!(
            "LogRecord(seq={}, level={:?}, message={:?})",
            self.seq, self.level, self.message
        )
    }

    /// `time level message`, as `dbt-remote logs` prints it.
    fn __str__(&self) -> String {
        format!("{} {:5} {}", self.time, self.level, self.message)
    }
}

impl From<dbt_remote_core::LogRecord> for LogRecord {
    fn from(r: dbt_remote_core::LogRecord) -> Self {
        let e = r.entry;
        let (node, node_status) = match e.node {
            Some(n) => (Some(n.unique_id), n.status),
            None => (None, None),
        };
        LogRecord {
            seq: r.seq,
            time: e.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            level: e.level.as_str().to_string(),
            message: e.message,
            source: e.source,
            node,
            node_status,
            event: e.event,
        }
    }
}

type Events = Pin<Box<dyn Stream<Item = dbt_remote_core::Result<StreamEvent>> + Send>>;

/// The log of a job as one stream, shared by the iterator's calls.
#[derive(Clone)]
pub(crate) struct Records {
    events: Arc<tokio::sync::Mutex<Events>>,
    state: Arc<Mutex<JobState>>,
}

impl Records {
    pub(crate) fn new(
        client: Client,
        state: Arc<Mutex<JobState>>,
        follow: bool,
        after: u64,
    ) -> Self {
        let id = state.lock().unwrap().id;
        let events: Events = if follow {
            Box::pin(client.follow(id, after))
        } else {
            Box::pin(client.logs_so_far(id, after).map_ok(StreamEvent::Record))
        };
        Records {
            events: Arc::new(tokio::sync::Mutex::new(events)),
            state,
        }
    }

    /// The next record; `None` at the end (the job's end is recorded in its state).
    async fn next(self) -> dbt_remote_core::Result<Option<LogRecord>> {
        let mut events = self.events.lock().await;
        match events.next().await {
            Some(Ok(StreamEvent::Record(r))) => Ok(Some(r.into())),
            Some(Ok(StreamEvent::End(job))) => {
                *self.state.lock().unwrap() = job;
                Ok(None)
            }
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }
}

/// Iterates over a job's log records (`for record in job.logs(): ...`). Each step blocks
/// with the GIL released; Ctrl-C interrupts it.
#[pyclass(module = "dbt_remote._native", frozen)]
pub struct LogIterator(pub(crate) Records);

#[pymethods]
impl LogIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<LogRecord>> {
        block_on(py, None, self.0.clone().next())
    }
}

/// Iterates over a job's log records asynchronously (`async for record in
/// job.logs_async(): ...`).
#[pyclass(module = "dbt_remote._native", frozen)]
pub struct AsyncLogIterator(pub(crate) Records);

#[pymethods]
impl AsyncLogIterator {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let records = self.0.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match records.next().await.map_err(to_py)? {
                Some(record) => Ok(record),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }
}
