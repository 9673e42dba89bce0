//! `dbt_remote._native`: the Python binding of dbt-remote. It only translates: every
//! operation is a call of `dbt_remote_core` (settings, packing, the HTTP client); the Python
//! package around it (`python/dbt_remote`) adds the exceptions and the Airflow operator.
//!
//! One tokio runtime serves the process (pyo3-async-runtimes' own, so blocking and async calls
//! share it). Blocking calls release the GIL and wake every 100 ms to let Python handle
//! signals, so Ctrl-C (KeyboardInterrupt) interrupts them.

mod client;
mod job;
mod logs;

use std::future::Future;
use std::time::{Duration, Instant};

use dbt_remote_core::Error;
use pyo3::exceptions::PyTimeoutError;
use pyo3::prelude::*;

/// How often a blocking call wakes up to let Python handle signals.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Runs `fut` to its end on the runtime, with the GIL released. A signal handler that raises
/// (Ctrl-C) stops the wait and drops the task; so does `timeout` (→ `WaitTimeout`).
pub(crate) fn block_on<T, F>(py: Python<'_>, timeout: Option<Duration>, fut: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = dbt_remote_core::Result<T>> + Send + 'static,
{
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut task = runtime().spawn(fut);
    loop {
        let step = deadline.map_or(SIGNAL_CHECK, |d| {
            d.saturating_duration_since(Instant::now())
                .min(SIGNAL_CHECK)
        });
        let done = py.detach(|| {
            runtime().block_on(async { tokio::time::timeout(step, &mut task).await.ok() })
        });
        match done {
            Some(Ok(result)) => return result.map_err(to_py),
            Some(Err(join)) => {
                return Err(error(
                    py,
                    "DbtRemoteError",
                    (format!("internal error: {join}"),),
                ))
            }
            None => {}
        }
        if let Err(interrupt) = py.check_signals() {
            task.abort();
            return Err(interrupt);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            task.abort();
            let t = timeout.unwrap_or_default().as_secs_f64();
            return Err(timeout_error(py, t));
        }
    }
}

fn timeout_error(py: Python<'_>, seconds: f64) -> PyErr {
    match py
        .import("dbt_remote.errors")
        .and_then(|m| m.getattr("WaitTimeout"))
    {
        Ok(cls) => match cls.call1((format!("gave up waiting after {seconds} s"),)) {
            Ok(value) => PyErr::from_value(value),
            Err(e) => e,
        },
        Err(_) => PyTimeoutError::new_err(format!("gave up waiting after {seconds} s")),
    }
}

/// An instance of the exception class `name` of `dbt_remote.errors`, built with `args`.
pub(crate) fn error<'py, A>(py: Python<'py>, name: &str, args: A) -> PyErr
where
    A: pyo3::call::PyCallArgs<'py>,
{
    let made = py
        .import("dbt_remote.errors")
        .and_then(|m| m.getattr(name))
        .and_then(|cls| cls.call1(args));
    match made {
        Ok(value) => PyErr::from_value(value),
        Err(e) => e,
    }
}

/// The Python exception of a core error: every one derives from `DbtRemoteError`.
pub(crate) fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let message = error_chain(&e);
        match e {
            Error::NotFound { .. } => error(py, "NotFound", (message,)),
            Error::InvalidInput(_) | Error::TooLarge { .. } => {
                error(py, "InvalidInput", (message,))
            }
            Error::Unauthenticated(_) => error(py, "AuthError", (message,)),
            Error::Server { status, .. } => error(py, "ServerError", (message, Some(status))),
            Error::Backend { .. } => error(py, "ServerError", (message, None::<u16>)),
            _ => error(py, "DbtRemoteError", (message,)),
        }
    })
}

/// The error and its causes, as one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// dbt's arguments from a command line such as `run --select "a b"`, split as a shell would
/// (never run by one).
#[pyfunction]
fn split_command(command: &str) -> PyResult<Vec<String>> {
    dbt_remote_core::job::split_command(command).map_err(to_py)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(split_command, m)?)?;
    m.add_class::<client::Client>()?;
    m.add_class::<job::Job>()?;
    m.add_class::<job::Artifact>()?;
    m.add_class::<job::FailedNode>()?;
    m.add_class::<logs::LogRecord>()?;
    m.add_class::<logs::LogIterator>()?;
    m.add_class::<logs::AsyncLogIterator>()?;
    Ok(())
}
