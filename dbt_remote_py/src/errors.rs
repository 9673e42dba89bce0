//! The exceptions of `dbt_remote` (re-exported by `dbt_remote.errors`), made here and raised by
//! the core error's variant. Every one derives from `DbtRemoteError`; `InvalidInput`,
//! `NotFound` and `WaitTimeout` are also `ValueError`, `LookupError` and `TimeoutError`.

use dbt_remote_core::Error;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyLookupError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

create_exception!(
    dbt_remote.errors,
    DbtRemoteError,
    PyException,
    "Anything that went wrong talking to dbt-server or running a job."
);
create_exception!(
    dbt_remote.errors,
    AuthError,
    DbtRemoteError,
    "The server refused the credentials (HTTP 401 or 403)."
);
create_exception!(
    dbt_remote.errors,
    ServerError,
    DbtRemoteError,
    "The server could not be reached or answered with an unexpected error. `status` is the \
     HTTP status of its answer (`None` when there was none)."
);
create_exception!(
    dbt_remote.errors,
    JobFailed,
    DbtRemoteError,
    "The job ended failed or cancelled. `exit_code` is dbt's (`None` if dbt did not end by \
     itself, e.g. when the job was cancelled); `failed_nodes` lists the nodes that errored or \
     failed (`FailedNode` objects with `unique_id`, `status` and `message`)."
);

/// An exception class with two bases, `DbtRemoteError` and a built-in one (what
/// `create_exception!` makes, for more than one base).
pub(crate) struct TwoBases {
    name: &'static str,
    doc: &'static str,
    builtin: fn(Python<'_>) -> Bound<'_, PyType>,
    class: PyOnceLock<Py<PyType>>,
}

impl TwoBases {
    pub(crate) fn type_object<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        self.class
            .get_or_init(py, || {
                let make = || -> PyResult<Py<PyType>> {
                    let bases =
                        PyTuple::new(py, [py.get_type::<DbtRemoteError>(), (self.builtin)(py)])?;
                    let dict = PyDict::new(py);
                    dict.set_item("__module__", "dbt_remote.errors")?;
                    dict.set_item("__doc__", self.doc)?;
                    let class = py.get_type::<PyType>().call1((self.name, bases, dict))?;
                    Ok(class.cast_into::<PyType>()?.unbind())
                };
                make().expect("Failed to initialize new exception type.")
            })
            .bind(py)
            .clone()
    }

    pub(crate) fn new_err(&self, message: String) -> PyErr {
        Python::attach(|py| PyErr::from_type(self.type_object(py), (message,)))
    }
}

pub(crate) static INVALID_INPUT: TwoBases = TwoBases {
    name: "InvalidInput",
    doc: "The request was refused as invalid (a bad command, a bad path, a bad setting).",
    builtin: |py| py.get_type::<PyValueError>(),
    class: PyOnceLock::new(),
};

pub(crate) static NOT_FOUND: TwoBases = TwoBases {
    name: "NotFound",
    doc: "The server has no such job (or artifact).",
    builtin: |py| py.get_type::<PyLookupError>(),
    class: PyOnceLock::new(),
};

pub(crate) static WAIT_TIMEOUT: TwoBases = TwoBases {
    name: "WaitTimeout",
    doc: "``Job.wait(timeout=...)`` gave up; the job goes on on the server.",
    builtin: |py| py.get_type::<PyTimeoutError>(),
    class: PyOnceLock::new(),
};

/// `ServerError(message, status=None)`.
#[pyfunction]
#[pyo3(signature = (slf, message, status=None))]
fn server_error_init(
    slf: &Bound<'_, PyAny>,
    message: Bound<'_, PyAny>,
    status: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    let py = slf.py();
    py.get_type::<PyException>()
        .call_method1("__init__", (slf, message))?;
    slf.setattr("status", status)
}

/// `JobFailed(message, job_id, status, exit_code, failure_reason=None, failed_nodes=())`.
#[pyfunction]
#[pyo3(signature = (slf, message, job_id, status, exit_code, failure_reason=None, failed_nodes=None))]
#[allow(clippy::too_many_arguments)]
fn job_failed_init(
    slf: &Bound<'_, PyAny>,
    message: Bound<'_, PyAny>,
    job_id: Bound<'_, PyAny>,
    status: Bound<'_, PyAny>,
    exit_code: Bound<'_, PyAny>,
    failure_reason: Option<Bound<'_, PyAny>>,
    failed_nodes: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    let py = slf.py();
    py.get_type::<PyException>()
        .call_method1("__init__", (slf, message))?;
    slf.setattr("job_id", job_id)?;
    slf.setattr("status", status)?;
    slf.setattr("exit_code", exit_code)?;
    slf.setattr("failure_reason", failure_reason)?;
    let nodes = match failed_nodes {
        Some(nodes) => py.get_type::<PyList>().call1((nodes,))?,
        None => PyList::empty(py).into_any(),
    };
    slf.setattr("failed_nodes", nodes)
}

/// Picklable (Airflow may carry exceptions across processes); the failing nodes stay behind.
#[pyfunction]
fn job_failed_reduce<'py>(slf: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let py = slf.py();
    let args = (
        slf.str()?,
        slf.getattr("job_id")?,
        slf.getattr("status")?,
        slf.getattr("exit_code")?,
        slf.getattr("failure_reason")?,
        PyList::empty(py),
    );
    (slf.get_type(), args).into_pyobject(py)
}

/// Adds the exceptions to the module, with the constructors of those that carry more than a
/// message. A Rust function becomes a method through `functools.partialmethod`.
pub(crate) fn add_to(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let method = py.import("functools")?.getattr("partialmethod")?;
    let server_error = py.get_type::<ServerError>();
    server_error.setattr(
        "__init__",
        method.call1((wrap_pyfunction!(server_error_init, py)?,))?,
    )?;
    let job_failed = py.get_type::<JobFailed>();
    job_failed.setattr(
        "__init__",
        method.call1((wrap_pyfunction!(job_failed_init, py)?,))?,
    )?;
    job_failed.setattr(
        "__reduce__",
        method.call1((wrap_pyfunction!(job_failed_reduce, py)?,))?,
    )?;
    m.add("DbtRemoteError", py.get_type::<DbtRemoteError>())?;
    m.add("AuthError", py.get_type::<AuthError>())?;
    m.add("InvalidInput", INVALID_INPUT.type_object(py))?;
    m.add("NotFound", NOT_FOUND.type_object(py))?;
    m.add("ServerError", server_error)?;
    m.add("WaitTimeout", WAIT_TIMEOUT.type_object(py))?;
    m.add("JobFailed", job_failed)?;
    Ok(())
}

/// The Python exception of a core error, chosen by its variant.
pub(crate) fn to_py(e: Error) -> PyErr {
    let message = error_chain(&e);
    match e {
        Error::NotFound { .. } => NOT_FOUND.new_err(message),
        Error::InvalidInput(_) | Error::TooLarge { .. } | Error::TooMany { .. } => {
            INVALID_INPUT.new_err(message)
        }
        Error::Unauthenticated(_) => AuthError::new_err(message),
        Error::Server { status, .. } => ServerError::new_err((message, Some(status))),
        Error::Unreachable { .. } | Error::Backend { .. } => {
            ServerError::new_err((message, None::<u16>))
        }
        _ => DbtRemoteError::new_err(message),
    }
}

/// `WaitTimeout` after `seconds`.
pub(crate) fn wait_timeout(seconds: f64) -> PyErr {
    WAIT_TIMEOUT.new_err(format!("gave up waiting after {seconds} s"))
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
