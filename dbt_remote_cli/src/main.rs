//! `dbt-remote`: runs a dbt command on a dbt-server and streams its logs; exits with dbt's code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dbt_remote_core::client::StreamEvent;
use dbt_remote_core::package::pack_project;
use dbt_remote_core::{Client, Error, JobStatus, LogLevel, LogRecord};
use futures::StreamExt;

/// Exit codes of dbt-remote itself, apart from dbt's own 0, 1 and 2.
mod exit {
    /// The command line or the project is invalid.
    pub const USAGE: u8 = 64;
    /// The server could not be reached or answered with an error.
    pub const SERVER: u8 = 69;
    /// The job was cancelled.
    pub const CANCELLED: u8 = 130;
}

#[derive(Parser, Debug)]
#[command(
    name = "dbt-remote",
    version,
    about = "Run a dbt command on a dbt-server: the project is sent, dbt runs there, its logs stream here.",
    after_help = "Examples:\n  dbt-remote build\n  dbt-remote build --select orders+\n  dbt-remote --server-url http://127.0.0.1:8001 --project-dir examples/jaffle_duckdb run --vars '{fail: true}'\n\nExit status: dbt's own (0 success, 1 dbt failure, 2 dbt error); 64 bad command line or project;\n69 server unreachable or refusing; 130 job cancelled."
)]
struct Cli {
    /// URL of the dbt-server.
    #[arg(
        long,
        env = "DBT_REMOTE_SERVER_URL",
        default_value = "http://127.0.0.1:8001"
    )]
    server_url: String,
    /// The dbt project folder.
    #[arg(long, env = "DBT_REMOTE_PROJECT_DIR", default_value = ".")]
    project_dir: PathBuf,
    /// The dbt command and its arguments, e.g. `build --select orders+`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    dbt_args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dbt-remote: error: {e}");
            ExitCode::from(match e {
                Error::InvalidInput(_) | Error::TooLarge { .. } => exit::USAGE,
                Error::Server {
                    status: 400 | 413, ..
                } => exit::USAGE,
                _ => exit::SERVER,
            })
        }
    }
}

async fn run(cli: Cli) -> dbt_remote_core::Result<ExitCode> {
    let client = Client::new(&cli.server_url)?;
    let files = pack_project(&cli.project_dir)?;
    let (job, stats) = client.submit(cli.dbt_args.clone(), &files).await?;
    eprintln!(
        "dbt-remote: job {} submitted to {} ({} files, {} uploaded, {} bytes)",
        job.id,
        client.base_url(),
        stats.files,
        stats.uploaded_blobs,
        stats.uploaded_bytes
    );
    let mut events = std::pin::pin!(client.follow(job.id, 0));
    while let Some(event) = events.next().await {
        match event? {
            StreamEvent::Record(record) => print_record(&record),
            StreamEvent::End(job) => {
                eprintln!("dbt-remote: job {} {}", job.id, job.status);
                return Ok(match (job.status, job.exit_code) {
                    (JobStatus::Succeeded, _) => ExitCode::SUCCESS,
                    (JobStatus::Cancelled, _) => ExitCode::from(exit::CANCELLED),
                    (_, Some(code)) => ExitCode::from(u8::try_from(code).unwrap_or(2)),
                    _ => {
                        if let Some(reason) = &job.failure_reason {
                            eprintln!("dbt-remote: {reason}");
                        }
                        ExitCode::from(2)
                    }
                });
            }
        }
    }
    Err(Error::backend(
        "http",
        "the log stream ended without the job's end",
    ))
}

fn print_record(record: &LogRecord) {
    let e = &record.entry;
    let time = e.time.format("%H:%M:%S");
    match e.level {
        LogLevel::Debug | LogLevel::Info => println!("{time}  {}", e.message),
        LogLevel::Warn => println!("{time}  [WARN] {}", e.message),
        LogLevel::Error => println!("{time}  [ERROR] {}", e.message),
    }
}
