//! `dbt-remote debug`: the core's checks (project, server, credentials), each printed with what
//! to fix, then `dbt debug` on the server.

use dbt_remote_core::diagnose::{self, Problem};
use dbt_remote_core::Result;

use super::{dbt, Context};
use crate::cli::DebugArgs;
use crate::exit::ExitStatus;
use crate::output;

pub async fn run(ctx: &Context, args: DebugArgs) -> Result<ExitStatus> {
    println!("settings:");
    output::settings(&ctx.settings);
    println!("project:");
    let project = diagnose::check_project(&ctx.settings.job_files());
    output::check(&project);
    println!("server:");
    let client = ctx.client()?;
    let server = diagnose::check_server(&client).await;
    server.iter().for_each(output::check);
    match diagnose::worst(std::iter::once(&project).chain(&server)) {
        Some(Problem::Unreachable) => return Ok(ExitStatus::Unavailable),
        Some(Problem::CredentialsRefused) => return Ok(ExitStatus::NoPerm),
        Some(Problem::Project | Problem::Server) => return Ok(ExitStatus::Usage),
        None => {}
    }
    println!("dbt debug on the server:");
    let mut dbt_args = vec!["debug".to_string()];
    dbt_args.extend(args.args);
    dbt::run(ctx, dbt_args, false).await
}
