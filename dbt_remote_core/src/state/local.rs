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
//! ```
//! An append writes the records, then their index entries, under an exclusive lock of the index
//! file: a reader sees a record only once its index entry is there, so it never sees a torn one,
//! and a crash between the two writes leaves unindexed bytes that no reader ever looks at.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ArtifactInfo, BlobInfo, JobPage, JobQuery, StateStore};
use crate::blob::BlobHash;
use crate::job::{JobId, JobRecord};
use crate::log::{LogEntry, LogRecord};
use crate::paths::RelPath;
use crate::{Error, Result};

const BACKEND: &str = "local state";
const INDEX_ENTRY: u64 = 16;

/// State in a local folder.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: Arc<PathBuf>,
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
        })
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

    /// Writes `content` to `path` atomically (temp file in the state dir, then rename).
    fn write_atomic(&self, path: &Path, content: &[u8]) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut tmp = tempfile_in(&self.root.join("tmp"))?;
        tmp.1.write_all(content)?;
        tmp.1.sync_data()?;
        fs::rename(&tmp.0, path).inspect_err(|_| {
            let _ = fs::remove_file(&tmp.0);
        })
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
        serde_json::from_slice(&bytes).map_err(|e| Error::backend(BACKEND, e))
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

/// An exclusive lock on `path` (created if needed), released when the file is dropped.
fn lock(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(be)?;
    f.lock().map_err(be)?;
    Ok(f)
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
            s.write_atomic(&dir.join("job.json"), &json).map_err(be)?;
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
            let _lock = lock(&dir.join("job.lock"))?;
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
                // A job whose dir exists but whose record is not written yet is skipped.
                .filter_map(|id| s.read_record(&s.job_dir(id), id).ok())
                .filter(|j| query.status.is_none_or(|st| j.status == st));
            Ok(super::page(records, query.limit.max(1)))
        })
        .await
    }

    async fn put_blob(&self, hash: &BlobHash, content: Bytes) -> Result<()> {
        super::check_blob(hash, &content)?;
        let hash = hash.clone();
        self.blocking(move |s| {
            let path = s.blob_path(&hash);
            if path.is_file() {
                return Ok(());
            }
            s.write_atomic(&path, &content).map_err(be)
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
        self.blocking(move |s| match fs::read(s.blob_path(&hash)) {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::not_found(format!("blob {hash}")))
            }
            Err(e) => Err(be(e)),
        })
        .await
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
                let mut index = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(dir.join("logs.idx"))
                    .map_err(be)?;
                index.lock().map_err(be)?;
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
                for (i, entry) in entries.into_iter().enumerate() {
                    let record = LogRecord {
                        seq: count + 1 + i as u64,
                        entry,
                    };
                    let start = data.len();
                    serde_json::to_writer(&mut data, &record).map_err(be)?;
                    data.push(b'\n');
                    let n = (data.len() - start) as u64;
                    idx.extend_from_slice(&offset.to_le_bytes());
                    idx.extend_from_slice(&n.to_le_bytes());
                    offset += n;
                }
                log.write_all(&data).map_err(be)?;
                index
                    .seek(SeekFrom::Start(count * INDEX_ENTRY))
                    .map_err(be)?;
                index.write_all(&idx).map_err(be)?;
                Ok(count + (idx.len() as u64 / INDEX_ENTRY))
            }
        })
        .await
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
            let entry = |i: usize| {
                let at = i * INDEX_ENTRY as usize;
                let off = u64::from_le_bytes(idx[at..at + 8].try_into().unwrap());
                let len = u64::from_le_bytes(idx[at + 8..at + 16].try_into().unwrap());
                (off, len)
            };
            let (first, _) = entry(0);
            let (last_off, last_len) = entry(n as usize - 1);
            let mut data = vec![0u8; (last_off + last_len - first) as usize];
            let mut log = File::open(dir.join("logs.jsonl")).map_err(be)?;
            log.seek(SeekFrom::Start(first)).map_err(be)?;
            log.read_exact(&mut data).map_err(be)?;
            (0..n as usize)
                .map(|i| {
                    let (off, len) = entry(i);
                    let start = (off - first) as usize;
                    serde_json::from_slice(&data[start..start + len as usize]).map_err(be)
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
            match fs::read(name.join_to(&dir.join("artifacts"))) {
                Ok(b) => Ok(Bytes::from(b)),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::IsADirectory
                    ) =>
                {
                    Err(Error::not_found(format!("artifact {name} of job {id}")))
                }
                Err(e) => Err(be(e)),
            }
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
