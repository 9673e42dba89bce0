//! A [`StateStore`] in memory, for tests and for embedding.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ArtifactInfo, BlobInfo, CacheKey, JobPage, JobQuery, StateStore};
use crate::blob::BlobHash;
use crate::job::{JobId, JobRecord};
use crate::log::{LogEntry, LogRecord};
use crate::paths::RelPath;
use crate::{Error, Result};

/// Keeps everything in memory; lost when dropped.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    max_log_record_bytes: usize,
    wakeups: super::JobWakeups,
    max_cache_entry_bytes: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            inner: Mutex::default(),
            max_log_record_bytes: super::DEFAULT_MAX_LOG_RECORD_BYTES,
            wakeups: super::JobWakeups::default(),
            max_cache_entry_bytes: super::DEFAULT_MAX_CACHE_ENTRY_BYTES,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    jobs: BTreeMap<JobId, Job>,
    blobs: HashMap<BlobHash, Bytes>,
    /// When each blob was last put.
    blob_times: HashMap<BlobHash, chrono::DateTime<chrono::Utc>>,
    caches: HashMap<CacheKey, Bytes>,
}

#[derive(Debug)]
struct Job {
    record: JobRecord,
    logs: Vec<LogRecord>,
    artifacts: BTreeMap<RelPath, Bytes>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Longest message of a stored log record; longer ones are cut with a marker (default
    /// [`super::DEFAULT_MAX_LOG_RECORD_BYTES`]).
    pub fn with_max_log_record_bytes(mut self, max: usize) -> Self {
        self.max_log_record_bytes = max;
        self
    }

    /// Largest cache entry kept; larger ones are refused (default
    /// [`super::DEFAULT_MAX_CACHE_ENTRY_BYTES`]).
    pub fn with_max_cache_entry_bytes(mut self, max: u64) -> Self {
        self.max_cache_entry_bytes = max;
        self
    }

    /// Replaces the stored content of a blob without checking it, as a damaged disk would
    /// (tests of the blob check).
    #[cfg(feature = "testing")]
    pub fn damage_blob(&self, hash: &BlobHash, content: Bytes) {
        self.inner
            .lock()
            .unwrap()
            .blobs
            .insert(hash.clone(), content);
    }

    fn with_job<T>(&self, id: JobId, f: impl FnOnce(&mut Job) -> Result<T>) -> Result<T> {
        let mut inner = self.inner.lock().unwrap();
        let job = inner
            .jobs
            .get_mut(&id)
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        f(job)
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn create_job(&self, job: &JobRecord) -> Result<JobRecord> {
        let mut inner = self.inner.lock().unwrap();
        if inner.jobs.contains_key(&job.id) {
            return Err(Error::already_exists(format!("job {}", job.id)));
        }
        let record = JobRecord {
            version: 1,
            ..job.clone()
        };
        let stored = Job {
            record: record.clone(),
            logs: Vec::new(),
            artifacts: BTreeMap::new(),
        };
        inner.jobs.insert(job.id, stored);
        Ok(record)
    }

    async fn get_job(&self, id: JobId) -> Result<JobRecord> {
        self.with_job(id, |job| Ok(job.record.clone()))
    }

    async fn update_job(&self, job: &JobRecord) -> Result<JobRecord> {
        self.with_job(job.id, |stored| {
            if stored.record.version != job.version {
                return Err(Error::precondition(format!(
                    "job {} is at version {}, not {}",
                    job.id, stored.record.version, job.version
                )));
            }
            stored.record = JobRecord {
                version: job.version + 1,
                ..job.clone()
            };
            Ok(stored.record.clone())
        })
        .inspect(|_| self.wakeups.wake(job.id))
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage> {
        let inner = self.inner.lock().unwrap();
        let limit = query.limit.max(1);
        let matching = inner
            .jobs
            .values()
            .rev()
            .filter(|j| query.before.is_none_or(|b| j.record.id < b))
            .filter(|j| query.status.is_none_or(|s| j.record.status == s))
            .map(|j| j.record.clone());
        Ok(super::page(matching, limit))
    }

    async fn put_blob(&self, hash: &BlobHash, content: Bytes) -> Result<()> {
        super::check_blob(hash, &content)?;
        let mut inner = self.inner.lock().unwrap();
        inner.blob_times.insert(hash.clone(), chrono::Utc::now());
        inner.blobs.insert(hash.clone(), content);
        Ok(())
    }

    async fn missing_blobs(&self, hashes: &[BlobHash]) -> Result<Vec<BlobHash>> {
        let inner = self.inner.lock().unwrap();
        Ok(hashes
            .iter()
            .filter(|h| !inner.blobs.contains_key(h))
            .cloned()
            .collect())
    }

    async fn get_blob(&self, hash: &BlobHash) -> Result<Bytes> {
        let mut inner = self.inner.lock().unwrap();
        let content = inner
            .blobs
            .get(hash)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("blob {hash}")))?;
        if super::check_blob(hash, &content).is_err() {
            // Forgotten, so that missing_blobs reports it and the client uploads it again.
            inner.blobs.remove(hash);
            return Err(super::damaged_blob(hash));
        }
        Ok(content)
    }

    async fn append_logs(&self, id: JobId, entries: &[LogEntry]) -> Result<u64> {
        self.with_job(id, |job| {
            for entry in entries {
                let seq = job.logs.len() as u64 + 1;
                job.logs.push(LogRecord {
                    seq,
                    entry: super::cap_log_entry(entry, self.max_log_record_bytes).into_owned(),
                });
            }
            Ok(job.logs.len() as u64)
        })
        .inspect(|_| self.wakeups.wake(id))
    }

    fn watch_job(&self, id: JobId) -> Option<super::JobWatch> {
        Some(self.wakeups.watch(id))
    }

    async fn read_logs(&self, id: JobId, after: u64, limit: usize) -> Result<Vec<LogRecord>> {
        self.with_job(id, |job| {
            let start = (after as usize).min(job.logs.len());
            Ok(job.logs[start..].iter().take(limit).cloned().collect())
        })
    }

    async fn put_artifact(&self, id: JobId, name: &RelPath, content: Bytes) -> Result<()> {
        self.with_job(id, |job| {
            job.artifacts.insert(name.clone(), content);
            Ok(())
        })
    }

    async fn list_artifacts(&self, id: JobId) -> Result<Vec<ArtifactInfo>> {
        self.with_job(id, |job| {
            Ok(job
                .artifacts
                .iter()
                .map(|(name, c)| ArtifactInfo {
                    name: name.clone(),
                    size: c.len() as u64,
                })
                .collect())
        })
    }

    async fn get_artifact(&self, id: JobId, name: &RelPath) -> Result<Bytes> {
        self.with_job(id, |job| {
            job.artifacts
                .get(name)
                .cloned()
                .ok_or_else(|| Error::not_found(format!("artifact {name} of job {id}")))
        })
    }

    async fn delete_job(&self, id: JobId) -> Result<bool> {
        let had = self.inner.lock().unwrap().jobs.remove(&id).is_some();
        self.wakeups.wake(id);
        Ok(had)
    }

    async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .blobs
            .keys()
            .map(|hash| BlobInfo {
                hash: hash.clone(),
                stored_at: inner.blob_times.get(hash).copied().unwrap_or_default(),
            })
            .collect())
    }

    async fn delete_blob(&self, hash: &BlobHash) -> Result<bool> {
        let mut inner = self.inner.lock().unwrap();
        inner.blob_times.remove(hash);
        Ok(inner.blobs.remove(hash).is_some())
    }

    async fn put_cache(&self, key: &CacheKey, content: Bytes) -> Result<()> {
        super::cache::check_size(key, content.len() as u64, self.max_cache_entry_bytes)?;
        self.inner.lock().unwrap().caches.insert(*key, content);
        Ok(())
    }

    async fn get_cache(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        Ok(self.inner.lock().unwrap().caches.get(key).cloned())
    }
}
