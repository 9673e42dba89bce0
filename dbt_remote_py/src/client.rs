//! `Client`: the settings in force (as the CLI resolves them) and a client of their server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dbt_remote_core::config::Settings;
use dbt_remote_core::package::JobFiles;
use dbt_remote_core::JobId;
use pyo3::prelude::*;

use crate::job::Job;
use crate::{block_on, to_py};

/// A dbt command: a list of arguments, or one string split as a shell would.
#[derive(FromPyObject)]
pub(crate) enum Command {
    Line(String),
    Args(Vec<String>),
}

impl Command {
    fn into_args(self) -> PyResult<Vec<String>> {
        match self {
            Command::Line(line) => dbt_remote_core::job::split_command(&line).map_err(to_py),
            Command::Args(args) => Ok(args),
        }
    }
}

/// A client of one dbt-server. Settings are resolved as the `dbt-remote` CLI does: the
/// arguments given here, then `DBT_REMOTE_*` environment variables, then `dbt_remote.yml` in
/// `config_dir` (default: the current folder), then the defaults. Built with the `gcp` feature,
/// a client given `location` and no server URL finds dbt-server on Cloud Run.
#[pyclass(module = "dbt_remote._native", frozen)]
pub struct Client {
    settings: Settings,
    client: dbt_remote_core::Client,
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (
        server_url=None, credentials=None, *, project_dir=None, manifest=None, dbt_project=None,
        extra_packages=None, seeds_path=None, location=None, config_dir=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        server_url: Option<String>,
        credentials: Option<PathBuf>,
        project_dir: Option<PathBuf>,
        manifest: Option<PathBuf>,
        dbt_project: Option<PathBuf>,
        extra_packages: Option<PathBuf>,
        seeds_path: Option<PathBuf>,
        location: Option<String>,
        config_dir: Option<PathBuf>,
    ) -> PyResult<Self> {
        let path = |p: Option<PathBuf>| p.map(|p| p.to_string_lossy().into_owned());
        let mut flags = BTreeMap::new();
        for (key, value) in [
            ("server_url", server_url),
            ("creds_path", path(credentials)),
            ("project_dir", path(project_dir)),
            ("manifest", path(manifest)),
            ("dbt_project", path(dbt_project)),
            ("extra_packages", path(extra_packages)),
            ("seeds_path", path(seeds_path)),
            ("location", location),
        ] {
            if let Some(v) = value {
                flags.insert(key, v);
            }
        }
        let dir = match config_dir {
            Some(d) => d,
            None => std::env::current_dir().unwrap_or_else(|_| ".".into()),
        };
        let settings = Settings::load(&flags, &dir).map_err(to_py)?;
        // Cloud Run discovery when only `location` is given, in a build with `gcp`.
        let settings = block_on(py, None, settings.located())?;
        let client = settings.client().map_err(to_py)?;
        Ok(Client { settings, client })
    }

    /// The base URL of the server.
    #[getter]
    fn server_url(&self) -> &str {
        self.client.base_url()
    }

    /// The settings in force: `{key: value}`.
    fn settings(&self) -> BTreeMap<&'static str, String> {
        self.settings
            .entries()
            .into_iter()
            .map(|(k, v, _)| (k, v.to_string()))
            .collect()
    }

    /// Packs the project, uploads what the server lacks and submits `command` (a list of dbt
    /// arguments, or a string split as a shell would). Returns at once with the job.
    #[pyo3(signature = (
        command, project_dir=None, *, manifest=None, dbt_project=None, extra_packages=None,
        seeds_path=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        command: Command,
        project_dir: Option<PathBuf>,
        manifest: Option<PathBuf>,
        dbt_project: Option<PathBuf>,
        extra_packages: Option<PathBuf>,
        seeds_path: Option<PathBuf>,
    ) -> PyResult<Job> {
        let args = command.into_args()?;
        let defaults = self.settings.job_files();
        let files = JobFiles {
            project_dir: project_dir.unwrap_or(defaults.project_dir),
            manifest: manifest.or(defaults.manifest),
            dbt_project: dbt_project.or(defaults.dbt_project),
            extra_packages: extra_packages.or(defaults.extra_packages),
            seeds_path: seeds_path.or(defaults.seeds_path),
        };
        let client = self.client.clone();
        let (job, _) = block_on(py, None, async move {
            client.submit_project(args, &files).await
        })?;
        Ok(Job::new(self.client.clone(), job))
    }

    /// The job with this id (raises `NotFound` for an unknown one).
    fn job(&self, py: Python<'_>, id: &str) -> PyResult<Job> {
        let id = parse_id(id)?;
        let client = self.client.clone();
        let job = block_on(py, None, async move { client.job(id).await })?;
        Ok(Job::new(self.client.clone(), job))
    }

    /// `job`, awaitable.
    fn job_async<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        let id = parse_id(id)?;
        let client = self.client.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let job = client.job(id).await.map_err(to_py)?;
            Ok(Job::new(client, job))
        })
    }

    /// The newest jobs first, at most `limit` (1 to 1000), optionally only those with `status`
    /// (`queued`, `running`, `succeeded`, `failed`, `cancelled`).
    #[pyo3(signature = (status=None, limit=50))]
    fn jobs(&self, py: Python<'_>, status: Option<String>, limit: usize) -> PyResult<Vec<Job>> {
        let client = self.client.clone();
        let list = block_on(py, None, async move {
            client.jobs(status.as_deref(), Some(limit), None).await
        })?;
        Ok(list
            .jobs
            .into_iter()
            .map(|j| Job::new(self.client.clone(), j))
            .collect())
    }

    fn __repr__(&self) -> String {
        format!("Client({:?})", self.client.base_url())
    }
}

pub(crate) fn parse_id(id: &str) -> PyResult<JobId> {
    id.parse::<JobId>().map_err(|_| {
        to_py(dbt_remote_core::Error::not_found(format!(
            "job {id:?} (not a job id)"
        )))
    })
}
