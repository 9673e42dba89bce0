//! dbt-server's wiring: from settings (flags, environment) to a running service. Opening the
//! store, choosing and configuring the launcher, building the auth [`Verifier`], composing the
//! [`JobService`] with its schedules and starting the scheduler all happen here, so the
//! `dbt-server` binary, tests and programs that embed the server get the same wiring.
//!
//! The job entry point (`dbt-server run-job`) reads its [`JobSettings`] from the same
//! environment variables ([`crate::env`]): the process launcher passes the server's resolved
//! job settings to each job process with [`JobSettings::to_env`], so a job setting is added in
//! one place, [`JobSettings`].
//!
//! ```no_run
//! # async fn f() -> dbt_remote_core::Result<()> {
//! use dbt_remote_core::server::ServerBuilder;
//! let server = ServerBuilder::from_env()?.with_port(0).build().await?;
//! let scheduler = server.start_scheduler();
//! // … serve server.service() over HTTP (the dbt_server crate) …
//! scheduler.stop();
//! # Ok(()) }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::launcher::{
    JobCommand, JobLauncher, ProcessLauncher, ProcessLauncherConfig, WorkerPoolConfig,
};
use crate::limits::Limits;
use crate::schedule::{LocalSchedules, LoopTrigger, ScheduleStore, ScheduleTrigger};
use crate::service::{run_scheduler, JobService};
use crate::state::StateStore;
use crate::{Error, Result};

mod settings;

#[cfg(not(feature = "gcp"))]
use settings::NO_GCP;
pub use settings::*;

/// `with_<name>(value)` setters of single [`ServerSettings`] fields on [`ServerBuilder`].
macro_rules! settings_setters {
    ($($name:ident: $field:ident: $ty:ty,)*) => {$(
        #[doc = concat!("Sets [`ServerSettings::", stringify!($field), "`].")]
        pub fn $name(mut self, value: $ty) -> Self {
            self.settings.$field = value;
            self
        }
    )*};
}

/// Builds a [`Server`] from [`ServerSettings`]; validation happens in [`build`](Self::build).
#[derive(Debug, Clone, Default)]
pub struct ServerBuilder {
    settings: ServerSettings,
}

impl ServerBuilder {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The defaults, overridden by every variable of [`crate::env`] that is set. Takes (and
    /// removes) the static token of [`crate::env::AUTH_TOKEN`], see [`take_auth_token_from_env`].
    pub fn from_env() -> Result<Self> {
        Ok(ServerBuilder {
            settings: ServerSettings::from_env()?,
        })
    }

    settings_setters! {
        with_job_settings: job: JobSettings,
        with_launcher: launcher: LauncherKind,
        with_host: host: IpAddr,
        with_port: port: u16,
        with_max_concurrent_jobs: max_concurrent_jobs: usize,
        with_dbt_workers: dbt_workers: usize,
        with_max_upload_bytes: max_upload_bytes: u64,
        with_cancel_grace: cancel_grace: Duration,
        with_public_url: public_url: Option<String>,
        with_accept_client_profiles: accept_client_profiles: bool,
        with_auth: auth: AuthSettings,
    }

    /// Every setting at once.
    pub fn with_settings(mut self, settings: ServerSettings) -> Self {
        self.settings = settings;
        self
    }

    pub fn with_job_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.settings.job_program = Some(program.into());
        self
    }

    /// Checks the settings, opens the store, makes the launcher and the service, and takes
    /// over the jobs a previous server left queued or running.
    pub async fn build(self) -> Result<Server> {
        let mut settings = self.settings;
        let verifier = verifier(&settings)?;
        if let Some(url) = &settings.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(Error::invalid(format!(
                    "--public-url {url:?} must start with http:// or https://"
                )));
            }
        }
        settings.job = settings.job.absolute()?;
        let state_lock = Arc::new(lock_state_dir(&settings.job.state_dir)?);
        let store = settings.job.open_store().await?;
        let launcher = launcher(&settings, store.clone()).await?;
        let schedules = schedule_store(&settings).await?;
        let trigger = schedule_trigger(&settings).await?;
        tracing::info!("{}", trigger.describe());
        let limits = Limits {
            job: settings.job.limits,
            zip: settings.zip,
            max_schedules: settings.max_schedules,
        };
        let service = JobService::new(store, launcher)
            .with_schedules(schedules)
            .with_trigger(trigger)
            .with_limits(limits);
        service.recover().await?;
        service.reconcile_triggers().await?;
        Ok(Server {
            settings,
            service,
            verifier,
            _state_lock: state_lock,
        })
    }
}

/// Name of the lock file a server holds in its state dir for as long as it runs.
pub const SERVER_LOCK_FILE: &str = "server.lock";

/// Takes `<state dir>/server.lock` (an exclusive `flock`, dropped by the kernel when the
/// server dies, however it dies): a second server on the same state dir is refused with the
/// reason. Job processes (`dbt-server run-job`) do not take it.
fn lock_state_dir(state_dir: &std::path::Path) -> Result<std::fs::File> {
    let io =
        |e: std::io::Error| Error::backend("dbt-server", format!("{}: {e}", state_dir.display()));
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let path = state_dir.join(SERVER_LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::unavailable(format!(
            "another dbt-server is already running on the state dir {} (it holds {}); stop \
             it first, or give this one another --state-dir",
            state_dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// The authentication of the settings.
fn verifier(settings: &ServerSettings) -> Result<Verifier> {
    let auth = &settings.auth;
    let mut builder = Verifier::builder();
    if let Some(hex) = &auth.token_sha256 {
        builder = builder.with_token_sha256(hex.as_str());
    }
    if let Some(token) = &auth.token {
        builder = builder.with_token(token.as_str());
    }
    if auth.google {
        let audience = auth
            .audience
            .clone()
            .or_else(|| settings.public_url.clone())
            .ok_or_else(|| {
                Error::invalid(
                    "--auth-google needs --auth-audience or --public-url: the URL clients use",
                )
            })?;
        builder = builder
            .with_google_id_tokens(audience)
            .with_jwks_url(auth.jwks_url.as_str())
            .with_allowed_emails(auth.allowed_emails.clone());
    } else if auth.audience.is_some() || !auth.allowed_emails.is_empty() {
        return Err(Error::invalid(
            "--auth-audience and --auth-allowed-emails need --auth-google",
        ));
    }
    builder.build()
}

/// The launcher of the settings.
async fn launcher(
    settings: &ServerSettings,
    store: Arc<dyn StateStore>,
) -> Result<Arc<dyn JobLauncher>> {
    match settings.launcher {
        LauncherKind::Process => {
            let program = match &settings.job_program {
                Some(p) => p.clone(),
                None => std::env::current_exe().map_err(|e| Error::backend("dbt-server", e))?,
            };
            let runs_dir = settings.job.state_dir.join("runs");
            Ok(Arc::new(ProcessLauncher::new(
                store,
                ProcessLauncherConfig {
                    command: JobCommand {
                        program,
                        args: vec!["run-job".into()],
                        env: settings.job.to_env(),
                    },
                    runs_dir: runs_dir.clone(),
                    max_concurrent: settings.max_concurrent_jobs,
                    cancel_grace: settings.cancel_grace,
                    watch_interval: Duration::from_secs(1),
                    dbt_workers: (settings.dbt_workers > 0).then(|| WorkerPoolConfig {
                        workers: settings.dbt_workers,
                        python: settings.job.runner_config().python(),
                        dir: runs_dir.clone(),
                        job_env: settings.job.job_env.clone(),
                    }),
                },
            )?))
        }
        #[cfg(feature = "gcp")]
        LauncherKind::CloudRun => {
            if settings.job.state != StateKind::Gcp {
                return Err(Error::invalid(
                    "--launcher cloud-run needs --state gcp: the executions cannot see this \
                     machine's state dir",
                ));
            }
            let mut builder = crate::launcher::CloudRunLauncher::builder()
                .from_env()
                .with_lease(settings.launch_lease);
            // The executions run as local job processes do: the same job settings, and the
            // same store.
            for (name, value) in settings.execution_env() {
                builder = builder.with_env(name, value);
            }
            Ok(Arc::new(builder.build(store).await?))
        }
        #[cfg(not(feature = "gcp"))]
        LauncherKind::CloudRun => {
            drop(store);
            Err(Error::invalid(format!("--launcher cloud-run: {NO_GCP}")))
        }
    }
}

/// Where schedules are kept: beside the jobs, in `<state dir>/schedules` or, with `--state
/// gcp`, in Firestore (`<prefix>schedules`), so that every instance sees them.
async fn schedule_store(settings: &ServerSettings) -> Result<Arc<dyn ScheduleStore>> {
    match settings.job.state {
        StateKind::Local => Ok(Arc::new(LocalSchedules::new(
            settings.job.state_dir.join("schedules"),
        )?)),
        #[cfg(feature = "gcp")]
        StateKind::Gcp => Ok(Arc::new(
            crate::schedule::FirestoreSchedules::builder()
                .from_env()
                .build()
                .await?,
        )),
        #[cfg(not(feature = "gcp"))]
        StateKind::Gcp => Err(Error::invalid(format!("--state gcp: {NO_GCP}"))),
    }
}

/// What fires schedules ([`SchedulerSettings`]).
async fn schedule_trigger(settings: &ServerSettings) -> Result<Arc<dyn ScheduleTrigger>> {
    match settings.scheduler.kind {
        SchedulerKind::Loop => Ok(Arc::new(LoopTrigger)),
        #[cfg(feature = "gcp")]
        SchedulerKind::CloudScheduler => {
            let s = &settings.scheduler;
            let mut builder = crate::schedule::CloudSchedulerTrigger::builder().from_env();
            if let Some(region) = &s.region {
                builder = builder.with_region(region);
            }
            if let Some(email) = &s.service_account {
                builder = builder.with_service_account(email);
            }
            if let Some(prefix) = &s.job_prefix {
                builder = builder.with_prefix(prefix);
            }
            if let Some(url) = &settings.public_url {
                builder = builder.with_public_url(url);
            }
            // The ID tokens' audience is the one the server checks (default: the public URL).
            if let Some(audience) = &settings.auth.audience {
                builder = builder.with_audience(audience);
            }
            Ok(Arc::new(builder.build().await?))
        }
        #[cfg(not(feature = "gcp"))]
        SchedulerKind::CloudScheduler => Err(Error::invalid(format!(
            "--scheduler cloud-scheduler: {NO_GCP}"
        ))),
    }
}

/// A built server: the service to serve, who may call it, and the resolved settings.
#[derive(Debug, Clone)]
pub struct Server {
    settings: ServerSettings,
    service: JobService,
    verifier: Verifier,
    /// `<state dir>/server.lock`, held while any clone of the server lives.
    _state_lock: Arc<std::fs::File>,
}

impl Server {
    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    pub fn service(&self) -> &JobService {
        &self.service
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The address to listen on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.settings.host, self.settings.port)
    }

    /// Starts the scheduler (it fires due schedules every second, unless the trigger fires
    /// them from outside: Cloud Scheduler) and, unless
    /// [`ServerSettings::gc_interval`] is zero, the retention passes, in tasks.
    pub fn start_scheduler(&self) -> Scheduler {
        let stop = CancellationToken::new();
        // With Cloud Scheduler, schedules fire through the run endpoint, not here.
        if self.service.trigger().fires_in_server() {
            tokio::spawn(run_scheduler(
                self.service.clone(),
                Duration::from_secs(1),
                stop.clone(),
            ));
        }
        if !self.settings.gc_interval.is_zero() {
            tokio::spawn(crate::retention::run_periodically(
                self.service.store().clone(),
                self.service.schedules().clone(),
                self.settings.retention_policy(),
                self.settings.gc_interval,
                stop.clone(),
            ));
        }
        Scheduler { stop }
    }
}

/// A running scheduler; [`stop`](Self::stop) it at shutdown.
#[derive(Debug)]
pub struct Scheduler {
    stop: CancellationToken,
}

impl Scheduler {
    pub fn stop(self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_that_cannot_work_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let job = JobSettings {
            state_dir: dir.path().join("state"),
            ..Default::default()
        };
        let base = ServerBuilder::new().with_job_settings(job);
        let err = base
            .clone()
            .with_public_url(Some("ftp://x".into()))
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("must start with http"), "{err}");
        let err = base
            .clone()
            .with_auth(AuthSettings {
                google: true,
                ..Default::default()
            })
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--auth-audience"), "{err}");
        let first = base.clone().build().await.unwrap();
        let err = base.clone().build().await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("another dbt-server"), "{err}");
        drop(first);
        drop(base.clone().build().await.unwrap());
        // Cloud Scheduler without its settings (or without the `gcp` feature) says what is
        // missing, and no server starts.
        let cloud_scheduler = ServerSettings {
            scheduler: SchedulerSettings {
                kind: SchedulerKind::CloudScheduler,
                ..Default::default()
            },
            job: base.settings.job.clone(),
            ..Default::default()
        };
        let err = ServerBuilder::new()
            .with_settings(cloud_scheduler)
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        assert!(
            err.to_string().contains("--scheduler cloud-scheduler"),
            "{err}"
        );
        #[cfg(not(feature = "gcp"))]
        {
            let err = base
                .clone()
                .with_launcher(LauncherKind::CloudRun)
                .build()
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("without the `gcp` feature"),
                "{err}"
            );
        }
    }
}
