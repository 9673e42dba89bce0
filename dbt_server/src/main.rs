//! `dbt-server`: the HTTP server of dbt-remote (`dbt-server [serve]`) and the job entry point
//! that each job process or Cloud Run Job executes (`dbt-server run-job <ID>`).
// The warp filter of every route is one deep type; release builds need more room for it.
#![recursion_limit = "256"]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dbt_remote_core::auth::{Verifier, GOOGLE_JWKS_URL};
use dbt_remote_core::env;
use dbt_remote_core::launcher::{JobCommand, ProcessLauncherConfig, RunnerLock};
use dbt_remote_core::runner::{run_job, RunnerConfig};
use dbt_remote_core::schedule::{run_scheduler, LocalSchedules};
use dbt_remote_core::state::EchoLogs;
use dbt_remote_core::{JobId, JobLauncher, JobService, LocalStore, ProcessLauncher, StateStore};
use tokio_util::sync::CancellationToken;

use dbt_server::Config;

#[derive(Parser, Debug)]
#[command(
    name = "dbt-server",
    version,
    about = "Runs dbt jobs submitted over HTTP, keeping their state, logs and artifacts.",
    after_help = "Examples:\n  dbt-server --profiles-dir examples/profiles\n  PORT=8080 dbt-server --host 0.0.0.0 --state-dir /var/lib/dbt-remote\n  dbt-server run-job 0190c2a4-7c1e-7b4a-9f3e-2d1c0b9a8f7e --state-dir /var/lib/dbt-remote",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Run one job to its end (the job entry point the server starts; exits with dbt's code).
    RunJob(RunJobArgs),
}

/// Where jobs live.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum StateKind {
    /// In the state dir.
    Local,
    /// In Firestore and Cloud Storage (DBT_REMOTE_GCP_PROJECT, DBT_REMOTE_GCS_BUCKET, …;
    /// needs a build with the `gcp` feature).
    Gcp,
}

/// Where jobs run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LauncherKind {
    /// As child processes of dbt-server (`dbt-server run-job <id>`).
    Process,
    /// As executions of one Cloud Run Job (DBT_REMOTE_CLOUD_RUN_*; needs `--state gcp` and a
    /// build with the `gcp` feature).
    CloudRun,
}

#[derive(Args, Debug, Clone)]
struct StateArgs {
    /// Where jobs, logs, artifacts and uploaded files live.
    #[arg(long = "state", env = env::STATE, value_enum, default_value_t = StateKind::Local)]
    state: StateKind,
    /// Folder of the local state store (jobs, logs, artifacts, uploaded files); with
    /// `--state gcp`, of the job processes' lock and output files and of schedules only.
    #[arg(long, env = env::STATE_DIR, default_value = ".dbt-remote/state")]
    state_dir: PathBuf,
    /// Folder in which each job gets a fresh work dir [default: <state dir>/../work].
    #[arg(long, env = env::WORK_DIR)]
    work_dir: Option<PathBuf>,
    /// The dbt executable.
    #[arg(long = "dbt", env = env::DBT_PATH, default_value = "dbt")]
    dbt_path: PathBuf,
    /// The Python that runs manifest-only jobs [default: the python beside dbt, else python3].
    #[arg(long, env = env::PYTHON)]
    python: Option<PathBuf>,
    /// dbt's profiles dir, owned by the server (jobs name only --profile/--target).
    #[arg(long, env = env::PROFILES_DIR)]
    profiles_dir: Option<PathBuf>,
    /// Keep each job's work dir after it ends, for debugging.
    #[arg(
        long,
        env = env::KEEP_WORK_DIRS,
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    keep_work_dirs: bool,
}

#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// Where jobs run.
    #[arg(long, env = env::LAUNCHER, value_enum, default_value_t = LauncherKind::Process)]
    launcher: LauncherKind,
    /// Port to listen on (Cloud Run sets PORT).
    #[arg(long, env = env::PORT, default_value_t = 8001)]
    port: u16,
    /// Address to bind; use 0.0.0.0 to accept connections from other machines.
    #[arg(long, env = env::HOST, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Jobs running at once; more wait queued, in order.
    #[arg(long, env = env::MAX_CONCURRENT_JOBS, default_value_t = 4)]
    max_concurrent_jobs: usize,
    /// Largest accepted request body or uploaded file, in bytes.
    #[arg(long, env = env::MAX_UPLOAD_BYTES, default_value_t = 64 * 1024 * 1024)]
    max_upload_bytes: u64,
    /// Seconds a cancelled job has to stop before it is killed.
    #[arg(long, env = env::CANCEL_GRACE_SECONDS, default_value_t = 30)]
    cancel_grace_seconds: u64,
    /// The server's base URL as clients reach it, for links in 0.4.6-protocol answers
    /// [default: http://<listen address>/, or the request's Host when listening on all addresses].
    #[arg(long, env = env::PUBLIC_URL)]
    public_url: Option<String>,
    /// Run 0.4.6-protocol jobs with the profiles.yml their client sends, instead of the
    /// server's own profiles.
    #[arg(
        long,
        env = env::ACCEPT_CLIENT_PROFILES,
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    accept_client_profiles: bool,
    /// Require this static token on every route but /health, /check and /version: its
    /// SHA-256 in hex (`printf %s "$TOKEN" | sha256sum`). Clients send `Authorization: Bearer
    /// <token>`. DBT_REMOTE_AUTH_TOKEN may give the token itself instead.
    #[arg(long, env = env::AUTH_TOKEN_SHA256, value_name = "HEX")]
    auth_token_sha256: Option<String>,
    /// Accept Google ID tokens (signed by Google, for --auth-audience, unexpired) on every route
    /// but /health, /check and /version.
    #[arg(
        long,
        env = env::AUTH_GOOGLE,
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    auth_google: bool,
    /// The audience Google ID tokens must have: the URL clients use [default: --public-url].
    #[arg(long, env = env::AUTH_AUDIENCE, value_name = "URL")]
    auth_audience: Option<String>,
    /// Where Google's public keys are fetched (keys are cached).
    #[arg(long, env = env::AUTH_JWKS_URL, value_name = "URL", default_value = GOOGLE_JWKS_URL)]
    auth_jwks_url: String,
    /// Accept Google ID tokens of these emails only (comma-separated) [default: any].
    #[arg(long, env = env::AUTH_ALLOWED_EMAILS, value_name = "EMAILS", value_delimiter = ',')]
    auth_allowed_emails: Vec<String>,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Args, Debug)]
struct RunJobArgs {
    /// The job to run.
    #[arg(env = env::JOB_ID)]
    job_id: JobId,
    /// Also print each log record as a Cloud Logging JSON line on stdout [default: on inside
    /// a Cloud Run Job, i.e. when CLOUD_RUN_JOB is set].
    #[arg(
        long,
        env = env::LOG_JSON,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    log_json: Option<bool>,
    #[command(flatten)]
    state: StateArgs,
}

impl StateArgs {
    fn absolute(&self) -> std::io::Result<StateArgs> {
        let abs = |p: &Path| std::path::absolute(p);
        let state_dir = abs(&self.state_dir)?;
        let work_dir = match &self.work_dir {
            Some(w) => abs(w)?,
            None => state_dir.parent().unwrap_or(&state_dir).join("work"),
        };
        // A bare program name is looked up on PATH; a path is made absolute.
        let program = |p: &Path| {
            if p.components().count() > 1 {
                abs(p)
            } else {
                Ok(p.to_path_buf())
            }
        };
        let dbt_path = program(&self.dbt_path)?;
        Ok(StateArgs {
            state: self.state,
            state_dir,
            work_dir: Some(work_dir),
            dbt_path,
            python: self.python.as_deref().map(program).transpose()?,
            profiles_dir: self.profiles_dir.as_deref().map(abs).transpose()?,
            keep_work_dirs: self.keep_work_dirs,
        })
    }

    /// Opens the store `--state` names (a GCP store takes its settings from the environment,
    /// which the job processes inherit).
    async fn open_store(&self) -> Result<Arc<dyn StateStore>, BoxError> {
        match self.state {
            StateKind::Local => Ok(Arc::new(LocalStore::new(&self.state_dir)?)),
            #[cfg(feature = "gcp")]
            StateKind::Gcp => Ok(Arc::new(
                dbt_remote_core::state::GcpStore::builder()
                    .from_env()
                    .build()
                    .await?,
            )),
            #[cfg(not(feature = "gcp"))]
            StateKind::Gcp => Err("--state gcp: this dbt-server was built without the `gcp` \
                 feature (cargo build --release --features gcp)"
                .into()),
        }
    }

    /// Where the state is, for the log.
    fn describe(&self) -> String {
        match self.state {
            StateKind::Local => format!("state in {}", self.state_dir.display()),
            StateKind::Gcp => "state in Firestore + Cloud Storage".into(),
        }
    }

    fn runner_config(&self) -> RunnerConfig {
        let mut config = RunnerConfig::new(self.work_dir.clone().expect("made absolute"));
        config.dbt_path = self.dbt_path.clone();
        config.python_path = self.python.clone();
        config.profiles_dir = self.profiles_dir.clone();
        config.keep_work_dir = self.keep_work_dirs;
        config
    }

    /// The arguments that make `run-job` see the same state and runner config.
    fn run_job_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["run-job".into()];
        if self.state == StateKind::Gcp {
            args.extend(["--state".into(), "gcp".into()]);
        }
        args.extend([
            "--state-dir".into(),
            self.state_dir.clone().into_os_string(),
        ]);
        if let Some(w) = &self.work_dir {
            args.extend(["--work-dir".into(), w.clone().into_os_string()]);
        }
        args.extend(["--dbt".into(), self.dbt_path.clone().into_os_string()]);
        if let Some(p) = &self.python {
            args.extend(["--python".into(), p.clone().into_os_string()]);
        }
        if let Some(p) = &self.profiles_dir {
            args.extend(["--profiles-dir".into(), p.clone().into_os_string()]);
        }
        if self.keep_work_dirs {
            args.push("--keep-work-dirs".into());
        }
        args
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The static token itself: read, then removed from the environment that job processes and
    // dbt inherit (no other thread runs yet).
    let auth_token = std::env::var(env::AUTH_TOKEN)
        .ok()
        .filter(|t| !t.is_empty());
    std::env::remove_var(env::AUTH_TOKEN);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::RunJob(args)) => run_job_command(args).await,
            Some(Command::Serve(args)) => serve(args, auth_token).await,
            None => serve(cli.serve, auth_token).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&*e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::from(1)
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The authentication of the serve flags (and DBT_REMOTE_AUTH_TOKEN).
fn verifier(args: &ServeArgs, token: Option<String>) -> Result<Verifier, BoxError> {
    let mut builder = Verifier::builder();
    if let Some(hex) = &args.auth_token_sha256 {
        builder = builder.with_token_sha256(hex.as_str());
    }
    if let Some(token) = token {
        builder = builder.with_token(token);
    }
    if args.auth_google {
        let audience = args
            .auth_audience
            .clone()
            .or_else(|| args.public_url.clone())
            .ok_or("--auth-google needs --auth-audience or --public-url: the URL clients use")?;
        builder = builder
            .with_google_id_tokens(audience)
            .with_jwks_url(args.auth_jwks_url.as_str())
            .with_allowed_emails(args.auth_allowed_emails.clone());
    } else if args.auth_audience.is_some() || !args.auth_allowed_emails.is_empty() {
        return Err("--auth-audience and --auth-allowed-emails need --auth-google".into());
    }
    Ok(builder.build()?)
}

/// The launcher `--launcher` names.
async fn launcher(
    args: &ServeArgs,
    state: &StateArgs,
    store: Arc<dyn StateStore>,
) -> Result<Arc<dyn JobLauncher>, BoxError> {
    match args.launcher {
        LauncherKind::Process => Ok(Arc::new(ProcessLauncher::new(
            store,
            ProcessLauncherConfig {
                command: JobCommand {
                    program: std::env::current_exe()?,
                    args: state.run_job_args(),
                },
                runs_dir: state.state_dir.join("runs"),
                max_concurrent: args.max_concurrent_jobs,
                cancel_grace: Duration::from_secs(args.cancel_grace_seconds),
                watch_interval: Duration::from_secs(1),
            },
        )?)),
        #[cfg(feature = "gcp")]
        LauncherKind::CloudRun => {
            if state.state != StateKind::Gcp {
                return Err("--launcher cloud-run needs --state gcp: the executions cannot                      see this machine's state dir"
                    .into());
            }
            let mut builder = dbt_remote_core::launcher::CloudRunLauncher::builder().from_env();
            // The executions open the same store: pass its settings on.
            builder = builder.with_env(env::STATE, "gcp");
            for var in env::GCP_STORE_SETTINGS {
                if let Some(value) = std::env::var_os(var) {
                    builder = builder.with_env(*var, value.to_string_lossy());
                }
            }
            Ok(Arc::new(builder.build(store).await?))
        }
        #[cfg(not(feature = "gcp"))]
        LauncherKind::CloudRun => Err("--launcher cloud-run: this dbt-server was built \
             without the `gcp` feature (cargo build --release --features gcp)"
            .into()),
    }
}

async fn serve(args: ServeArgs, auth_token: Option<String>) -> Result<ExitCode, BoxError> {
    let auth = verifier(&args, auth_token)?;
    let state = args.state.absolute()?;
    let store = state.open_store().await?;
    let launcher = launcher(&args, &state, store.clone()).await?;
    if let Some(url) = &args.public_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("--public-url {url:?} must start with http:// or https://").into());
        }
    }
    let schedules = LocalSchedules::new(state.state_dir.join("schedules"))?;
    let service = JobService::new(store, launcher).with_schedules(Arc::new(schedules));
    service.recover().await?;
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("could not listen on {addr}: {e}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        "dbt-server {} listening on http://{addr} ({})",
        env!("CARGO_PKG_VERSION"),
        state.describe()
    );
    let config = Config {
        public_url: args
            .public_url
            .or_else(|| (!addr.ip().is_unspecified()).then(|| format!("http://{addr}/"))),
        accept_client_profiles: args.accept_client_profiles,
        auth,
        ..Config::new(addr.port(), args.max_upload_bytes)
    };
    tracing::info!("authentication: {}", config.auth.describe());
    if !config.auth.is_enabled() && !addr.ip().is_loopback() {
        tracing::warn!(
            "authentication is off and {addr} is reachable from other machines: anyone who \
             reaches it can run dbt with the server's profiles (see docs/deployment.md)"
        );
    }
    let stop_scheduler = CancellationToken::new();
    tokio::spawn(run_scheduler(
        service.clone(),
        Duration::from_secs(1),
        stop_scheduler.clone(),
    ));
    // Open log streams last as long as their jobs: give them a few seconds after a stop
    // signal, then leave (the jobs go on and the next server takes them over).
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = dbt_server::serve(listener, service, config, async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(());
    });
    tokio::select! {
        _ = server => {}
        _ = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        } => tracing::info!("closing the remaining log streams"),
    }
    stop_scheduler.cancel();
    tracing::info!("dbt-server stopped; running jobs go on and are taken over at the next start");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn run_job_command(args: RunJobArgs) -> Result<ExitCode, BoxError> {
    let _lock = RunnerLock::acquire_from_env()?;
    let state = args.state.absolute()?;
    let mut store = state.open_store().await?;
    let in_cloud_run_job = std::env::var_os(env::IN_CLOUD_RUN_JOB).is_some();
    if args.log_json.unwrap_or(in_cloud_run_job) {
        store = Arc::new(EchoLogs::new(store));
    }
    let cancel = CancellationToken::new();
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            shutdown_signal().await;
            tracing::warn!("stop signal received: interrupting dbt");
            cancel.cancel();
        }
    });
    let job = run_job(store, args.job_id, &state.runner_config(), cancel).await?;
    tracing::info!(job = %job.id, status = %job.status, exit_code = ?job.exit_code, "job ended");
    Ok(match (job.status, job.exit_code) {
        (dbt_remote_core::JobStatus::Succeeded, _) => ExitCode::SUCCESS,
        (_, Some(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)),
        _ => ExitCode::from(1),
    })
}
