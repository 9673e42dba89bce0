//! `dbt-remote`: runs dbt commands on a dbt-server, streams their logs, exits with dbt's code.
//! A thin shell over `dbt_remote_core`: argv in, core calls, text out.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use dbt_remote_core::config::Settings;
use dbt_remote_core::{Error, LogLevel};

mod commands;
mod output;
mod run;

/// Exit statuses of dbt-remote, besides dbt's own 0, 1 and 2 (docs/cli.md).
pub mod exit {
    /// Bad command line, settings or project.
    pub const USAGE: u8 = 64;
    /// The server could not be reached.
    pub const UNAVAILABLE: u8 = 69;
    /// The server failed, or the job failed outside dbt (its runner died, dbt could not start).
    pub const SOFTWARE: u8 = 70;
    /// The server refused the credentials.
    pub const NOPERM: u8 = 77;
    /// The job was cancelled (Ctrl-C or `dbt-remote cancel`).
    pub const CANCELLED: u8 = 130;
}

const AFTER_HELP: &str = "\
Any dbt command runs on the server, with dbt's own arguments passed through unchanged:
  dbt-remote build
  dbt-remote build --select orders+ --target prod
  dbt-remote run --vars '{\"day\": \"2026-11-24\", \"note\": \"with spaces\"}'
  dbt-remote test --detach && dbt-remote logs <JOB_ID> --follow
  dbt-remote run --select state:modified+ --manifest prod-target/ --defer

dbt commands: build, run, test, seed, snapshot, compile, ls, list, parse, docs generate,
run-operation, source freshness, deps, debug, show, retry, clean.

Exit status: dbt's own (0 success, 1 dbt failure, 2 dbt error); 64 bad command line, settings
or project; 69 server unreachable; 70 server error or job failed outside dbt; 77 credentials
refused; 130 cancelled. See docs/cli.md.";

#[derive(Parser, Debug)]
#[command(
    name = "dbt-remote",
    version,
    about = "Run dbt commands on a dbt-server: the project is sent, dbt runs there, its logs stream here.",
    after_help = AFTER_HELP,
    allow_external_subcommands = true,
    subcommand_value_name = "COMMAND"
)]
struct Cli {
    #[command(flatten)]
    options: Options,
    #[command(subcommand)]
    command: Command,
}

/// dbt-remote's own options; they may also stand anywhere after a dbt command.
#[derive(Args, Debug, Clone, Default)]
struct Options {
    /// URL of the dbt-server [default: http://127.0.0.1:8001]
    #[arg(long, global = true, value_name = "URL")]
    server_url: Option<String>,
    /// The dbt project folder; the paths below are relative to it [default: .]
    #[arg(long, global = true, value_name = "DIR")]
    project_dir: Option<String>,
    /// A manifest.json (or its folder, e.g. target) sent as dbt state for --state/--defer
    #[arg(long, global = true, value_name = "PATH")]
    manifest: Option<String>,
    /// A dbt_project.yml to send instead of the project's
    #[arg(long, global = true, value_name = "FILE")]
    dbt_project: Option<String>,
    /// A packages.yml (or its folder) to send; the job runs dbt deps first
    #[arg(long, global = true, value_name = "PATH")]
    extra_packages: Option<String>,
    /// A seeds folder to send instead of the project's
    #[arg(long, global = true, value_name = "DIR")]
    seeds_path: Option<String>,
    /// Google Cloud region of the server (used by server discovery)
    #[arg(long, global = true, value_name = "REGION")]
    location: Option<String>,
    /// A Google service-account key file; requests carry ID tokens made with it
    #[arg(long, global = true, value_name = "FILE")]
    credentials: Option<String>,
    /// Lowest level of log records shown: debug, info, warn, error [default: info]
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<LogLevel>,
    /// Submit the job, print its id and return at once
    #[arg(long, global = true)]
    detach: bool,
}

/// Options that take a value, as they may appear among a dbt command's arguments.
const VALUE_OPTIONS: &[&str] = &[
    "--server-url",
    "--project-dir",
    "--manifest",
    "--dbt-project",
    "--extra-packages",
    "--seeds-path",
    "--location",
    "--credentials",
    "--log-level",
];

#[derive(Subcommand, Debug)]
enum Command {
    /// Show or change the settings in dbt_remote.yml
    #[command(subcommand, after_help = commands::CONFIG_HELP)]
    Config(commands::ConfigCommand),
    /// Check the project, the settings and the server (saying what to fix), then run `dbt debug`
    /// on the server
    #[command(after_help = "Examples:\n  dbt-remote debug\n  dbt-remote debug --target prod")]
    Debug(commands::DebugArgs),
    /// List recent jobs: id, status, duration, command
    #[command(
        after_help = "Examples:\n  dbt-remote jobs\n  dbt-remote jobs --status failed --limit 5"
    )]
    Jobs(commands::JobsArgs),
    /// Print a job's logs (--follow: until it ends)
    #[command(
        after_help = "Examples:\n  dbt-remote logs 01a20c54-fec2-7178-96ab-21796b082a7f\n  dbt-remote logs 01a20c54-fec2-7178-96ab-21796b082a7f --follow"
    )]
    Logs(commands::LogsArgs),
    /// Print a job's status
    #[command(
        after_help = "Example:\n  dbt-remote status 01a20c54-fec2-7178-96ab-21796b082a7f --json"
    )]
    Status(commands::StatusArgs),
    /// Cancel a job (it ends `cancelled`)
    #[command(after_help = "Example:\n  dbt-remote cancel 01a20c54-fec2-7178-96ab-21796b082a7f")]
    Cancel(commands::JobArg),
    /// Download a job's artifacts (manifest.json, run_results.json, …)
    #[command(
        after_help = "Examples:\n  dbt-remote artifacts 01a20c54-fec2-7178-96ab-21796b082a7f\n  dbt-remote artifacts 01a20c54-fec2-7178-96ab-21796b082a7f --output-dir prod-state"
    )]
    Artifacts(commands::ArtifactsArgs),
    #[command(external_subcommand)]
    Dbt(Vec<OsString>),
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when stdout is closed (`dbt-remote … | head`).
    // SAFETY: SIG_DFL installs no handler code; no other thread runs yet.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { exit::USAGE } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dbt-remote: error: could not start: {e}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            output::error(&e);
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit status of an error of dbt-remote itself.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::InvalidInput(_) | Error::TooLarge { .. } | Error::NotFound { .. } => exit::USAGE,
        Error::Server {
            status: 400..=499, ..
        } => exit::USAGE,
        Error::Unauthenticated(_) => exit::NOPERM,
        Error::Backend {
            backend: "http", ..
        } => exit::UNAVAILABLE,
        _ => exit::SOFTWARE,
    }
}

async fn dispatch(cli: Cli) -> dbt_remote_core::Result<ExitCode> {
    let Cli {
        mut options,
        command,
    } = cli;
    match command {
        Command::Dbt(raw) => {
            let raw = raw
                .into_iter()
                .map(|a| {
                    a.into_string()
                        .map_err(|a| Error::invalid(format!("argument {a:?} is not valid UTF-8")))
                })
                .collect::<dbt_remote_core::Result<Vec<String>>>()?;
            let dbt_args = take_own_options(raw, &mut options)?;
            let ctx = Context::new(&options).await?;
            run::dbt(&ctx, dbt_args, options.detach).await
        }
        Command::Config(c) => commands::config(c),
        Command::Debug(a) => commands::debug(&Context::new(&options).await?, a).await,
        Command::Jobs(a) => commands::jobs(&Context::new(&options).await?, a).await,
        Command::Logs(a) => commands::logs(&Context::new(&options).await?, a).await,
        Command::Status(a) => commands::status(&Context::new(&options).await?, a).await,
        Command::Cancel(a) => commands::cancel(&Context::new(&options).await?, a).await,
        Command::Artifacts(a) => commands::artifacts(&Context::new(&options).await?, a).await,
    }
}

/// Takes dbt-remote's own options out of a dbt command's arguments; the rest go to dbt as they
/// are (quoting preserved: each argument stays one argument).
fn take_own_options(
    args: Vec<String>,
    options: &mut Options,
) -> dbt_remote_core::Result<Vec<String>> {
    let mut dbt = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            dbt.extend(iter);
            break;
        }
        if arg == "--detach" {
            options.detach = true;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if !VALUE_OPTIONS.contains(&name.as_str()) {
            dbt.push(arg);
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => iter
                .next()
                .ok_or_else(|| Error::invalid(format!("{name} needs a value")))?,
        };
        let slot = match name.as_str() {
            "--server-url" => &mut options.server_url,
            "--project-dir" => &mut options.project_dir,
            "--manifest" => &mut options.manifest,
            "--dbt-project" => &mut options.dbt_project,
            "--extra-packages" => &mut options.extra_packages,
            "--seeds-path" => &mut options.seeds_path,
            "--location" => &mut options.location,
            "--credentials" => &mut options.credentials,
            _ => {
                options.log_level = Some(value.parse()?);
                continue;
            }
        };
        *slot = Some(value);
    }
    Ok(dbt)
}

/// What every command needs: the settings in force.
pub struct Context {
    pub settings: Settings,
    pub log_level: LogLevel,
}

impl Context {
    /// Resolves the settings and locates the server (Cloud Run discovery when only
    /// `--location` is given, in a build with the `gcp` feature).
    async fn new(options: &Options) -> dbt_remote_core::Result<Self> {
        let mut flags = BTreeMap::new();
        for (key, value) in [
            ("server_url", &options.server_url),
            ("project_dir", &options.project_dir),
            ("manifest", &options.manifest),
            ("dbt_project", &options.dbt_project),
            ("extra_packages", &options.extra_packages),
            ("seeds_path", &options.seeds_path),
            ("location", &options.location),
            ("creds_path", &options.credentials),
        ] {
            if let Some(v) = value {
                flags.insert(key, v.clone());
            }
        }
        let dir = std::env::current_dir().unwrap_or_else(|_| ".".into());
        let settings = Settings::load(&flags, &dir)?.located().await?;
        Ok(Context {
            settings,
            log_level: options.log_level.unwrap_or(LogLevel::Info),
        })
    }

    /// A client of the server, with the credentials of the settings and environment.
    pub fn client(&self) -> dbt_remote_core::Result<dbt_remote_core::Client> {
        self.settings.client()
    }

    /// What a job sends, from the settings.
    pub fn job_files(&self) -> dbt_remote_core::package::JobFiles {
        self.settings.job_files()
    }

    pub fn project_dir(&self) -> PathBuf {
        self.job_files().project_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn own_options_are_taken_out_anywhere_and_the_rest_kept_whole() {
        let mut o = Options::default();
        let vars = "{\"note\": \"two words\", 'q': \"it's\"}";
        let rest = take_own_options(
            strings(&[
                "build",
                "--select",
                "orders+",
                "--server-url",
                "http://h:1",
                "--vars",
                vars,
                "--log-level=warn",
                "--target",
                "prod",
                "--detach",
                "--manifest=target",
            ]),
            &mut o,
        )
        .unwrap();
        assert_eq!(
            rest,
            strings(&["build", "--select", "orders+", "--vars", vars, "--target", "prod"])
        );
        assert_eq!(o.server_url.as_deref(), Some("http://h:1"));
        assert_eq!(o.manifest.as_deref(), Some("target"));
        assert_eq!(o.log_level, Some(LogLevel::Warn));
        assert!(o.detach);
    }

    #[test]
    fn a_missing_value_or_bad_level_is_an_error() {
        let mut o = Options::default();
        assert!(take_own_options(strings(&["build", "--server-url"]), &mut o).is_err());
        assert!(take_own_options(strings(&["build", "--log-level", "loud"]), &mut o).is_err());
        let rest = take_own_options(strings(&["run", "--", "--server-url", "x"]), &mut o).unwrap();
        assert_eq!(rest, strings(&["run", "--server-url", "x"]));
    }
}
