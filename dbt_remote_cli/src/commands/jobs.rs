//! The commands about one job or the list of jobs: jobs, logs, status, cancel, artifacts.

use dbt_remote_core::client::JobFilter;
use dbt_remote_core::{JobId, Result};
use futures::TryStreamExt;

use super::{dbt, Context};
use crate::cli::{ArtifactsArgs, JobArg, JobsArgs, LogsArgs, StatusArgs};
use crate::exit::ExitStatus;
use crate::output;

fn job_id(id: &str) -> Result<JobId> {
    id.parse()
}

pub async fn jobs(ctx: &Context, args: JobsArgs) -> Result<ExitStatus> {
    let filter = JobFilter {
        status: args.status,
        project: args.project,
        environment: ctx.environment_flag.clone(),
        target: args.target,
    };
    let list = ctx
        .client()?
        .jobs_where(&filter, Some(args.limit), None)
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
    Ok(ExitStatus::Success)
}

pub async fn logs(ctx: &Context, args: LogsArgs) -> Result<ExitStatus> {
    let id = job_id(&args.id)?;
    let client = ctx.client()?;
    if args.follow {
        return dbt::follow(ctx, &client, id, false).await;
    }
    let mut records = std::pin::pin!(client.logs_so_far(id, 0));
    while let Some(record) = records.try_next().await? {
        output::record(&record, ctx.log_level);
    }
    Ok(ExitStatus::Success)
}

pub async fn status(ctx: &Context, args: StatusArgs) -> Result<ExitStatus> {
    let job = ctx.client()?.job(job_id(&args.id)?).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default());
        return Ok(ExitStatus::Success);
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
    Ok(ExitStatus::Success)
}

pub async fn cancel(ctx: &Context, args: JobArg) -> Result<ExitStatus> {
    let job = ctx.client()?.cancel(job_id(&args.id)?).await?;
    if job.status.is_final() {
        output::note(format!("job {} is {}", job.id, job.status));
    } else {
        output::note(format!(
            "job {}: cancel requested; it ends `cancelled` shortly",
            job.id
        ));
    }
    Ok(ExitStatus::Success)
}

pub async fn artifacts(ctx: &Context, args: ArtifactsArgs) -> Result<ExitStatus> {
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
    Ok(ExitStatus::Success)
}
