//! [`Client::retry`]: dbt's `retry` of one job, as `Job.retry()` in Python asks for it.

use crate::api::{Job, SubmitJob};
use crate::job::JobId;
use crate::package::JobFiles;
use crate::project::{profile_from_args, target_from_args};
use crate::Result;

use super::{Client, SubmitOptions, UploadStats};

impl Client {
    /// Submits dbt's `retry` of job `id`: a new job of the same environment, labelled with the
    /// same profile and target (dbt's `retry` runs with the retried run's own arguments), that
    /// reads the job's `run_results.json` and `manifest.json` as dbt's state
    /// ([`SubmitJob::retry_of`]). With `project`, the project as it is now is packed and sent
    /// (so a fix made since is used); without, the new job runs on the retried job's own files,
    /// which the server holds ([`SubmitJob::files_of`]): nothing is read or uploaded.
    pub async fn retry(&self, id: JobId, project: Option<&JobFiles>) -> Result<(Job, UploadStats)> {
        let earlier = self.job(id).await?;
        let args = retry_args(&earlier);
        let options = SubmitOptions {
            environment: earlier.environment.clone(),
            retry_of: Some(id),
            ..Default::default()
        };
        if let Some(files) = project {
            return self.submit_project_with(args, files, options).await;
        }
        let request = SubmitJob {
            args,
            files: vec![],
            mode: Default::default(),
            elementary: false,
            environment: options.environment,
            defer_to: None,
            retry_of: options.retry_of,
            files_of: Some(id),
        };
        let job = self.post_job(&request).await?;
        let stats = UploadStats {
            files: job.file_count,
            ..Default::default()
        };
        Ok((job, stats))
    }
}

/// `retry`, with the profile and target of `earlier` when it names them (so the new job is
/// listed under them; dbt itself takes them from the retried run).
fn retry_args(earlier: &Job) -> Vec<String> {
    let mut args = vec!["retry".to_string()];
    if let Some(profile) = profile_from_args(&earlier.args) {
        args.extend(["--profile".to_string(), profile]);
    }
    if let Some(target) = earlier
        .target
        .clone()
        .or_else(|| target_from_args(&earlier.args))
    {
        args.extend(["--target".to_string(), target]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(args: &[&str], target: Option<&str>) -> Job {
        let mut record = crate::testing::sample_job();
        record.spec.args = args.iter().map(|a| a.to_string()).collect();
        record.target = target.map(str::to_string);
        Job::from(record)
    }

    #[test]
    fn a_retry_names_the_profile_and_target_of_the_job_it_retries() {
        let args = |j: &Job| retry_args(j).join(" ");
        assert_eq!(args(&job(&["build"], None)), "retry");
        assert_eq!(args(&job(&["build"], Some("dev"))), "retry --target dev");
        assert_eq!(
            args(&job(&["run", "--profile", "p", "-t", "ci"], None)),
            "retry --profile p --target ci"
        );
    }
}
