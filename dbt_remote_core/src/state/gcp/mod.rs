//! A [`StateStore`] on Google Cloud (feature `gcp`): job records and logs in Firestore, blobs
//! and artifacts in Cloud Storage. The server and the jobs it starts (local processes or Cloud
//! Run Jobs) share it.
//!
//! Layout, with `<p>` the collection prefix ([`GcpStoreBuilder::with_collection_prefix`]):
//! ```text
//! Firestore  <p>jobs/<id>                  the record: `record` (JSON), `id`, `status`, `version`
//!            <p>log_heads/<id>             `count`: how many log records the job has
//!            <p>jobs/<id>/logs/<seq>       one log record (`entry`, JSON), seq zero-padded to 20
//! GCS        <p>blobs/<sha256>             content-addressed input files
//!            <p>jobs/<id>/artifacts/<name> artifacts
//!            <p>cache/<kind>/<64 hex>      cache entries (replaced whole; last writer wins)
//! ```
//! - `create_job` commits the record and a log head of 0 with `exists: false` preconditions.
//! - `update_job` reads the record, checks its `version`, and commits the new one with an
//!   `update_time` precondition: a concurrent writer in between makes the commit fail, so
//!   exactly one of two updates of the same version wins.
//! - `append_logs` reads the log head (count `n`, update time `t`) and commits, in one atomic
//!   commit, the head `n + k` (precondition `update_time = t`) and the records `n+1..=n+k`
//!   (precondition `exists: false`). A concurrent appender makes the commit fail and it is
//!   retried on the new head, so records are numbered without gaps and nothing is rewritten.
//!   Its cost is that of the batch: one read and one commit of `k + 1` documents.
//! - `read_logs` reads the head and then the records `after+1..` by name (one batch read).
//! - `watch_job` opens a `Listen` stream on the job's record and log head, over a connection
//!   of its own (`listen.rs`); at most [`MAX_WATCHES`] at once.
//! - Only the RPCs `Commit`, `BatchGetDocuments`, `RunQuery` and `Listen` are used.
//! - `list_jobs` with a status filter needs a composite index `status ASC, id DESC` on
//!   `<p>jobs` in a real database (docs/deployment.md).

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ArtifactInfo, BlobInfo, CacheKey, JobPage, JobQuery, StateStore};
use crate::blob::BlobHash;
use crate::env;
use crate::job::{JobId, JobRecord};
use crate::log::{LogEntry, LogRecord};
use crate::paths::RelPath;
use crate::{Error, Result};

pub(crate) mod firestore;
mod gcs;
mod listen;

pub use listen::MAX_WATCHES;

/// State in Firestore (records, logs) and Cloud Storage (blobs, artifacts).
///
/// Made by [`GcpStore::builder`]:
/// ```no_run
/// # async fn f() -> dbt_remote_core::Result<()> {
/// use dbt_remote_core::state::GcpStore;
/// let store = GcpStore::builder().from_env().with_bucket("my-dbt-remote").build().await?;
/// # Ok(()) }
/// ```
pub struct GcpStore {
    records: firestore::Records,
    objects: gcs::Objects,
    listener: listen::Listener,
    max_log_record_bytes: usize,
}

impl fmt::Debug for GcpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpStore")
            .field("records", &self.records)
            .field("objects", &self.objects)
            .field("listen_streams", &self.listener.streams())
            .finish()
    }
}

impl GcpStore {
    pub fn builder() -> GcpStoreBuilder {
        GcpStoreBuilder::default()
    }

    /// What this instance has written so far (the `gcp_writes` benchmark prints it).
    pub fn written(&self) -> GcpWritten {
        let (commits, documents, firestore_bytes) = self.records.written();
        let (objects, storage_bytes) = self.objects.written();
        GcpWritten {
            commits,
            documents,
            firestore_bytes,
            objects,
            storage_bytes,
        }
    }

    /// Firestore Listen streams this instance has open now: one per watched job
    /// ([`StateStore::watch_job`]) while it is connected (for tests and metrics).
    pub fn listen_streams(&self) -> usize {
        self.listener.streams()
    }
}

/// Counts of what a [`GcpStore`] wrote: successful Firestore commits, the documents they
/// wrote and their encoded request size, and the Cloud Storage objects uploaded and their size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcpWritten {
    pub commits: u64,
    pub documents: u64,
    pub firestore_bytes: u64,
    pub objects: u64,
    pub storage_bytes: u64,
}

/// Configures a [`GcpStore`]; nothing is checked before [`build`](Self::build).
#[derive(Debug, Clone, Default)]
pub struct GcpStoreBuilder {
    project: Option<String>,
    bucket: Option<String>,
    collection_prefix: Option<String>,
    firestore_emulator: Option<String>,
    storage_emulator: Option<String>,
    max_log_record_bytes: Option<usize>,
}

impl GcpStoreBuilder {
    /// Takes every setting that is set in the environment: `DBT_REMOTE_GCP_PROJECT` (else
    /// `GOOGLE_CLOUD_PROJECT`), `DBT_REMOTE_GCS_BUCKET`, `DBT_REMOTE_COLLECTION_PREFIX`,
    /// `FIRESTORE_EMULATOR_HOST` and `STORAGE_EMULATOR_HOST` (see [`crate::env`]).
    pub fn from_env(mut self) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(project) = var(env::GCP_PROJECT).or_else(|| var(env::GOOGLE_CLOUD_PROJECT)) {
            self.project = Some(project);
        }
        if let Some(bucket) = var(env::GCS_BUCKET) {
            self.bucket = Some(bucket);
        }
        if let Some(prefix) = var(env::COLLECTION_PREFIX) {
            self.collection_prefix = Some(prefix);
        }
        if let Some(host) = var(env::FIRESTORE_EMULATOR_HOST) {
            self.firestore_emulator = Some(host);
        }
        if let Some(host) = var(env::STORAGE_EMULATOR_HOST) {
            self.storage_emulator = Some(host);
        }
        self
    }

    /// Longest message of a stored log record; longer ones are cut with a marker (default
    /// [`crate::state::DEFAULT_MAX_LOG_RECORD_BYTES`], at most 512 KiB).
    pub fn with_max_log_record_bytes(mut self, max: usize) -> Self {
        self.max_log_record_bytes = Some(max);
        self
    }

    /// The Google Cloud project of the Firestore database (required).
    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// The Cloud Storage bucket of blobs and artifacts (required; it must exist).
    pub fn with_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// A prefix of every Firestore collection and Cloud Storage object name of the store
    /// (letters, digits, `_` and `-`), so that several stores share a database and a bucket.
    pub fn with_collection_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.collection_prefix = Some(prefix.into());
        self
    }

    /// Talk to the Firestore emulator at `host:port`, without credentials.
    pub fn with_firestore_emulator(mut self, host: impl Into<String>) -> Self {
        self.firestore_emulator = Some(host.into());
        self
    }

    /// Talk to the Cloud Storage emulator at `host:port`, without credentials.
    pub fn with_storage_emulator(mut self, host: impl Into<String>) -> Self {
        self.storage_emulator = Some(host.into());
        self
    }

    /// Checks the settings and connects (looking up Google's default credentials, except for
    /// an emulator). Makes no request: a missing bucket or database shows at first use.
    pub async fn build(self) -> Result<GcpStore> {
        let project = self.project.filter(|p| !p.is_empty()).ok_or_else(|| {
            Error::invalid(format!(
                "the GCP state store needs a project: set {} (or {})",
                env::GCP_PROJECT,
                env::GOOGLE_CLOUD_PROJECT
            ))
        })?;
        let bucket = self.bucket.filter(|b| !b.is_empty()).ok_or_else(|| {
            Error::invalid(format!(
                "the GCP state store needs a Cloud Storage bucket: set {}",
                env::GCS_BUCKET
            ))
        })?;
        check_bucket_name(&bucket)?;
        let prefix = self.collection_prefix.unwrap_or_default();
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::invalid(format!(
                "invalid collection prefix {prefix:?}: use letters, digits, '_' and '-' only"
            )));
        }
        for (name, host) in [
            (env::FIRESTORE_EMULATOR_HOST, &self.firestore_emulator),
            (env::STORAGE_EMULATOR_HOST, &self.storage_emulator),
        ] {
            if let Some(host) = host {
                check_host(name, host)?;
            }
        }
        let records =
            firestore::Records::connect(&project, &prefix, self.firestore_emulator.as_deref())
                .await?;
        let objects =
            gcs::Objects::connect(&bucket, &prefix, self.storage_emulator.as_deref()).await?;
        let listener = listen::Listener::new(&project, self.firestore_emulator.as_deref());
        let max_log_record_bytes = self
            .max_log_record_bytes
            .unwrap_or(super::DEFAULT_MAX_LOG_RECORD_BYTES);
        Ok(GcpStore {
            records,
            objects,
            listener,
            max_log_record_bytes,
        })
    }
}

/// Cloud Storage's rules for bucket names, in short.
fn check_bucket_name(bucket: &str) -> Result<()> {
    let ok_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    let ok_ends = bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok_chars && ok_ends && (3..=222).contains(&bucket.len()) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid bucket name {bucket:?}: 3 to 222 lowercase letters, digits, '-', '_' and '.', \
             starting and ending with a letter or digit"
        )))
    }
}

/// An emulator address must be `host:port`, without a scheme or path.
fn check_host(name: &str, host: &str) -> Result<()> {
    let valid = host
        .rsplit_once(':')
        .is_some_and(|(h, port)| !h.is_empty() && !h.contains('/') && port.parse::<u16>().is_ok());
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {name} {host:?}: expected host:port, e.g. 127.0.0.1:8080"
        )))
    }
}

#[async_trait]
impl StateStore for GcpStore {
    async fn create_job(&self, job: &JobRecord) -> Result<JobRecord> {
        self.records.create_job(job).await
    }

    async fn get_job(&self, id: JobId) -> Result<JobRecord> {
        Ok(self.records.get_job(id).await?.0)
    }

    async fn update_job(&self, job: &JobRecord) -> Result<JobRecord> {
        self.records.update_job(job).await
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage> {
        self.records.list_jobs(query).await
    }

    async fn put_blob(&self, hash: &BlobHash, content: Bytes) -> Result<()> {
        super::check_blob(hash, &content)?;
        self.objects
            .put(&self.objects.blob_name(hash), content)
            .await
    }

    async fn missing_blobs(&self, hashes: &[BlobHash]) -> Result<Vec<BlobHash>> {
        let names: Vec<String> = hashes.iter().map(|h| self.objects.blob_name(h)).collect();
        let exists = self.objects.exist(&names).await?;
        Ok(hashes
            .iter()
            .zip(exists)
            .filter(|(_, exists)| !exists)
            .map(|(h, _)| h.clone())
            .collect())
    }

    async fn get_blob(&self, hash: &BlobHash) -> Result<Bytes> {
        let content = self
            .objects
            .get(&self.objects.blob_name(hash))
            .await?
            .ok_or_else(|| Error::not_found(format!("blob {hash}")))?;
        // A damaged object is refused; a put_blob of the right content replaces it.
        super::check_blob(hash, &content).map_err(|_| super::damaged_blob(hash))?;
        Ok(content)
    }

    async fn blob_size(&self, hash: &BlobHash) -> Result<u64> {
        self.objects
            .size(&self.objects.blob_name(hash))
            .await?
            .ok_or_else(|| Error::not_found(format!("blob {hash}")))
    }

    async fn append_logs(&self, id: JobId, entries: &[LogEntry]) -> Result<u64> {
        self.records
            .append_logs(id, entries, self.max_log_record_bytes)
            .await
    }

    /// Every append rewrites the log head document (see `firestore.rs`).
    fn batches_log_appends(&self) -> bool {
        true
    }

    /// A Firestore Listen stream on the job's record and log head (see `listen.rs`).
    fn watch_job(&self, id: JobId) -> Option<super::JobWatch> {
        let documents = vec![self.records.job_doc(id), self.records.head_doc(id)];
        self.listener.watch(documents)
    }

    async fn read_logs(&self, id: JobId, after: u64, limit: usize) -> Result<Vec<LogRecord>> {
        self.records.read_logs(id, after, limit).await
    }

    async fn put_artifact(&self, id: JobId, name: &RelPath, content: Bytes) -> Result<()> {
        self.records.check_job(id).await?;
        self.objects
            .put(&self.objects.artifact_name(id, name), content)
            .await
    }

    async fn list_artifacts(&self, id: JobId) -> Result<Vec<ArtifactInfo>> {
        self.records.check_job(id).await?;
        let prefix = self.objects.artifact_prefix(id);
        let mut artifacts = Vec::new();
        for (name, size) in self.objects.list(&prefix).await? {
            let rel = name.strip_prefix(&prefix).unwrap_or(&name);
            // An object that is not a valid artifact name was not written by the store.
            if let Ok(name) = RelPath::new(rel) {
                artifacts.push(ArtifactInfo { name, size });
            }
        }
        artifacts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(artifacts)
    }

    async fn get_artifact(&self, id: JobId, name: &RelPath) -> Result<Bytes> {
        self.records.check_job(id).await?;
        self.objects
            .get(&self.objects.artifact_name(id, name))
            .await?
            .ok_or_else(|| Error::not_found(format!("artifact {name} of job {id}")))
    }

    async fn delete_job(&self, id: JobId) -> Result<bool> {
        let had_record = self.records.delete_job(id).await?;
        self.objects
            .delete_all(&self.objects.artifact_prefix(id))
            .await?;
        Ok(had_record)
    }

    async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        let prefix = self.objects.blob_prefix();
        let objects = self.objects.list_updated(&prefix).await?;
        Ok(objects
            .into_iter()
            // An object that is not named by a hash was not written by the store.
            .filter_map(|(name, stored_at)| {
                let hash = name.strip_prefix(&prefix)?.parse().ok()?;
                Some(BlobInfo { hash, stored_at })
            })
            .collect())
    }

    async fn delete_blob(&self, hash: &BlobHash) -> Result<bool> {
        self.objects.delete(&self.objects.blob_name(hash)).await
    }

    async fn put_cache(&self, key: &CacheKey, content: Bytes) -> Result<()> {
        let max = super::DEFAULT_MAX_CACHE_ENTRY_BYTES;
        super::cache::check_size(key, content.len() as u64, max)?;
        self.objects
            .put(&self.objects.cache_name(key), content)
            .await
    }

    async fn get_cache(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        self.objects.get(&self.objects.cache_name(key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn build_err(builder: GcpStoreBuilder) -> String {
        builder.build().await.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn build_checks_the_settings() {
        let base = GcpStoreBuilder::default();
        assert!(build_err(base.clone()).await.contains("needs a project"));
        let with_project = base.with_project("p");
        assert!(build_err(with_project.clone())
            .await
            .contains("needs a Cloud Storage bucket"));
        assert!(build_err(with_project.clone().with_bucket("Bad_Bucket"))
            .await
            .contains("invalid bucket name"));
        let with_bucket = with_project.with_bucket("dbt-remote-test");
        assert!(build_err(with_bucket.clone().with_collection_prefix("a/b"))
            .await
            .contains("invalid collection prefix"));
        assert!(
            build_err(with_bucket.clone().with_firestore_emulator("http://x:1"))
                .await
                .contains("expected host:port")
        );
        assert!(build_err(with_bucket.with_storage_emulator("localhost"))
            .await
            .contains("STORAGE_EMULATOR_HOST"));
    }
}
