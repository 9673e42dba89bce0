//! A launcher that runs jobs as tasks of the current process: for embedding and for tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::JobLauncher;
use crate::job::{JobId, JobRecord, JobStatus};
use crate::lifecycle::JobLifecycle;
use crate::runner::{run_job, RunnerConfig};
use crate::state::StateStore;
use crate::Result;

/// Runs each job with [`run_job`] in a tokio task of this process, at most `max_concurrent` at
/// once. Jobs do not survive the process: [`recover`](JobLauncher::recover) fails the running
/// jobs it finds, since their runner was this process.
#[derive(Debug, Clone)]
pub struct InProcessLauncher {
    store: Arc<dyn StateStore>,
    config: Arc<RunnerConfig>,
    slots: Arc<Semaphore>,
    tokens: Arc<Mutex<HashMap<JobId, CancellationToken>>>,
}

impl InProcessLauncher {
    pub fn new(store: Arc<dyn StateStore>, config: RunnerConfig, max_concurrent: usize) -> Self {
        InProcessLauncher {
            store,
            config: Arc::new(config),
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            tokens: Default::default(),
        }
    }
}

#[async_trait]
impl JobLauncher for InProcessLauncher {
    async fn launch(&self, id: JobId) -> Result<()> {
        let token = {
            let mut tokens = self.tokens.lock().unwrap();
            if tokens.contains_key(&id) {
                return Ok(());
            }
            tokens.entry(id).or_default().clone()
        };
        let this = self.clone();
        tokio::spawn(async move {
            // Semaphore permits are handed out in FIFO order: jobs start in launch order.
            let _permit = this.slots.acquire().await;
            if let Err(e) = run_job(this.store.clone(), id, &this.config, token).await {
                tracing::error!(job = %id, "job runner failed: {e}");
                let _ = this
                    .store
                    .finish_orphan(id, format!("job runner failed: {e}"))
                    .await;
            }
            this.tokens.lock().unwrap().remove(&id);
        });
        Ok(())
    }

    async fn cancel(&self, id: JobId) -> Result<JobRecord> {
        let job = self.store.request_cancel(id).await?;
        if job.status == JobStatus::Running {
            if let Some(token) = self.tokens.lock().unwrap().get(&id) {
                token.cancel();
            }
        }
        Ok(job)
    }

    async fn recover(&self) -> Result<()> {
        for id in self.store.jobs_in(JobStatus::Running).await? {
            self.store
                .finish_orphan(id, "the process running the job ended".into())
                .await?;
        }
        for id in self.store.jobs_in(JobStatus::Queued).await? {
            self.launch(id).await?;
        }
        Ok(())
    }
}
