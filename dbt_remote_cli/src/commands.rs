//! dbt-remote's own commands: config, debug, jobs, logs, status, cancel, artifacts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use dbt_remote_core::config::{self, ConfigFile, Settings, KEYS};
use dbt_remote_core::package::pack_job;
use dbt_remote_core::{Error, JobId, Result};

use crate::{output, run, Context};

/// What to do about refused credentials (also the CLI's hint).
pub const CREDENTIALS_FIX: &str = "set DBT_REMOTE_TOKEN (a server with a static token) or \
--credentials <service-account key file> (a server that checks Google ID tokens)";

pub const CONFIG_HELP: &str = "\
Settings live in dbt_remote.yml in the current folder. Precedence: flag > environment
(DBT_REMOTE_<KEY>, e.g. DBT_REMOTE_SERVER_URL) > dbt_remote.yml > default.

Keys: server_url, project_dir, manifest, dbt_project, extra_packages, seeds_path, location,
creds_path, elementary.

Examples:
  dbt-remote config init
  dbt-remote config set server_url=http://10.0.0.5:8001 project_dir=analytics
  dbt-remote config get server_url
  dbt-remote config show
  dbt-remote config delete manifest";

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Write dbt_remote.yml with the defaults (keeps values already set)
    Init,
    /// Set keys: `config set key=value [key=value…]`
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Print the values of keys in dbt_remote.yml
    Get {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Print every setting in force and where it comes from
    Show,
    /// Remove keys from dbt_remote.yml
    Delete {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
}

fn config_file() -> Result<ConfigFile> {
    let dir = std::env::current_dir()
        .map_err(|e| Error::invalid(format!("the current folder cannot be read: {e}")))?;
    ConfigFile::load(&dir)
}

pub fn config(command: ConfigCommand) -> Result<ExitCode> {
    let mut file = config_file()?;
    match command {
        ConfigCommand::Init => {
            file.set_defaults();
            file.save()?;
            output::note(format!("wrote {}", file.path().display()));
        }
        ConfigCommand::Set { pairs } => {
            for pair in &pairs {
                let (key, value) = pair.split_once('=').ok_or_else(|| {
                    Error::invalid(format!(
                        "{pair:?} is not KEY=VALUE (e.g. server_url=http://127.0.0.1:8001)"
                    ))
                })?;
                file.set(key.trim(), value.trim())?;
            }
            file.save()?;
        }
        ConfigCommand::Get { keys } => {
            for key in &keys {
                config::key(key)?;
            }
            for key in &keys {
                println!("{key}: {}", file.get(key).unwrap_or(""));
            }
        }
        ConfigCommand::Show => {
            let settings =
                Settings::resolve(&Default::default(), |v| std::env::var(v).ok(), &file)?;
            show_settings(&settings);
        }
        ConfigCommand::Delete { keys } => {
            for key in &keys {
                if !file.delete(key)? {
                    output::note(format!("{key} was not set"));
                }
            }
            file.save()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show_settings(settings: &Settings) {
    for key in KEYS {
        match (settings.get(key.name), settings.source(key.name)) {
            (Some(v), Some(source)) => println!("{:<15} {v}  ({source})", key.name),
            _ => println!("{:<15} -", key.name),
        }
    }
}

#[derive(Args, Debug)]
pub struct DebugArgs {
    /// Arguments for `dbt debug` on the server (e.g. --target prod)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Local checks, each with what to fix, then `dbt debug` on the server.
pub async fn debug(ctx: &Context, args: DebugArgs) -> Result<ExitCode> {
    let mut ok = true;
    let mut check = |good: bool, what: String, fix: &str| {
        if good {
            println!("  OK    {what}");
        } else {
            ok = false;
            println!("  FAIL  {what}\n        fix: {fix}");
        }
    };
    println!("settings:");
    show_settings(&ctx.settings);
    println!("project:");
    let files = ctx.job_files();
    match pack_job(&files) {
        Ok(files) => {
            let bytes: usize = files.iter().map(|f| f.content.len()).sum();
            check(
                true,
                format!("{} files to send ({bytes} bytes)", files.len()),
                "",
            );
        }
        Err(e) => check(
            false,
            format!("{e}"),
            "run in a dbt project folder or set --project-dir / project_dir",
        ),
    }
    println!("server:");
    let client = ctx.client()?;
    let reachable = match client.health().await {
        Ok(health) => {
            check(
                true,
                format!(
                    "{} answers: dbt-server {}",
                    client.base_url(),
                    health.version
                ),
                "",
            );
            true
        }
        Err(e) => {
            check(
                false,
                format!("{} cannot be reached: {e}", client.base_url()),
                "start dbt-server or set --server-url / server_url",
            );
            false
        }
    };
    if !reachable {
        return Ok(ExitCode::from(crate::exit::UNAVAILABLE));
    }
    // /health is open to all; listing one job shows whether the credentials are accepted.
    let sent = client.auth().describe();
    match client.jobs(None, Some(1), None).await {
        Ok(_) => check(true, format!("credentials accepted (sent: {sent})"), ""),
        Err(Error::Unauthenticated(m)) => {
            check(false, format!("credentials refused: {m}"), CREDENTIALS_FIX);
            return Ok(ExitCode::from(crate::exit::NOPERM));
        }
        Err(e) => check(
            false,
            format!("listing jobs failed: {e}"),
            "see the server log",
        ),
    }
    if !ok {
        return Ok(ExitCode::from(crate::exit::USAGE));
    }
    println!("dbt debug on the server:");
    let mut dbt_args = vec!["debug".to_string()];
    dbt_args.extend(args.args);
    run::dbt(ctx, dbt_args, false).await
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Only jobs with this status: queued, running, succeeded, failed, cancelled
    #[arg(long)]
    status: Option<String>,
    /// How many jobs
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

pub async fn jobs(ctx: &Context, args: JobsArgs) -> Result<ExitCode> {
    let list = ctx
        .client()?
        .jobs(args.status.as_deref(), Some(args.limit), None)
        .await?;
    println!(
        "{:<36}  {:<9}  {:<19}  {:>8}  COMMAND",
        "ID", "STATUS", "CREATED", "DURATION"
    );
    for job in list.jobs {
        let duration = match (job.started_at, job.finished_at) {
            (Some(s), Some(f)) => format!("{:.1}s", (f - s).as_seconds_f64()),
            (Some(s), None) => format!("{:.0}s…", (chrono::Utc::now() - s).as_seconds_f64()),
            _ => "-".into(),
        };
        println!(
            "{}  {:<9}  {}  {:>8}  dbt {}",
            job.id,
            job.status,
            job.created_at.format("%Y-%m-%d %H:%M:%S"),
            duration,
            job.args.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct JobArg {
    /// The job's id (printed when it was submitted; `dbt-remote jobs` lists them)
    id: String,
}

fn job_id(id: &str) -> Result<JobId> {
    id.parse()
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The job's id
    id: String,
    /// Keep printing until the job ends; then exit with the job's status
    #[arg(long, short)]
    follow: bool,
}

pub async fn logs(ctx: &Context, args: LogsArgs) -> Result<ExitCode> {
    let id = job_id(&args.id)?;
    let client = ctx.client()?;
    if args.follow {
        return run::follow(ctx, &client, id, false).await;
    }
    let mut after = 0;
    loop {
        let page = client.logs(id, after, None).await?;
        for record in &page.records {
            output::record(record, ctx.log_level);
        }
        after = page.next_after;
        if page.records.is_empty() || page.done {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The job's id
    id: String,
    /// Print the job as JSON
    #[arg(long)]
    json: bool,
}

pub async fn status(ctx: &Context, args: StatusArgs) -> Result<ExitCode> {
    let job = ctx.client()?.job(job_id(&args.id)?).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    println!("job:       {}", job.id);
    println!("command:   dbt {}", job.args.join(" "));
    println!("status:    {}", job.status);
    println!("created:   {}", job.created_at.to_rfc3339());
    if let Some(s) = job.started_at {
        println!("started:   {}", s.to_rfc3339());
    }
    if let Some(f) = job.finished_at {
        println!("finished:  {}", f.to_rfc3339());
    }
    if let Some(code) = job.exit_code {
        println!("exit code: {code}");
    }
    if let Some(reason) = &job.failure_reason {
        println!("reason:    {reason}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(ctx: &Context, args: JobArg) -> Result<ExitCode> {
    let job = ctx.client()?.cancel(job_id(&args.id)?).await?;
    if job.status.is_final() {
        output::note(format!("job {} is {}", job.id, job.status));
    } else {
        output::note(format!(
            "job {}: cancel requested; it ends `cancelled` shortly",
            job.id
        ));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ArtifactsArgs {
    /// The job's id
    id: String,
    /// Where to write them [default: the project's target/, so local --state works]
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
}

pub async fn artifacts(ctx: &Context, args: ArtifactsArgs) -> Result<ExitCode> {
    let id = job_id(&args.id)?;
    let client = ctx.client()?;
    let dir = args
        .output_dir
        .unwrap_or_else(|| ctx.project_dir().join("target"));
    let written = client.download_artifacts(id, &dir).await?;
    if written.is_empty() {
        output::note(format!("job {id} has no artifacts (yet)"));
    }
    for path in written {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
