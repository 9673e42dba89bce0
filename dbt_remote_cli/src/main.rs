//! `dbt-remote`: runs dbt commands on a dbt-server, streams their logs, exits with dbt's code.
//! A thin shell over `dbt_remote_core`: argv in (`cli`), core calls (`commands`), text out
//! (`output`), one exit status (`exit`).

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod exit;
mod output;

use cli::{Cli, Command};
use commands::{config, dbt, debug, jobs, schedules, Context};
use exit::ExitStatus;

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
            return if usage {
                ExitStatus::Usage
            } else {
                ExitStatus::Success
            }
            .into();
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dbt-remote: error: could not start: {e}");
            return ExitStatus::Software.into();
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(status) => status.into(),
        Err(e) => {
            output::error(&e);
            ExitStatus::from(&e).into()
        }
    }
}

async fn dispatch(cli: Cli) -> dbt_remote_core::Result<ExitStatus> {
    let Cli {
        mut options,
        command,
    } = cli;
    match command {
        Command::Dbt(raw) => {
            let args = cli::dbt_args(raw, &mut options)?;
            if options.help {
                print!("{}", cli::dbt_command_help(&args));
                return Ok(ExitStatus::Success);
            }
            dbt::run(&Context::new(&options).await?, args, options.detach).await
        }
        Command::Config(c) => config::run(c),
        Command::Debug(a) => debug::run(&Context::new(&options).await?, a).await,
        Command::Jobs(a) => jobs::jobs(&Context::new(&options).await?, a).await,
        Command::Logs(a) => jobs::logs(&Context::new(&options).await?, a).await,
        Command::Status(a) => jobs::status(&Context::new(&options).await?, a).await,
        Command::Cancel(a) => jobs::cancel(&Context::new(&options).await?, a).await,
        Command::Artifacts(a) => jobs::artifacts(&Context::new(&options).await?, a).await,
        Command::Schedules(c) => schedules::run(c, options).await,
    }
}
