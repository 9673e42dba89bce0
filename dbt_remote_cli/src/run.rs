//! `dbt-remote <dbt command>`: pack, submit, follow the logs, exit with dbt's code. Ctrl-C
//! cancels the remote job; a second Ctrl-C leaves at once.

use std::process::ExitCode;

use dbt_remote_core::api::Job;
use dbt_remote_core::client::StreamEvent;
use dbt_remote_core::{Client, Error, JobId, JobStatus, Result};
use futures::StreamExt;

use crate::{exit, output, Context};

pub async fn dbt(ctx: &Context, args: Vec<String>, detach: bool) -> Result<ExitCode> {
    let client = ctx.client()?;
    let (job, stats) = client.submit_project(args, &ctx.job_files()).await?;
    output::note(format!(
        "job {} submitted to {} ({} files, {} uploaded, {} bytes)",
        job.id,
        client.base_url(),
        stats.files,
        stats.uploaded_blobs,
        stats.uploaded_bytes
    ));
    if detach {
        println!("{}", job.id);
        return Ok(ExitCode::SUCCESS);
    }
    follow(ctx, &client, job.id, true).await
}

/// Follows a job's log to its end and returns the exit status its end calls for. With
/// `cancel_on_interrupt`, Ctrl-C cancels the job and waits for it to end; a second Ctrl-C
/// leaves at once.
pub async fn follow(
    ctx: &Context,
    client: &Client,
    id: JobId,
    cancel_on_interrupt: bool,
) -> Result<ExitCode> {
    let mut events = std::pin::pin!(client.follow(id, 0));
    let mut interrupts = 0;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(StreamEvent::Record(record))) => output::record(&record, ctx.log_level),
                Some(Ok(StreamEvent::End(job))) => return Ok(end(&job)),
                Some(Err(e)) => return Err(e),
                None => return Err(Error::backend("http", "the log stream ended before the job")),
            },
            _ = tokio::signal::ctrl_c() => {
                interrupts += 1;
                if !cancel_on_interrupt || interrupts > 1 {
                    let state = if interrupts > 1 { "is being cancelled" } else { "goes on" };
                    output::note(format!(
                        "leaving; job {id} {state} on the server (dbt-remote status {id})"
                    ));
                    return Ok(ExitCode::from(exit::CANCELLED));
                }
                output::note(format!("cancelling job {id} (press Ctrl-C again to leave at once)"));
                client.cancel(id).await?;
            }
        }
    }
}

/// The exit status of a job's end: dbt's code, or ours when dbt did not decide it.
pub fn end(job: &Job) -> ExitCode {
    match (job.status, job.exit_code) {
        (JobStatus::Succeeded, _) => {
            output::note(format!("job {} succeeded", job.id));
            ExitCode::SUCCESS
        }
        (JobStatus::Cancelled, _) => {
            output::note(format!("job {} cancelled", job.id));
            ExitCode::from(exit::CANCELLED)
        }
        (_, Some(code)) => {
            output::note(format!(
                "job {} failed: dbt exited with code {code}",
                job.id
            ));
            ExitCode::from(u8::try_from(code).unwrap_or(exit::SOFTWARE))
        }
        _ => {
            let reason = job.failure_reason.as_deref().unwrap_or("no reason given");
            output::note(format!(
                "job {} failed before dbt finished: {reason}",
                job.id
            ));
            ExitCode::from(exit::SOFTWARE)
        }
    }
}
