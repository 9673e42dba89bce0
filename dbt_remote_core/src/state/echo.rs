//! [`EchoLogs`]: a store that also prints every log record it appends as one line of JSON on
//! stdout, in the shape Cloud Logging reads from a container (`severity`, `message`, `time`,
//! labels). A Cloud Run Job's entry point wraps its store in it, so the job's log is in Cloud
//! Logging as well as in the store.

use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::SecondsFormat;
use serde_json::json;

use super::{ArtifactInfo, BlobInfo, CacheKey, JobPage, JobQuery, StateStore};
use crate::blob::BlobHash;
use crate::job::{JobId, JobRecord};
use crate::log::{LogEntry, LogLevel, LogRecord};
use crate::paths::RelPath;
use crate::Result;

/// Delegates everything to the inner store; appended records are printed once stored.
#[derive(Debug)]
pub struct EchoLogs {
    inner: Arc<dyn StateStore>,
}

impl EchoLogs {
    pub fn new(inner: Arc<dyn StateStore>) -> Self {
        EchoLogs { inner }
    }
}

/// One record as a Cloud Logging structured log line.
pub fn cloud_logging_line(id: JobId, seq: u64, entry: &LogEntry) -> String {
    let severity = match entry.level {
        LogLevel::Debug => "DEBUG",
        LogLevel::Info => "INFO",
        LogLevel::Warn => "WARNING",
        LogLevel::Error => "ERROR",
    };
    let mut line = json!({
        "severity": severity,
        "message": entry.message,
        "time": entry.time.to_rfc3339_opts(SecondsFormat::Millis, true),
        "logging.googleapis.com/labels": { "dbt_remote_job_id": id.to_string() },
        "seq": seq,
        "source": entry.source,
    });
    if let Some(node) = &entry.node {
        line["node"] = json!(node.unique_id);
        if let Some(status) = &node.status {
            line["node_status"] = json!(status);
        }
    }
    if let Some(event) = &entry.event {
        line["event"] = json!(event);
    }
    line.to_string()
}

#[async_trait]
impl StateStore for EchoLogs {
    async fn create_job(&self, job: &JobRecord) -> Result<JobRecord> {
        self.inner.create_job(job).await
    }
    async fn get_job(&self, id: JobId) -> Result<JobRecord> {
        self.inner.get_job(id).await
    }
    async fn update_job(&self, job: &JobRecord) -> Result<JobRecord> {
        self.inner.update_job(job).await
    }
    fn watch_job(&self, id: JobId) -> Option<super::JobWatch> {
        self.inner.watch_job(id)
    }
    fn batches_log_appends(&self) -> bool {
        self.inner.batches_log_appends()
    }
    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage> {
        self.inner.list_jobs(query).await
    }
    async fn put_blob(&self, hash: &BlobHash, content: Bytes) -> Result<()> {
        self.inner.put_blob(hash, content).await
    }
    async fn missing_blobs(&self, hashes: &[BlobHash]) -> Result<Vec<BlobHash>> {
        self.inner.missing_blobs(hashes).await
    }
    async fn get_blob(&self, hash: &BlobHash) -> Result<Bytes> {
        self.inner.get_blob(hash).await
    }
    async fn append_logs(&self, id: JobId, entries: &[LogEntry]) -> Result<u64> {
        let last = self.inner.append_logs(id, entries).await?;
        let first = last + 1 - entries.len() as u64;
        let mut out = std::io::stdout().lock();
        for (i, entry) in entries.iter().enumerate() {
            // A closed stdout must not fail the job: the store has the record.
            let _ = writeln!(out, "{}", cloud_logging_line(id, first + i as u64, entry));
        }
        let _ = out.flush();
        Ok(last)
    }
    async fn read_logs(&self, id: JobId, after: u64, limit: usize) -> Result<Vec<LogRecord>> {
        self.inner.read_logs(id, after, limit).await
    }
    async fn put_artifact(&self, id: JobId, name: &RelPath, content: Bytes) -> Result<()> {
        self.inner.put_artifact(id, name, content).await
    }
    async fn list_artifacts(&self, id: JobId) -> Result<Vec<ArtifactInfo>> {
        self.inner.list_artifacts(id).await
    }
    async fn get_artifact(&self, id: JobId, name: &RelPath) -> Result<Bytes> {
        self.inner.get_artifact(id, name).await
    }
    async fn delete_job(&self, id: JobId) -> Result<bool> {
        self.inner.delete_job(id).await
    }
    async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        self.inner.list_blobs().await
    }
    async fn delete_blob(&self, hash: &BlobHash) -> Result<bool> {
        self.inner.delete_blob(hash).await
    }
    async fn put_cache(&self, key: &CacheKey, content: Bytes) -> Result<()> {
        self.inner.put_cache(key, content).await
    }
    async fn get_cache(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        self.inner.get_cache(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::NodeInfo;
    use crate::state::StateStoreExt;
    use crate::MemoryStore;

    #[test]
    fn a_record_becomes_a_cloud_logging_line() {
        let id: JobId = "01900000-0000-7000-8000-000000000000".parse().unwrap();
        let mut entry = LogEntry::remote(LogLevel::Warn, "careful\nnow");
        entry.time = "2026-11-25T10:00:00.5Z".parse().unwrap();
        entry.node = Some(NodeInfo {
            unique_id: "model.p.orders".into(),
            status: Some("error".into()),
        });
        let line: serde_json::Value =
            serde_json::from_str(&cloud_logging_line(id, 7, &entry)).unwrap();
        assert_eq!(
            line,
            json!({
                "severity": "WARNING",
                "message": "careful\nnow",
                "time": "2026-11-25T10:00:00.500Z",
                "logging.googleapis.com/labels": { "dbt_remote_job_id": id.to_string() },
                "seq": 7,
                "source": "dbt-remote",
                "node": "model.p.orders",
                "node_status": "error",
            })
        );
    }

    #[tokio::test]
    async fn records_still_reach_the_inner_store_in_order() {
        let inner: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let spec = crate::JobSpec {
            args: vec!["build".into()],
            ..Default::default()
        };
        let job = inner.create_job(&JobRecord::new(spec)).await.unwrap();
        let echo = EchoLogs::new(inner.clone());
        echo.log(job.id, LogEntry::remote(LogLevel::Info, "one"))
            .await
            .unwrap();
        let last = echo
            .append_logs(
                job.id,
                &[
                    LogEntry::remote(LogLevel::Info, "two"),
                    LogEntry::remote(LogLevel::Info, "three"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(last, 3);
        let messages: Vec<String> = inner
            .read_all_logs(job.id, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.entry.message)
            .collect();
        assert_eq!(messages, ["one", "two", "three"]);
    }
}
