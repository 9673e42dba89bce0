//! The command line: clap's types, and dbt-remote's own options taken out of a dbt command's
//! arguments. No handler lives here (see `commands`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use dbt_remote_core::config::Overrides;
use dbt_remote_core::{Error, LogLevel, Result};

mod schedules;

pub use schedules::{CreateArgs, ListArgs, NameArg, RunArgs, SchedulesCommand, SCHEDULES_HELP};

const AFTER_HELP: &str = "\
Any dbt command runs on the server, with dbt's own arguments passed through unchanged:
  dbt-remote build
  dbt-remote build --select orders+ --target prod
  dbt-remote run --vars '{\"day\": \"2026-11-24\", \"note\": \"with spaces\"}'
  dbt-remote test --detach && dbt-remote logs <JOB_ID> --follow
  dbt-remote run --select state:modified+ --manifest prod-target/ --defer
  dbt-remote build --environment prod
  dbt-remote build --select state:modified+ --defer-to prod --environment ci
  dbt-remote retry --environment ci

dbt commands: build, run, test, seed, snapshot, compile, ls, list, parse, docs generate,
run-operation, source freshness, deps, debug, show, retry, clean.

Exit status: dbt's own (0 success, 1 dbt failure, 2 dbt error); 64 bad command line, settings
or project; 69 server unreachable; 70 server error or job failed outside dbt; 77 credentials
refused; 130 cancelled. See docs/cli.md.";

const CONFIG_HELP: &str = "\
Settings live in dbt_remote.yml in the current folder. Precedence: flag > environment
(DBT_REMOTE_<KEY>, e.g. DBT_REMOTE_SERVER_URL) > dbt_remote.yml > default.

Keys: server_url, project_dir, manifest, dbt_project, extra_packages, seeds_path, location,
creds_path, environment, elementary.

Examples:
  dbt-remote config init
  dbt-remote config set server_url=http://10.0.0.5:8001 project_dir=analytics
  dbt-remote config get server_url
  dbt-remote config show
  dbt-remote config delete manifest";

#[derive(Parser, Debug)]
#[command(
    name = "dbt-remote",
    version,
    about = "Run dbt commands on a dbt-server: the project is sent, dbt runs there, its logs stream here.",
    after_help = AFTER_HELP,
    allow_external_subcommands = true,
    subcommand_value_name = "COMMAND"
)]
pub struct Cli {
    #[command(flatten)]
    pub options: Options,
    #[command(subcommand)]
    pub command: Command,
}

/// dbt-remote's own options; they may also stand anywhere after a dbt command.
#[derive(Args, Debug, Clone, Default)]
pub struct Options {
    /// URL of the dbt-server [default: http://127.0.0.1:8001]
    #[arg(long, global = true, value_name = "URL")]
    pub server_url: Option<String>,
    /// The dbt project folder; the paths below are relative to it [default: .]
    #[arg(long, global = true, value_name = "DIR")]
    pub project_dir: Option<String>,
    /// A manifest.json (or its folder, e.g. target) sent as dbt state for --state/--defer
    #[arg(long, global = true, value_name = "PATH")]
    pub manifest: Option<String>,
    /// A dbt_project.yml to send instead of the project's
    #[arg(long, global = true, value_name = "FILE")]
    pub dbt_project: Option<String>,
    /// A packages.yml (or its folder) to send; the job runs dbt deps first
    #[arg(long, global = true, value_name = "PATH")]
    pub extra_packages: Option<String>,
    /// A seeds folder to send instead of the project's
    #[arg(long, global = true, value_name = "DIR")]
    pub seeds_path: Option<String>,
    /// Google Cloud region of the server (used by server discovery)
    #[arg(long, global = true, value_name = "REGION")]
    pub location: Option<String>,
    /// A Google service-account key file; requests carry ID tokens made with it
    #[arg(long, global = true, value_name = "FILE")]
    pub credentials: Option<String>,
    /// Lowest level of log records shown, also dbt's own --log-level on the server: debug, info,
    /// warn, error [default: info]
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// Submit the job, print its id and return at once
    #[arg(long, global = true)]
    pub detach: bool,
    /// Make an Elementary report (edr report) after the dbt command, stored with the job
    /// [default: the elementary setting, false]
    #[arg(long, global = true)]
    pub elementary: bool,
    /// The environment the job runs for (e.g. prod, ci); the server keeps each environment's
    /// latest jobs for --defer-to and retry [default: the environment setting]
    #[arg(long, global = true, value_name = "NAME")]
    pub environment: Option<String>,
    /// Run with the manifest of this environment's latest succeeded job (same project) as
    /// dbt's --state, e.g. --select state:modified+ --defer-to prod
    #[arg(long, global = true, value_name = "ENVIRONMENT")]
    pub defer_to: Option<String>,
    /// For `dbt-remote retry`: the failed job to retry [default: the latest failed job of the
    /// project and environment]
    #[arg(long, global = true, value_name = "JOB_ID")]
    pub job: Option<String>,
    /// `--help` or `-h` among a dbt command's arguments: print that command's help, run nothing.
    #[arg(skip)]
    pub help: bool,
}

impl Options {
    /// The settings these options give (they win over the environment and dbt_remote.yml).
    pub fn overrides(&self) -> Overrides {
        let path = |p: &Option<String>| p.as_ref().map(PathBuf::from);
        Overrides {
            server_url: self.server_url.clone(),
            project_dir: path(&self.project_dir),
            manifest: path(&self.manifest),
            dbt_project: path(&self.dbt_project),
            extra_packages: path(&self.extra_packages),
            seeds_path: path(&self.seeds_path),
            location: self.location.clone(),
            creds_path: path(&self.credentials),
            environment: self.environment.clone(),
            elementary: self.elementary.then_some(true),
        }
    }
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
    "--environment",
    "--defer-to",
    "--job",
];

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show or change the settings in dbt_remote.yml
    #[command(subcommand, after_help = CONFIG_HELP)]
    Config(ConfigCommand),
    /// Check the project, the settings and the server (saying what to fix), then run `dbt debug`
    /// on the server
    #[command(after_help = "Examples:\n  dbt-remote debug\n  dbt-remote debug --target prod")]
    Debug(DebugArgs),
    /// List recent jobs: id, status, duration, command
    #[command(
        after_help = "Examples:\n  dbt-remote jobs\n  dbt-remote jobs --status failed --limit 5\n  dbt-remote jobs --project jaffle_shop --environment prod"
    )]
    Jobs(JobsArgs),
    /// Print a job's logs (--follow: until it ends)
    #[command(
        after_help = "Examples:\n  dbt-remote logs 01a20c54-fec2-7178-96ab-21796b082a7f\n  dbt-remote logs 01a20c54-fec2-7178-96ab-21796b082a7f --follow"
    )]
    Logs(LogsArgs),
    /// Print a job's status
    #[command(
        after_help = "Example:\n  dbt-remote status 01a20c54-fec2-7178-96ab-21796b082a7f --json"
    )]
    Status(StatusArgs),
    /// Cancel a job (it ends `cancelled`)
    #[command(after_help = "Example:\n  dbt-remote cancel 01a20c54-fec2-7178-96ab-21796b082a7f")]
    Cancel(JobArg),
    /// Download a job's artifacts (manifest.json, run_results.json, …)
    #[command(
        after_help = "Examples:\n  dbt-remote artifacts 01a20c54-fec2-7178-96ab-21796b082a7f\n  dbt-remote artifacts 01a20c54-fec2-7178-96ab-21796b082a7f --output-dir prod-state"
    )]
    Artifacts(ArtifactsArgs),
    /// Run dbt commands on a cron schedule: create, list, delete, run now
    #[command(subcommand, visible_alias = "schedule", after_help = SCHEDULES_HELP)]
    Schedules(SchedulesCommand),
    #[command(external_subcommand)]
    Dbt(Vec<OsString>),
}

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

#[derive(Args, Debug)]
pub struct DebugArgs {
    /// Arguments for `dbt debug` on the server (e.g. --target prod)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Only jobs with this status: queued, running, succeeded, failed, cancelled
    #[arg(long)]
    pub status: Option<String>,
    /// How many jobs
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Only jobs of this dbt project (its dbt_project.yml name)
    #[arg(long)]
    pub project: Option<String>,
    /// Only jobs against this dbt target
    #[arg(long)]
    pub target: Option<String>,
}

#[derive(Args, Debug)]
pub struct JobArg {
    /// The job's id (printed when it was submitted; `dbt-remote jobs` lists them)
    pub id: String,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The job's id
    pub id: String,
    /// Keep printing until the job ends; then exit with the job's status
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The job's id
    pub id: String,
    /// Print the job as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ArtifactsArgs {
    /// The job's id
    pub id: String,
    /// Where to write them [default: the project's target/, so local --state works]
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

/// The help of a dbt command run through dbt-remote (`dbt-remote run --help`): what it does,
/// where dbt's own flags are described, and dbt-remote's options.
pub fn dbt_command_help(args: &[String]) -> String {
    use clap::CommandFactory as _;
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .take_while(|a| !a.starts_with('-'))
        .take(2)
        .collect();
    let command = dbt_remote_core::job::DBT_COMMANDS
        .iter()
        .copied()
        .filter(|c| words.join(" ").starts_with(*c))
        .max_by_key(|c| c.len());
    let Some(command) = command else {
        let mut cli = Cli::command();
        return cli.render_long_help().to_string();
    };
    let about = format!(
        "Runs `dbt {command}` on the dbt-server: the project is sent, dbt runs there and its\n\
         logs stream here; dbt-remote exits with dbt's exit code.\n\n\
         dbt's own arguments (--select, --target, --vars, ...) are passed through unchanged:\n\
         `dbt {command} --help` lists them where dbt is installed, and\n\
         https://docs.getdbt.com/reference/dbt-commands describes them."
    );
    let base = clap::Command::new("dbt-remote").next_help_heading("dbt-remote options");
    Options::augment_args(base)
        .bin_name(format!("dbt-remote {command}"))
        .about(about)
        .disable_version_flag(true)
        .override_usage(format!("dbt-remote {command} [DBT ARGUMENTS]... [OPTIONS]"))
        .after_help("Put dbt arguments that look like dbt-remote's own options after `--`.")
        .render_help()
        .to_string()
}

/// A dbt command's arguments as strings, dbt-remote's own options taken out into `options`.
pub fn dbt_args(raw: Vec<OsString>, options: &mut Options) -> Result<Vec<String>> {
    let raw = raw
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| Error::invalid(format!("argument {a:?} is not valid UTF-8")))
        })
        .collect::<Result<Vec<String>>>()?;
    take_own_options(raw, options)
}

/// Takes dbt-remote's own options out of a dbt command's arguments; the rest go to dbt as they
/// are (quoting preserved: each argument stays one argument).
fn take_own_options(args: Vec<String>, options: &mut Options) -> Result<Vec<String>> {
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
        if arg == "--elementary" {
            options.elementary = true;
            continue;
        }
        if arg == "--help" || arg == "-h" {
            options.help = true;
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
            "--environment" => &mut options.environment,
            "--defer-to" => &mut options.defer_to,
            "--job" => &mut options.job,
            _ => {
                options.log_level = Some(value.parse()?);
                continue;
            }
        };
        *slot = Some(value);
    }
    Ok(dbt)
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
                "--elementary",
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
        let overrides = o.overrides();
        assert_eq!(overrides.server_url.as_deref(), Some("http://h:1"));
        assert_eq!(overrides.manifest, Some(PathBuf::from("target")));
        assert_eq!(overrides.creds_path, None);
        assert_eq!(overrides.elementary, Some(true));
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
