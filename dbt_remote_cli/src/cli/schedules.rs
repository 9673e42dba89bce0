//! clap's types of `dbt-remote schedules`.

use std::ffi::OsString;

use clap::{Args, Subcommand};

pub const SCHEDULES_HELP: &str = "\
A schedule runs a dbt command on the server whenever its cron expression (five fields, UTC)
matches, on the project files sent when it was created: later edits to the project are not
seen until the schedule is created again.

Examples:
  dbt-remote schedules create --name nightly --cron '0 8 * * *' build --select orders+
  dbt-remote schedules list
  dbt-remote schedules run nightly --follow
  dbt-remote schedules delete nightly";

#[derive(Subcommand, Debug)]
pub enum SchedulesCommand {
    /// Pack the project and store a schedule of a dbt command
    #[command(after_help = "\
The dbt command comes last, after dbt-remote's options, with its own arguments unchanged
(`--` before it is allowed). The project is packed from --project-dir like any command.

Examples:
  dbt-remote schedules create --name nightly --cron '0 8 * * *' build --select orders+
  dbt-remote schedules create --cron '*/30 8-18 * * 1-5' --project-dir analytics -- run")]
    Create(CreateArgs),
    /// List the schedules: name, cron, in words, next run, last job
    #[command(
        after_help = "Examples:\n  dbt-remote schedules list\n  dbt-remote schedules list --json"
    )]
    List(ListArgs),
    /// Delete a schedule (the jobs it submitted are kept)
    #[command(after_help = "Example:\n  dbt-remote schedules delete nightly")]
    Delete(NameArg),
    /// Submit a schedule's job now and print its id (--follow: stream its logs and exit with
    /// dbt's code)
    #[command(
        after_help = "Examples:\n  dbt-remote schedules run nightly\n  dbt-remote schedules run nightly --follow"
    )]
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The schedule's unique name: letters, digits, '-' and '_' [default: dbt-server-<id>]
    #[arg(long)]
    pub name: Option<String>,
    /// When it runs: five cron fields (minute hour day-of-month month day-of-week), in UTC
    #[arg(long, value_name = "CRON")]
    pub cron: String,
    /// The dbt command and its arguments, e.g. build --select orders+
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "DBT_COMMAND"
    )]
    pub command: Vec<OsString>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print the schedules as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct NameArg {
    /// The schedule's name (`dbt-remote schedules list` shows them)
    pub name: String,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The schedule's name
    pub name: String,
    /// Stream the job's logs until it ends; then exit with dbt's code
    #[arg(long, short)]
    pub follow: bool,
}
