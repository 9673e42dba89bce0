//! `dbt_remote._native`: the Python binding of dbt-remote. It only translates: every
//! operation is a call of `dbt_remote_core` (settings, connecting, packing, the HTTP client,
//! job outcomes); its exceptions are made here (`errors`). The Python package around it
//! (`python/dbt_remote`) re-exports them and adds the Airflow operator.
//!
//! Every operation is one inner future, run by [`sync`] for the blocking method and by
//! [`awaitable`] for its `_async` twin; [`pymethods_with_twins!`] makes both methods from it.
//!
//! One tokio runtime serves the process (pyo3-async-runtimes' own, so blocking and async calls
//! share it). Blocking calls release the GIL and wake every 100 ms to let Python handle
//! signals, so Ctrl-C (KeyboardInterrupt) interrupts them.

/// The `#[pymethods]` of a class whose operations come as twins. Each
/// `fn name / name_async(&self, arg: T, …) -> Out = inner_future;` in `twins { … }` makes the
/// blocking method `name`, which runs the future with [`sync`], and its `_async` twin, which
/// returns it as an awaitable ([`awaitable`]): the same arguments and `#[pyo3(…)]` options;
/// the doc comment is `name`'s, the twin's says "`name`, awaitable.". The class's other
/// methods follow `twins { … }`, as written.
macro_rules! pymethods_with_twins {
    (
        impl $class:ident {
            twins {
                $(
                    $(#[doc = $doc:literal])*
                    $(#[pyo3 $options:tt])?
                    fn $name:ident / $name_async:ident(&$self:ident $(, $arg:ident: $ty:ty)* $(,)?)
                        -> $out:ty = $future:expr;
                )*
            }
            $($method:tt)*
        }
    ) => {
        #[::pyo3::pymethods]
        impl $class {
            $(
                $(#[doc = $doc])*
                $(#[pyo3 $options])?
                // A keyword parameter of Python is an argument here.
                #[allow(clippy::too_many_arguments)]
                fn $name(
                    &$self,
                    py: ::pyo3::Python<'_>
                    $(, $arg: $ty)*
                ) -> ::pyo3::PyResult<$out> {
                    $crate::sync(py, $future)
                }

                #[doc = concat!("`", stringify!($name), "`, awaitable.")]
                $(#[pyo3 $options])?
                #[allow(clippy::too_many_arguments)]
                fn $name_async<'py>(
                    &$self,
                    py: ::pyo3::Python<'py>
                    $(, $arg: $ty)*
                ) -> ::pyo3::PyResult<::pyo3::Bound<'py, ::pyo3::PyAny>> {
                    $crate::awaitable(py, $future)
                }
            )*

            $($method)*
        }
    };
}

mod client;
mod errors;
mod job;
mod logs;
mod schedule;

use std::future::Future;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

pub(crate) use errors::to_py;

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
                return Err(errors::DbtRemoteError::new_err(format!(
                    "internal error: {join}"
                )))
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
            return Err(errors::wait_timeout(t));
        }
    }
}

/// One operation as a blocking call: runs `fut` with the GIL released (see [`block_on`]).
pub(crate) fn sync<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = dbt_remote_core::Result<T>> + Send + 'static,
{
    block_on(py, None, fut)
}

/// The same operation as an awaitable (its `_async` twin): `fut` runs on the runtime and its
/// result, or its error as the matching exception, comes back to the awaiting coroutine.
pub(crate) fn awaitable<'py, T, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
    F: Future<Output = dbt_remote_core::Result<T>> + Send + 'static,
{
    pyo3_async_runtimes::tokio::future_into_py(py, async move { fut.await.map_err(to_py) })
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
    errors::add_to(m)?;
    m.add_function(wrap_pyfunction!(split_command, m)?)?;
    m.add_class::<client::Client>()?;
    m.add_class::<job::Job>()?;
    m.add_class::<job::Artifact>()?;
    m.add_class::<job::FailedNode>()?;
    m.add_class::<logs::LogRecord>()?;
    m.add_class::<logs::LogIterator>()?;
    m.add_class::<logs::AsyncLogIterator>()?;
    m.add_class::<schedule::Schedule>()?;
    Ok(())
}
