//! `dbt-server`: the HTTP server of dbt-remote (`dbt-server [serve]`) and the job entry point
//! that each job process or Cloud Run Job executes (`dbt-server run-job <ID>`). The flags are
//! in `cli.rs`, the wiring in [`dbt_remote_core::server`]: this builds, serves and exits.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use dbt_remote_core::launcher::RunnerLock;
use dbt_remote_core::server::{
    apply_original_env, take_auth_token_from_env, Choice, JobSettings, ServerBuilder,
    ServerSettings,
};
use dbt_remote_core::state::EchoLogs;
use dbt_remote_core::{env, runner, JobOutcome};
use tokio_util::sync::CancellationToken;

mod cli;
mod edge_args;
mod scheduler_args;

use cli::{Cli, Command, RunJobArgs};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    // First, while no other thread runs: the initial environment leaves /proc/<pid>/environ
    // and the process becomes non-dumpable (dbt_remote_core::isolation).
    let unprotected = dbt_remote_core::isolation::protect_this_process();
    // The original dbt-server's variables (BUCKET_NAME, …) as ours, while no other thread runs.
    let aliases = apply_original_env();
    let cli = Cli::parse();
    // Read, then removed from the environment that job processes and dbt inherit (no other
    // thread runs yet).
    let token = take_auth_token_from_env();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Not eprintln! when stderr cannot be written (a job's log file on a full disk): that
        // panics, and the runner must live on to write its job's end once space is freed.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    for problem in unprotected {
        tracing::warn!("{problem}");
    }
    for note in aliases {
        if note.is_conflict() {
            tracing::warn!("{note}");
        } else {
            tracing::info!("{note}");
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::RunJob(args)) => run_job(args).await,
            Some(Command::Serve(args)) => serve(args.choice(), args.settings(token)).await,
            None => serve(cli.serve.choice(), cli.serve.settings(token)).await,
        }
    });
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        let mut source = std::error::Error::source(&*e);
        while let Some(s) = source {
            eprintln!("  caused by: {s}");
            source = s.source();
        }
        ExitCode::from(1)
    })
}

async fn serve(choice: Choice, settings: ServerSettings) -> Result<ExitCode, BoxError> {
    // Before the build, so that a setting the choice needs and lacks is explained.
    for line in choice.lines(&settings) {
        tracing::info!("{line}");
    }
    let server = ServerBuilder::new().with_settings(settings).build().await?;
    let addr = server.addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("could not listen on {addr}: {e}"))?;
    let addr = listener.local_addr()?;
    let state = server.settings().job.describe();
    tracing::info!(
        "dbt-server {} listening on http://{addr} ({state})",
        env!("CARGO_PKG_VERSION")
    );
    let config = dbt_server::Config::of(&server, addr);
    tracing::info!("authentication: {}", config.auth.describe());
    let auth = &server.settings().auth;
    if auth.google && auth.allowed_emails.is_empty() {
        tracing::warn!(
            "--auth-google without --auth-allowed-emails: any Google account that gets an ID \
             token for this audience is accepted (anyone can); set --auth-allowed-emails \
             (DBT_REMOTE_AUTH_ALLOWED_EMAILS) to the accounts that may run jobs"
        );
    }
    if !config.auth.is_enabled() && !addr.ip().is_loopback() {
        tracing::warn!(
            "authentication is off and {addr} is reachable from other machines: anyone who \
             reaches it can run dbt with the server's profiles (see docs/deployment.md)"
        );
    }
    let scheduler = server.start_scheduler();
    // Open log streams last as long as their jobs: give them a few seconds after a stop
    // signal, then leave (the jobs go on and the next server takes them over).
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let served = dbt_server::serve(listener, server.service().clone(), config, async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(());
    });
    tokio::select! {
        _ = served => {}
        _ = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        } => tracing::info!("closing the remaining log streams"),
    }
    scheduler.stop();
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

async fn run_job(args: RunJobArgs) -> Result<ExitCode, BoxError> {
    let _lock = RunnerLock::acquire_from_env()?;
    let settings = JobSettings {
        dbt_worker_socket: args.dbt_worker_socket.clone(),
        ..args.state.settings()
    }
    .absolute()?;
    let mut store = settings.open_store().await?;
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
    let mut config = settings.runner_config();
    if let Some(grace) = args.cancel_grace_seconds {
        config.interrupt_grace = Duration::from_secs(grace);
    }
    let job = runner::run_job(store, args.job_id, &config, cancel).await?;
    tracing::info!(job = %job.id, status = %job.status, exit_code = ?job.exit_code, "job ended");
    Ok(ExitCode::from(
        JobOutcome::of_record(&job).run_job_exit_code(),
    ))
}
