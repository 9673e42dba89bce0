//! [`Client::retry`]: dbt's `retry` of one job, as `Job.retry()` in Python asks for it.

use crate::api::{Job, SubmitJob};
use crate::job::JobId;
use crate::package::JobFiles;
use crate::Result;

use super::{Client, SubmitOptions, UploadStats};

impl Client {
    /// Submits dbt's `retry` of job `id`: a new job of the same environment that reads the
    /// job's `run_results.json` and `manifest.json` as dbt's state ([`SubmitJob::retry_of`]);
    /// the server labels it with the retried job's profile and target. With `project`, the
    /// project as it is now is packed and sent (so a fix made since is used); without, the new
    /// job runs on the retried job's own files, which the server holds
    /// ([`SubmitJob::files_of`]): nothing is read or uploaded.
    pub async fn retry(&self, id: JobId, project: Option<&JobFiles>) -> Result<(Job, UploadStats)> {
        let environment = self.job(id).await?.environment;
        let args = vec!["retry".to_string()];
        if let Some(files) = project {
            let options = SubmitOptions {
                environment,
                retry_of: Some(id),
                ..Default::default()
            };
            return self.submit_project_with(args, files, options).await;
        }
        let request = SubmitJob {
            args,
            files: vec![],
            mode: Default::default(),
            elementary: false,
            environment,
            defer_to: None,
            retry_of: Some(id),
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
