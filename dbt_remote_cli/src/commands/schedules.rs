//! `dbt-remote schedules create|list|delete|run`: the core client's schedule calls, printed.

use dbt_remote_core::api::ScheduleInfo;
use dbt_remote_core::client::NewSchedule;
use dbt_remote_core::Result;

use super::{dbt, Context};
use crate::cli::{self, CreateArgs, ListArgs, NameArg, Options, RunArgs, SchedulesCommand};
use crate::exit::ExitStatus;
use crate::output;

pub async fn run(command: SchedulesCommand, mut options: Options) -> Result<ExitStatus> {
    match command {
        SchedulesCommand::Create(a) => {
            // dbt-remote's own options may stand among the dbt command's, as for any command.
            let args = cli::dbt_args(a.command.clone(), &mut options)?;
            create(&Context::new(&options).await?, a, args).await
        }
        SchedulesCommand::List(a) => list(&Context::new(&options).await?, a).await,
        SchedulesCommand::Delete(a) => delete(&Context::new(&options).await?, a).await,
        SchedulesCommand::Run(a) => run_now(&Context::new(&options).await?, a).await,
    }
}

/// Packs the project, uploads what the server lacks, stores the schedule; prints its name.
async fn create(ctx: &Context, a: CreateArgs, args: Vec<String>) -> Result<ExitStatus> {
    let client = ctx.client()?;
    let args = match ctx.dbt_log_level {
        Some(level) => dbt_remote_core::job::with_dbt_log_level(args, level),
        None => args,
    };
    let request = NewSchedule {
        name: a.name,
        cron: a.cron,
        command: None,
        args,
        elementary: ctx.settings.elementary(),
        environment: ctx.settings.environment().map(str::to_string),
    };
    let (s, stats) = client
        .create_schedule(request, &ctx.settings.job_files())
        .await?;
    output::note(format!(
        "schedule {} created on {}: dbt {} — {} (cron {}, UTC); next run {} ({} files, {} uploaded, {} bytes)",
        s.name,
        client.base_url(),
        s.command,
        s.description,
        s.cron,
        next_run(&s),
        stats.files,
        stats.uploaded_blobs,
        stats.uploaded_bytes
    ));
    println!("{}", s.name);
    Ok(ExitStatus::Success)
}

/// A table of the schedules (or their JSON).
async fn list(ctx: &Context, a: ListArgs) -> Result<ExitStatus> {
    let schedules = ctx.client()?.list_schedules().await?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&schedules).unwrap_or_default()
        );
        return Ok(ExitStatus::Success);
    }
    let name_width = schedules
        .iter()
        .map(|s| s.name.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let env_width = schedules
        .iter()
        .filter_map(|s| s.environment.as_ref().map(String::len))
        .chain([11])
        .max()
        .unwrap_or(11);
    println!(
        "{:<name_width$}  {:<env_width$}  {:<15}  {:<30}  {:<20}  {:<36}  COMMAND",
        "NAME", "ENVIRONMENT", "CRON", "DESCRIPTION", "NEXT RUN (UTC)", "LAST JOB"
    );
    for s in &schedules {
        let last = s
            .last_job
            .map_or_else(|| "-".to_string(), |j| j.to_string());
        println!(
            "{:<name_width$}  {:<env_width$}  {:<15}  {:<30}  {:<20}  {:<36}  dbt {}",
            s.name,
            s.environment.as_deref().unwrap_or("-"),
            s.cron,
            s.description,
            next_run(s),
            last,
            s.command
        );
    }
    Ok(ExitStatus::Success)
}

async fn delete(ctx: &Context, a: NameArg) -> Result<ExitStatus> {
    ctx.client()?.delete_schedule(&a.name).await?;
    output::note(format!("schedule {} deleted", a.name));
    Ok(ExitStatus::Success)
}

/// Submits the schedule's job now: prints its id, or follows it with `--follow`.
async fn run_now(ctx: &Context, a: RunArgs) -> Result<ExitStatus> {
    let client = ctx.client()?;
    let job = client.run_schedule(&a.name).await?;
    output::note(format!(
        "schedule {}: job {} submitted to {}",
        a.name,
        job.id,
        client.base_url()
    ));
    if !a.follow {
        println!("{}", job.id);
        return Ok(ExitStatus::Success);
    }
    dbt::follow(ctx, &client, job.id, true).await
}

fn next_run(s: &ScheduleInfo) -> String {
    s.next_run.map_or_else(
        || "never".into(),
        |t| t.format("%Y-%m-%d %H:%M").to_string(),
    )
}
