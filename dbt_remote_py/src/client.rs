//! `Client`: the settings in force (as the CLI resolves them) and a client of their server,
//! connected on first use.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use dbt_remote_core::auth::Credentials;
use dbt_remote_core::client::{JobFilter, NewSchedule, SubmitOptions};
use dbt_remote_core::config::{Overrides, Settings};
use dbt_remote_core::connect::{self, Connection};
use dbt_remote_core::package::JobFiles;
use dbt_remote_core::JobId;
use pyo3::prelude::*;

use crate::job::Job;
use crate::schedule::Schedule;
use crate::{block_on, sync, to_py};

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

/// The server a client talks to: its settings, and the connection made from them on first use
/// (when they need a discovery) or at once (a fixed URL: no network call).
struct Server {
    settings: Settings,
    /// Credentials given to the client (`token=`, `service_account_key=`), used instead of
    /// the settings' ones.
    credentials: Option<Credentials>,
    connection: tokio::sync::OnceCell<Connection>,
}

impl Server {
    async fn connection(&self) -> dbt_remote_core::Result<&Connection> {
        self.connection
            .get_or_try_init(|| {
                connect::connect_with(self.settings.clone(), self.credentials.clone())
            })
            .await
    }

    async fn client(&self) -> dbt_remote_core::Result<dbt_remote_core::Client> {
        Ok(self.connection().await?.client.clone())
    }
}

/// A client of one dbt-server. Settings are resolved as the `dbt-remote` CLI does: the
/// arguments given here, then `DBT_REMOTE_*` environment variables, then `dbt_remote.yml` in
/// `config_dir` (default: the current folder), then the defaults. Built with the `gcp` feature,
/// a client given `location` and no server URL finds dbt-server on Cloud Run, on first use.
/// `token` is a static token sent as it is, or `service_account_key` the JSON of a Google
/// service-account key whose ID tokens are sent (also to a discovery's probes), instead of any
/// credentials of the settings or the environment (`DBT_REMOTE_TOKEN`, `credentials`, Google's).
#[pyclass(module = "dbt_remote._native", frozen)]
pub struct Client {
    server: Arc<Server>,
}

impl Client {
    /// The connection, made now if it was not yet (blocking, GIL released).
    fn connection(&self, py: Python<'_>) -> PyResult<Connection> {
        if let Some(connection) = self.server.connection.get() {
            return Ok(connection.clone());
        }
        let server = self.server.clone();
        sync(py, async move { Ok(server.connection().await?.clone()) })
    }
}

pymethods_with_twins! {
    impl Client {
        twins {
            /// Packs the project, uploads what the server lacks and submits `command` (a list of
            /// dbt arguments, or a string split as a shell would). Returns at once with the job.
            /// `elementary=True` makes an Elementary report after dbt (`Job.report_url()`);
            /// default: the `elementary` setting. `environment` names the environment the job
            /// runs for (default: the `environment` setting); `defer_to="prod"` runs with the
            /// manifest of prod's latest succeeded job as dbt's `--state` (docs/slim-ci.md).
            #[pyo3(signature = (
                command, project_dir=None, *, manifest=None, dbt_project=None, extra_packages=None,
                seeds_path=None, elementary=None, environment=None, defer_to=None
            ))]
            fn submit / submit_async(
                &self,
                command: Command,
                project_dir: Option<PathBuf>,
                manifest: Option<PathBuf>,
                dbt_project: Option<PathBuf>,
                extra_packages: Option<PathBuf>,
                seeds_path: Option<PathBuf>,
                elementary: Option<bool>,
                environment: Option<String>,
                defer_to: Option<String>,
            ) -> Job = self.submit_job(
                command.into_args()?,
                self.files(project_dir, manifest, dbt_project, extra_packages, seeds_path),
                SubmitOptions {
                    elementary: elementary.unwrap_or_else(|| self.server.settings.elementary()),
                    environment: environment
                        .or_else(|| self.server.settings.environment().map(str::to_string)),
                    defer_to,
                    retry_of: None,
                },
            );

            /// The server's `GET /health` answer, `{"status": ..., "version": ...}`: whether it
            /// is reachable (this route needs no credentials).
            fn health / health_async(&self) -> BTreeMap<&'static str, String> =
                self.server_health();

            /// The job with this id (raises `NotFound` for an unknown one).
            fn job / job_async(&self, id: &str) -> Job = self.get_job(parse_id(id)?);

            /// The newest jobs first, at most `limit` (1 to 1000), optionally only those with
            /// `status` (`queued`, `running`, `succeeded`, `failed`, `cancelled`), of `project`,
            /// `environment` and `target`.
            #[pyo3(signature = (status=None, limit=50, *, project=None, environment=None, target=None))]
            fn jobs / jobs_async(
                &self,
                status: Option<String>,
                limit: usize,
                project: Option<String>,
                environment: Option<String>,
                target: Option<String>,
            ) -> Vec<Job> = self.list_jobs(
                JobFilter { status, project, environment, target },
                limit,
            );

            /// Packs the project, uploads what the server lacks and stores a schedule that runs
            /// `args` (a list of dbt arguments, or a string split as a shell would) whenever
            /// `cron` (five fields, UTC) matches, always on the files sent now. Raises
            /// `InvalidInput` for a bad cron, name or command, `ServerError` (409) for a taken
            /// name.
            #[pyo3(signature = (
                cron, args, name=None, project_dir=None, *, manifest=None, dbt_project=None,
                extra_packages=None, seeds_path=None
            ))]
            fn create_schedule / create_schedule_async(
                &self,
                cron: String,
                args: Command,
                name: Option<String>,
                project_dir: Option<PathBuf>,
                manifest: Option<PathBuf>,
                dbt_project: Option<PathBuf>,
                extra_packages: Option<PathBuf>,
                seeds_path: Option<PathBuf>,
            ) -> Schedule = self.new_schedule(
                NewSchedule {
                    name,
                    cron,
                    command: None,
                    args: args.into_args()?,
                    elementary: self.server.settings.elementary(),
                    environment: self.server.settings.environment().map(str::to_string),
                },
                self.files(project_dir, manifest, dbt_project, extra_packages, seeds_path),
            );

            /// Every schedule, by name.
            fn list_schedules / list_schedules_async(&self) -> Vec<Schedule> =
                self.all_schedules();

            /// The schedule of that name (raises `NotFound` if there is none).
            fn schedule / schedule_async(&self, name: String) -> Schedule =
                self.get_schedule(name);

            /// Deletes the schedule of that name (raises `NotFound` if there is none); the jobs
            /// it submitted are kept.
            fn delete_schedule / delete_schedule_async(&self, name: String) -> () =
                self.remove_schedule(name);

            /// Submits the schedule's job now, on the files stored at its creation, and returns
            /// the job (follow it with `logs()`, `wait()`).
            fn run_schedule / run_schedule_async(&self, name: String) -> Job =
                self.run_now(name);
        }

        #[new]
        #[pyo3(signature = (
            server_url=None, credentials=None, *, project_dir=None, manifest=None,
            dbt_project=None, extra_packages=None, seeds_path=None, location=None, config_dir=None,
            environment=None, token=None, service_account_key=None
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
            environment: Option<String>,
            token: Option<String>,
            service_account_key: Option<String>,
        ) -> PyResult<Self> {
            let flags = Overrides {
                server_url,
                project_dir,
                manifest,
                dbt_project,
                extra_packages,
                seeds_path,
                location,
                creds_path: credentials,
                environment,
                elementary: None,
            };
            let dir = match config_dir {
                Some(d) => d,
                None => std::env::current_dir().unwrap_or_else(|_| ".".into()),
            };
            let settings = Settings::load(&flags, &dir).map_err(to_py)?;
            let credentials = match (token, service_account_key) {
                (Some(_), Some(_)) => {
                    return Err(to_py(dbt_remote_core::Error::invalid(
                        "give token or service_account_key, not both",
                    )))
                }
                (Some(token), None) => Some(Credentials::token(token)),
                (None, Some(key)) => Some(Credentials::key_json(&key).map_err(to_py)?),
                (None, None) => None,
            };
            // A fixed URL connects now, without a network call, so a bad URL or credentials file
            // is an error here; a Cloud Run discovery waits for the first use.
            let connection = if connect::discovers(&settings) {
                None
            } else {
                let connecting = connect::connect_with(settings.clone(), credentials.clone());
                Some(block_on(py, None, connecting)?)
            };
            let server = Server {
                settings,
                credentials,
                connection: tokio::sync::OnceCell::new_with(connection),
            };
            Ok(Client {
                server: Arc::new(server),
            })
        }

        /// The base URL of the server (found on Cloud Run now if it was not yet).
        #[getter]
        fn server_url(&self, py: Python<'_>) -> PyResult<String> {
            Ok(self.connection(py)?.client.base_url().to_string())
        }

        /// The settings in force: `{key: value}`.
        fn settings(&self, py: Python<'_>) -> PyResult<BTreeMap<&'static str, String>> {
            Ok(self
                .connection(py)?
                .settings
                .entries()
                .into_iter()
                .map(|(k, v, _)| (k, v.to_string()))
                .collect())
        }

        fn __repr__(&self) -> String {
            match self.server.connection.get() {
                Some(c) => format!("Client({:?})", c.client.base_url()),
                None => format!(
                    "Client(location={:?})",
                    self.server.settings.location().unwrap_or_default()
                ),
            }
        }
    }
}

/// The inner futures of the operations: each one runs for the blocking method and its
/// `_async` twin alike.
impl Client {
    /// What a job sends: the arguments given, else the settings.
    fn files(
        &self,
        project_dir: Option<PathBuf>,
        manifest: Option<PathBuf>,
        dbt_project: Option<PathBuf>,
        extra_packages: Option<PathBuf>,
        seeds_path: Option<PathBuf>,
    ) -> JobFiles {
        let defaults = self.server.settings.job_files();
        JobFiles {
            project_dir: project_dir.unwrap_or(defaults.project_dir),
            manifest: manifest.or(defaults.manifest),
            dbt_project: dbt_project.or(defaults.dbt_project),
            extra_packages: extra_packages.or(defaults.extra_packages),
            seeds_path: seeds_path.or(defaults.seeds_path),
        }
    }

    fn submit_job(
        &self,
        args: Vec<String>,
        files: JobFiles,
        options: SubmitOptions,
    ) -> impl std::future::Future<Output = dbt_remote_core::Result<Job>> + Send + 'static {
        let server = self.server.clone();
        async move {
            let client = server.client().await?;
            let (job, _) = client.submit_project_with(args, &files, options).await?;
            Ok(Job::new(client, job))
        }
    }

    fn server_health(
        &self,
    ) -> impl std::future::Future<Output = dbt_remote_core::Result<BTreeMap<&'static str, String>>>
           + Send
           + 'static {
        let server = self.server.clone();
        async move {
            let health = server.client().await?.health().await?;
            Ok(BTreeMap::from([
                ("status", health.status),
                ("version", health.version),
            ]))
        }
    }

    fn get_job(
        &self,
        id: JobId,
    ) -> impl std::future::Future<Output = dbt_remote_core::Result<Job>> + Send + 'static {
        let server = self.server.clone();
        async move {
            let client = server.client().await?;
            let job = client.job(id).await?;
            Ok(Job::new(client, job))
        }
    }

    fn list_jobs(
        &self,
        filter: JobFilter,
        limit: usize,
    ) -> impl std::future::Future<Output = dbt_remote_core::Result<Vec<Job>>> + Send + 'static {
        let server = self.server.clone();
        async move {
            let client = server.client().await?;
            let list = client.jobs_where(&filter, Some(limit), None).await?;
            Ok(list
                .jobs
                .into_iter()
                .map(|j| Job::new(client.clone(), j))
                .collect())
        }
    }
}

/// The inner futures of the schedule operations.
impl Client {
    fn new_schedule(
        &self,
        schedule: NewSchedule,
        files: JobFiles,
    ) -> impl std::future::Future<Output = dbt_remote_core::Result<Schedule>> + Send + 'static {
        let server = self.server.clone();
        async move {
            let client = server.client().await?;
            let (created, _) = client.create_schedule(schedule, &files).await?;
            Ok(created.into())
        }
    }

    fn all_schedules(
        &self,
    ) -> impl std::future::Future<Output = dbt_remote_core::Result<Vec<Schedule>>> + Send + 'static
    {
        let server = self.server.clone();
        async move {
            let list = server.client().await?.list_schedules().await?;
            Ok(list.into_iter().map(Schedule::from).collect())
        }
    }

    fn get_schedule(
        &self,
        name: String,
    ) -> impl std::future::Future<Output = dbt_remote_core::Result<Schedule>> + Send + 'static {
        let server = self.server.clone();
        async move { Ok(server.client().await?.schedule(&name).await?.into()) }
    }

    fn remove_schedule(
        &self,
        name: String,
    ) -> impl std::future::Future<Output = dbt_remote_core::Result<()>> + Send + 'static {
        let server = self.server.clone();
        async move { server.client().await?.delete_schedule(&name).await }
    }

    fn run_now(
        &self,
        name: String,
    ) -> impl std::future::Future<Output = dbt_remote_core::Result<Job>> + Send + 'static {
        let server = self.server.clone();
        async move {
            let client = server.client().await?;
            let job = client.run_schedule(&name).await?;
            Ok(Job::new(client, job))
        }
    }
}

pub(crate) fn parse_id(id: &str) -> PyResult<JobId> {
    id.parse::<JobId>().map_err(|_| {
        to_py(dbt_remote_core::Error::not_found(format!(
            "job {id:?} (not a job id)"
        )))
    })
}
