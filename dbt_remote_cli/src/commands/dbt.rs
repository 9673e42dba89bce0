//! `dbt-remote <dbt command>`: pack, submit, follow the logs, exit with dbt's code. Ctrl-C
//! cancels the remote job; a second Ctrl-C leaves at once.

use dbt_remote_core::client::{StreamEvent, SubmitOptions};
use dbt_remote_core::{Client, Error, JobId, JobOutcome, Result};
use futures::StreamExt;

use super::Context;
use crate::exit::ExitStatus;
use crate::output;

pub async fn run(ctx: &Context, args: Vec<String>, detach: bool) -> Result<ExitStatus> {
    let client = ctx.client()?;
    let files = ctx.settings.job_files();
    let args = match ctx.dbt_log_level {
        Some(level) => dbt_remote_core::job::with_dbt_log_level(args, level),
        None => args,
    };
    let retry_of = match &ctx.retry_job {
        Some(_) if args.first().map(String::as_str) != Some("retry") => {
            return Err(Error::invalid(
                "--job names the failed job of `dbt-remote retry`; other commands take none",
            ))
        }
        Some(id) => Some(id.parse::<JobId>()?),
        None => None,
    };
    let options = SubmitOptions {
        elementary: ctx.settings.elementary(),
        environment: ctx.settings.environment().map(str::to_string),
        defer_to: ctx.defer_to.clone(),
        retry_of,
    };
    let (job, stats) = client.submit_project_with(args, &files, options).await?;
    output::note(format!(
        "job {} submitted to {} ({} files, {} uploaded, {} bytes)",
        job.id,
        client.base_url(),
        stats.files,
        stats.uploaded_blobs,
        stats.uploaded_bytes
    ));
    if let Some(earlier) = job.state_of {
        output::note(format!("dbt's state: the artifacts of job {earlier}"));
    }
    if detach {
        println!("{}", job.id);
        return Ok(ExitStatus::Success);
    }
    follow(ctx, &client, job.id, true).await
}

/// Follows a job's log to its end, prints how it ended and returns the exit status its end
/// calls for. With `cancel_on_interrupt`, Ctrl-C cancels the job and waits for it to end; a
/// second Ctrl-C leaves at once.
pub async fn follow(
    ctx: &Context,
    client: &Client,
    id: JobId,
    cancel_on_interrupt: bool,
) -> Result<ExitStatus> {
    let mut events = std::pin::pin!(client.follow(id, 0));
    let mut interrupts = 0;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(StreamEvent::Record(record))) => output::record(&record, ctx.log_level),
                Some(Ok(StreamEvent::End(job))) => {
                    let outcome = JobOutcome::of(&job);
                    output::note(outcome.to_string());
                    for (what, url) in client.docs_links(&job) {
                        output::note(format!("{what}: {url}"));
                    }
                    if job.elementary {
                        print_report_url(client, id).await;
                    }
                    return Ok(ExitStatus::from(&outcome));
                }
                Some(Err(e)) => return Err(e),
                None => {
                    let why = "the log stream ended before the job";
                    return Err(Error::unreachable(client.base_url(), why));
                }
            },
            _ = tokio::signal::ctrl_c() => {
                interrupts += 1;
                if !cancel_on_interrupt || interrupts > 1 {
                    let state = if interrupts > 1 { "is being cancelled" } else { "goes on" };
                    output::note(format!(
                        "leaving; job {id} {state} on the server (dbt-remote status {id})"
                    ));
                    return Ok(ExitStatus::Cancelled);
                }
                output::note(format!("cancelling job {id} (press Ctrl-C again to leave at once)"));
                client.cancel(id).await?;
            }
        }
    }
}

/// Prints where to open the job's Elementary report, when the job stored one (a report that
/// failed is a warning in the job's log, already shown).
async fn print_report_url(client: &Client, id: JobId) {
    let stored = client.artifacts(id).await.is_ok_and(|list| {
        list.artifacts
            .iter()
            .any(|a| a.name.as_str() == dbt_remote_core::runner::ELEMENTARY_REPORT)
    });
    if stored {
        output::note(format!("Elementary report: {}", client.report_url(id)));
    }
}
