//! A [`StateStore`] in a local folder: the default, shared safely by the server and the job
//! processes it starts.
//!
//! Layout under the state dir:
//! ```text
//! blobs/<2 hex>/<62 hex>          content-addressed input files
//! jobs/<id>/job.json              the record (replaced atomically, under jobs/<id>/job.lock)
//! jobs/<id>/logs.jsonl            one JSON record per line, append-only
//! jobs/<id>/logs.idx              16 bytes per record: offset and length in logs.jsonl (LE u64)
//! jobs/<id>/artifacts/<name>      artifacts
//! cache/<kind>/<64 hex>           cache entries (replaced atomically)
//! ```
//! An append writes the records, then their index entries, under an exclusive lock of the index
//! file: a reader sees a record only once its index entry is there, so it never sees a torn one,
//! and a crash between the two writes leaves unindexed bytes that no reader ever looks at.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{ArtifactInfo, BlobInfo, CacheKey, JobPage, JobQuery, StateStore};
use crate::blob::BlobHash;
use crate::job::{JobId, JobRecord};
use crate::log::{LogEntry, LogRecord};
use crate::paths::RelPath;
use crate::{Error, Result};

const BACKEND: &str = "local state";
const INDEX_ENTRY: u64 = 16;

/// Default longest wait for a file lock (a job record's or a log's) before
/// [`Error::Unavailable`].
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// State in a local folder.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: Arc<PathBuf>,
    lock_timeout: Duration,
    max_log_record_bytes: usize,
    /// The inotify watcher of followed jobs' folders, started on the first watch.
    watcher: Arc<std::sync::OnceLock<Option<super::inotify::DirWatcher>>>,
    max_cache_entry_bytes: u64,
}

impl LocalStore {
    /// Opens (creating it if needed) the state dir at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in ["blobs", "jobs", "tmp"] {
            fs::create_dir_all(root.join(dir)).map_err(|e| {
                Error::backend(
                    BACKEND,
                    io_context(e, format!("creating {}", root.display())),
                )
            })?;
        }
        Ok(LocalStore {
            root: Arc::new(root),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            max_log_record_bytes: super::DEFAULT_MAX_LOG_RECORD_BYTES,
            watcher: Arc::default(),
            max_cache_entry_bytes: super::DEFAULT_MAX_CACHE_ENTRY_BYTES,
        })
    }

    /// How long a write waits for a file lock another writer holds before it gives up with
    /// [`Error::Unavailable`] (default [`DEFAULT_LOCK_TIMEOUT`]).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
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

    /// The state dir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn job_dir(&self, id: JobId) -> PathBuf {
        self.root.join("jobs").join(id.to_string())
    }

    fn blob_path(&self, hash: &BlobHash) -> PathBuf {
        let h = hash.as_str();
        self.root.join("blobs").join(&h[..2]).join(&h[2..])
    }

    /// The job's dir, or NotFound when the job has no record.
    fn existing_job_dir(&self, id: JobId) -> Result<PathBuf> {
        let dir = self.job_dir(id);
        if dir.join("job.json").is_file() {
            Ok(dir)
        } else {
            Err(Error::not_found(format!("job {id}")))
        }
    }

    /// Writes `content` to `path` atomically (temp file in the state dir, then rename). On
    /// any failure (a full disk included) the temp file is removed and `path` is unchanged.
    fn write_atomic(&self, path: &Path, content: &[u8]) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let (tmp, mut file) = tempfile_in(&self.root.join("tmp"))?;
        let written = file
            .write_all(content)
            .and_then(|()| file.sync_data())
            .and_then(|()| fs::rename(&tmp, path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// An exclusive lock on `path`, waiting at most the lock timeout.
    fn lock(&self, path: &Path, what: impl FnOnce() -> String) -> Result<File> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(be)?;
        lock_within(f, self.lock_timeout, what)
    }

    /// Runs blocking file work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LocalStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| Error::backend(BACKEND, e))?
    }

    fn read_record(&self, dir: &Path, id: JobId) -> Result<JobRecord> {
        let bytes = match fs::read(dir.join("job.json")) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("job {id}")))
            }
            Err(e) => return Err(Error::backend(BACKEND, e)),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| be(format!("the record of job {id} is damaged: {e}")))
    }

    /// The blob's content if it is stored and matches its hash. A damaged copy is removed,
    /// so that `missing_blobs` reports it and the client uploads it again.
    fn read_blob(&self, hash: &BlobHash) -> Result<Bytes> {
        let path = self.blob_path(hash);
        let content = match fs::read(&path) {
            Ok(b) => Bytes::from(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("blob {hash}")))
            }
            Err(e) => return Err(be(e)),
        };
        if super::check_blob(hash, &content).is_err() {
            tracing::warn!("blob {hash} is damaged (its content does not match its hash): removed");
            let _ = fs::remove_file(&path);
            return Err(super::damaged_blob(hash));
        }
        Ok(content)
    }
}

/// Takes the exclusive lock of `f`, retrying until `timeout`; then [`Error::Unavailable`]
/// (`what` names the locked thing). Never blocks longer than `timeout`.
fn lock_within(f: File, timeout: Duration, what: impl FnOnce() -> String) -> Result<File> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => return Err(be(e)),
        }
        if start.elapsed() >= timeout {
            return Err(Error::unavailable(format!(
                "{} is locked by another writer (waited {} ms)",
                what(),
                timeout.as_millis()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The byte ranges `(start, end)` in the log of the index entries `idx`, or `None` when the
/// index is damaged: an entry past the end of a log of `log_len` bytes, or out of order.
fn index_spans(idx: &[u8], log_len: u64) -> Option<Vec<(u64, u64)>> {
    let mut spans = Vec::with_capacity(idx.len() / INDEX_ENTRY as usize);
    let mut previous_end = 0;
    for entry in idx.chunks_exact(INDEX_ENTRY as usize) {
        let (off, len) = entry.split_at(8);
        let start = u64::from_le_bytes(off.try_into().ok()?);
        let end = start.checked_add(u64::from_le_bytes(len.try_into().ok()?))?;
        if end > log_len || start < previous_end {
            return None;
        }
        previous_end = end;
        spans.push((start, end));
    }
    (!spans.is_empty()).then_some(spans)
}

/// An artifact read error as the caller's mistake when it is one: a name through a file or
/// too long for the file system is not found / invalid, not a server fault.
fn artifact_error(e: io::Error, name: &RelPath, id: JobId) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory => {
            Error::not_found(format!("artifact {name} of job {id}"))
        }
        io::ErrorKind::InvalidFilename => Error::invalid(format!(
            "invalid artifact name {name:?}: a path component is longer than 255 bytes"
        )),
        _ => be(e),
    }
}

/// A new uniquely named file in `dir`.
fn tempfile_in(dir: &Path) -> io::Result<(PathBuf, File)> {
    loop {
        let path = dir.join(format!(".tmp-{}", uuid::Uuid::now_v7().simple()));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn io_context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn be(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::backend(BACKEND, e)
}

#[async_trait]
impl StateStore for LocalStore {
    async fn create_job(&self, job: &JobRecord) -> Result<JobRecord> {
        let record = JobRecord {
            version: 1,
            ..job.clone()
        };
        self.blocking(move |s| {
            let dir = s.job_dir(record.id);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(Error::already_exists(format!("job {}", record.id)))
                }
                Err(e) => return Err(be(e)),
            }
            let json = serde_json::to_vec_pretty(&record).map_err(be)?;
            // A record that could not be written (a full disk) leaves no job behind.
            s.write_atomic(&dir.join("job.json"), &json)
                .inspect_err(|_| {
                    let _ = fs::remove_dir_all(&dir);
                })
                .map_err(be)?;
            Ok(record)
        })
        .await
    }

    async fn get_job(&self, id: JobId) -> Result<JobRecord> {
        self.blocking(move |s| s.read_record(&s.job_dir(id), id))
            .await
    }

    async fn update_job(&self, job: &JobRecord) -> Result<JobRecord> {
        let job = job.clone();
        self.blocking(move |s| {
            let dir = s.existing_job_dir(job.id)?;
            let _lock = s.lock(&dir.join("job.lock"), || format!("job {}", job.id))?;
            let stored = s.read_record(&dir, job.id)?;
            if stored.version != job.version {
                return Err(Error::precondition(format!(
                    "job {} is at version {}, not {}",
                    job.id, stored.version, job.version
                )));
            }
            let record = JobRecord {
                version: job.version + 1,
                ..job
            };
            let json = serde_json::to_vec_pretty(&record).map_err(be)?;
            s.write_atomic(&dir.join("job.json"), &json).map_err(be)?;
            Ok(record)
        })
        .await
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage> {
        let query = query.clone();
        self.blocking(move |s| {
            let mut ids: Vec<JobId> = fs::read_dir(s.root.join("jobs"))
                .map_err(be)?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|id| query.before.is_none_or(|b| *id < b))
                .collect();
            ids.sort_unstable_by(|a, b| b.cmp(a));
            let records = ids
                .into_iter()
                // A job whose dir exists but whose record is not written yet is skipped, and
                // so is a damaged record: it breaks that job only, not the listing.
                .filter_map(|id| match s.read_record(&s.job_dir(id), id) {
                    Ok(record) => Some(record),
                    Err(Error::NotFound { .. }) => None,
                    Err(e) => {
                        tracing::warn!("listing jobs: skipping job {id}: {e}");
                        None
                    }
                })
                .filter(|j| query.status.is_none_or(|st| j.status == st));
            Ok(super::page(records, query.limit.max(1)))
        })
        .await
    }

    async fn put_blob(&self, hash: &BlobHash, content: Bytes) -> Result<()> {
        super::check_blob(hash, &content)?;
        let hash = hash.clone();
        self.blocking(move |s| {
            // A stored copy is kept only if it is intact: a damaged one is replaced.
            if s.read_blob(&hash).is_ok() {
                return Ok(());
            }
            s.write_atomic(&s.blob_path(&hash), &content).map_err(be)
        })
        .await
    }

    async fn missing_blobs(&self, hashes: &[BlobHash]) -> Result<Vec<BlobHash>> {
        let hashes = hashes.to_vec();
        self.blocking(move |s| {
            Ok(hashes
                .into_iter()
                .filter(|h| !s.blob_path(h).is_file())
                .collect())
        })
        .await
    }

    async fn get_blob(&self, hash: &BlobHash) -> Result<Bytes> {
        let hash = hash.clone();
        self.blocking(move |s| s.read_blob(&hash)).await
    }

    async fn blob_size(&self, hash: &BlobHash) -> Result<u64> {
        let hash = hash.clone();
        self.blocking(move |s| match fs::metadata(s.blob_path(&hash)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::not_found(format!("blob {hash}")))
            }
            Err(e) => Err(be(e)),
        })
        .await
    }

    async fn append_logs(&self, id: JobId, entries: &[LogEntry]) -> Result<u64> {
        self.blocking({
            let entries = entries.to_vec();
            move |s| {
                let dir = s.existing_job_dir(id)?;
                let mut index = s.lock(&dir.join("logs.idx"), || format!("the log of job {id}"))?;
                // A crash may have left a torn index entry: it is not a record.
                let len = index.metadata().map_err(be)?.len();
                let count = len / INDEX_ENTRY;
                if len % INDEX_ENTRY != 0 {
                    index.set_len(count * INDEX_ENTRY).map_err(be)?;
                }
                if entries.is_empty() {
                    return Ok(count);
                }
                let mut log = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("logs.jsonl"))
                    .map_err(be)?;
                let mut offset = log.metadata().map_err(be)?.len();
                let mut data = Vec::new();
                let mut idx = Vec::with_capacity(entries.len() * INDEX_ENTRY as usize);
                for (i, entry) in entries.iter().enumerate() {
                    let record = LogRecord {
                        seq: count + 1 + i as u64,
                        entry: super::cap_log_entry(entry, s.max_log_record_bytes).into_owned(),
                    };
                    let start = data.len();
                    serde_json::to_writer(&mut data, &record).map_err(be)?;
                    data.push(b'\n');
                    let n = (data.len() - start) as u64;
                    idx.extend_from_slice(&offset.to_le_bytes());
                    idx.extend_from_slice(&n.to_le_bytes());
                    offset += n;
                }
                let start = offset - data.len() as u64;
                let written = log.write_all(&data).and_then(|()| {
                    index.seek(SeekFrom::Start(count * INDEX_ENTRY))?;
                    index.write_all(&idx)
                });
                if let Err(e) = written {
                    // A failed batch (a full disk) leaves no record: drop what was written.
                    let _ = index.set_len(count * INDEX_ENTRY);
                    let _ = log.set_len(start);
                    return Err(be(e));
                }
                Ok(count + (idx.len() as u64 / INDEX_ENTRY))
            }
        })
        .await
    }

    fn watch_job(&self, id: JobId) -> Option<super::JobWatch> {
        let watcher = self
            .watcher
            .get_or_init(super::inotify::DirWatcher::start)
            .as_ref()?;
        watcher.watch(id, &self.job_dir(id))
    }

    async fn read_logs(&self, id: JobId, after: u64, limit: usize) -> Result<Vec<LogRecord>> {
        self.blocking(move |s| {
            let dir = s.existing_job_dir(id)?;
            let mut index = match File::open(dir.join("logs.idx")) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(be(e)),
            };
            let count = index.metadata().map_err(be)?.len() / INDEX_ENTRY;
            let n = count.saturating_sub(after).min(limit as u64);
            if n == 0 {
                return Ok(Vec::new());
            }
            let mut idx = vec![0u8; (n * INDEX_ENTRY) as usize];
            index
                .seek(SeekFrom::Start(after * INDEX_ENTRY))
                .map_err(be)?;
            index.read_exact(&mut idx).map_err(be)?;
            let mut log = File::open(dir.join("logs.jsonl")).map_err(be)?;
            let log_len = log.metadata().map_err(be)?.len();
            let spans = index_spans(&idx, log_len)
                .ok_or_else(|| be(format!("the log index of job {id} is damaged")))?;
            let (first, end) = (spans[0].0, spans[spans.len() - 1].1);
            let mut data = vec![0u8; (end - first) as usize];
            log.seek(SeekFrom::Start(first)).map_err(be)?;
            log.read_exact(&mut data).map_err(be)?;
            spans
                .iter()
                .map(|&(start, stop)| {
                    let bytes = &data[(start - first) as usize..(stop - first) as usize];
                    serde_json::from_slice(bytes)
                        .map_err(|e| be(format!("a log record of job {id} is damaged: {e}")))
                })
                .collect()
        })
        .await
    }

    async fn put_artifact(&self, id: JobId, name: &RelPath, content: Bytes) -> Result<()> {
        let name = name.clone();
        self.blocking(move |s| {
            let dir = s.existing_job_dir(id)?;
            s.write_atomic(&name.join_to(&dir.join("artifacts")), &content)
                .map_err(be)
        })
        .await
    }

    async fn list_artifacts(&self, id: JobId) -> Result<Vec<ArtifactInfo>> {
        self.blocking(move |s| {
            let root = s.existing_job_dir(id)?.join("artifacts");
            let mut out = Vec::new();
            let mut stack = vec![(root.clone(), String::new())];
            while let Some((dir, prefix)) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(be(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(be)?;
                    let Some(name) = entry.file_name().to_str().map(|n| format!("{prefix}{n}"))
                    else {
                        continue;
                    };
                    let meta = entry.metadata().map_err(be)?;
                    if meta.is_dir() {
                        stack.push((entry.path(), format!("{name}/")));
                    } else if let Ok(name) = RelPath::new(name) {
                        out.push(ArtifactInfo {
                            name,
                            size: meta.len(),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn get_artifact(&self, id: JobId, name: &RelPath) -> Result<Bytes> {
        let name = name.clone();
        self.blocking(move |s| {
            let dir = s.existing_job_dir(id)?;
            fs::read(name.join_to(&dir.join("artifacts")))
                .map(Bytes::from)
                .map_err(|e| artifact_error(e, &name, id))
        })
        .await
    }

    async fn delete_job(&self, id: JobId) -> Result<bool> {
        self.blocking(move |s| {
            let dir = s.job_dir(id);
            let had_record = dir.join("job.json").is_file();
            // One rename takes the record, log and artifacts out of jobs/ at once; what is
            // left in tmp/ by a failed removal is no job's.
            let trash = s
                .root
                .join("tmp")
                .join(format!(".deleted-{}", uuid::Uuid::now_v7().simple()));
            match fs::rename(&dir, &trash) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(be(e)),
            }
            fs::remove_dir_all(&trash).map_err(be)?;
            Ok(had_record)
        })
        .await
    }

    async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        self.blocking(|s| list_blob_files(&s.root.join("blobs")))
            .await
    }

    async fn delete_blob(&self, hash: &BlobHash) -> Result<bool> {
        let hash = hash.clone();
        self.blocking(move |s| match fs::remove_file(s.blob_path(&hash)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(be(e)),
        })
        .await
    }

    async fn put_cache(&self, key: &CacheKey, content: Bytes) -> Result<()> {
        super::cache::check_size(key, content.len() as u64, self.max_cache_entry_bytes)?;
        let key = *key;
        self.blocking(move |s| {
            s.write_atomic(&s.root.join(key.path()), &content)
                .map_err(be)
        })
        .await
    }

    async fn get_cache(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        let key = *key;
        self.blocking(move |s| match fs::read(s.root.join(key.path())) {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(be(e)),
        })
        .await
    }
}

/// The blobs under `blobs/<2 hex>/<62 hex>`, with their files' modification times; other
/// files are not blobs and are skipped.
fn list_blob_files(root: &Path) -> Result<Vec<BlobInfo>> {
    let mut blobs = Vec::new();
    for shard in fs::read_dir(root).map_err(be)? {
        let shard = shard.map_err(be)?;
        let Some(head) = shard.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let files = match fs::read_dir(shard.path()) {
            Ok(files) => files,
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => continue,
            Err(e) => return Err(be(e)),
        };
        for file in files {
            let file = file.map_err(be)?;
            let Some(tail) = file.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(hash) = format!("{head}{tail}").parse::<BlobHash>() else {
                continue;
            };
            let modified = match file.metadata().and_then(|m| m.modified()) {
                Ok(t) => t,
                // Deleted since the directory was read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(be(e)),
            };
            blobs.push(BlobInfo {
                hash,
                stored_at: modified.into(),
            });
        }
    }
    Ok(blobs)
}
