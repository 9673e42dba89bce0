//! Job records and log records in Firestore, through its RPCs `Commit` (with preconditions),
//! `BatchGetDocuments` and `RunQuery` (the layout and the protocol are in `mod.rs`).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use firestore::{FirestoreDb, FirestoreDbOptions};
use futures::TryStreamExt;
use gcloud_sdk::google::firestore::v1::{
    batch_get_documents_response, precondition, run_query_request, structured_query, value, write,
    BatchGetDocumentsRequest, CommitRequest, Document, Precondition, RunQueryRequest,
    StructuredQuery, Value, Write,
};
use gcloud_sdk::prost::Message;
use gcloud_sdk::prost_types::Timestamp;
use gcloud_sdk::tonic::{Code, Status};

use super::super::{page, JobPage, JobQuery};
use crate::job::{JobId, JobRecord};
use crate::log::{LogEntry, LogRecord};
use crate::{Error, Result};

const BACKEND: &str = "firestore";
/// Firestore keeps a document under 1 MiB: a longer log message is cut to this many bytes.
const MAX_MESSAGE_BYTES: usize = 512 * 1024;
/// Commits retried after a concurrent append before giving up.
const MAX_APPEND_ATTEMPTS: u32 = 1000;

/// The private errors of the Firestore side; callers see [`Error::Backend`].
#[derive(Debug, thiserror::Error)]
enum FirestoreError {
    #[error("connecting to Firestore: {0}")]
    Connect(#[source] firestore::errors::FirestoreError),
    #[error("{op} failed: {code:?}: {message}")]
    Rpc {
        op: &'static str,
        code: Code,
        message: String,
    },
    #[error("document {name} is malformed: {why}")]
    Malformed { name: String, why: String },
    #[error("{0} kept conflicting with concurrent appenders; gave up")]
    Contention(String),
}

impl From<FirestoreError> for Error {
    fn from(e: FirestoreError) -> Self {
        Error::backend(BACKEND, e)
    }
}

pub(super) fn rpc(op: &'static str, status: Status) -> Error {
    FirestoreError::Rpc {
        op,
        code: status.code(),
        message: status.message().to_owned(),
    }
    .into()
}

fn malformed(name: &str, why: impl fmt::Display) -> Error {
    FirestoreError::Malformed {
        name: name.to_owned(),
        why: why.to_string(),
    }
    .into()
}

/// Job records and logs of one store (one collection prefix) in one database.
pub(super) struct Records {
    db: FirestoreDb,
    /// `projects/<p>/databases/<d>`.
    database: String,
    /// `projects/<p>/databases/<d>/documents`.
    documents: String,
    prefix: String,
    /// Successful commits, the documents they wrote, and their encoded request bytes.
    written_commits: AtomicU64,
    written_documents: AtomicU64,
    written_bytes: AtomicU64,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("database", &self.database)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The token sent to an emulator, which checks none.
struct EmulatorToken;

#[async_trait::async_trait]
impl gcloud_sdk::Source for EmulatorToken {
    async fn token(&self) -> gcloud_sdk::error::Result<gcloud_sdk::Token> {
        Ok(gcloud_sdk::Token::new(
            "Bearer".into(),
            "owner".to_string().into(),
            firestore::jiff::Timestamp::MAX,
        ))
    }
}

/// A document as read: its fields and update time.
struct Doc {
    name: String,
    fields: HashMap<String, Value>,
    update_time: Option<Timestamp>,
}

impl Doc {
    fn from_document(d: Document) -> Doc {
        Doc {
            name: d.name,
            fields: d.fields,
            update_time: d.update_time,
        }
    }

    fn string(&self, field: &str) -> Result<&str> {
        match self.fields.get(field).and_then(|v| v.value_type.as_ref()) {
            Some(value::ValueType::StringValue(s)) => Ok(s),
            _ => Err(malformed(&self.name, format!("no string field {field}"))),
        }
    }

    fn integer(&self, field: &str) -> Result<u64> {
        match self.fields.get(field).and_then(|v| v.value_type.as_ref()) {
            Some(value::ValueType::IntegerValue(i)) if *i >= 0 => Ok(*i as u64),
            _ => Err(malformed(&self.name, format!("no integer field {field}"))),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(&self, field: &str) -> Result<T> {
        serde_json::from_str(self.string(field)?).map_err(|e| malformed(&self.name, e))
    }

    /// The update time, for an `update_time` precondition.
    fn version_stamp(&self) -> Result<Timestamp> {
        self.update_time
            .ok_or_else(|| malformed(&self.name, "no update time"))
    }
}

pub(crate) fn string(s: impl Into<String>) -> Value {
    Value {
        value_type: Some(value::ValueType::StringValue(s.into())),
    }
}

pub(crate) fn integer(i: u64) -> Value {
    Value {
        value_type: Some(value::ValueType::IntegerValue(i as i64)),
    }
}

fn json(v: &impl serde::Serialize) -> Value {
    string(serde_json::to_string(v).expect("records serialize"))
}

/// A write of the whole document `name` under `precondition`.
pub(crate) fn put(
    name: String,
    fields: HashMap<String, Value>,
    precondition: precondition::ConditionType,
) -> Write {
    Write {
        operation: Some(write::Operation::Update(Document {
            name,
            fields,
            ..Default::default()
        })),
        current_document: Some(Precondition {
            condition_type: Some(precondition),
        }),
        ..Default::default()
    }
}

pub(crate) fn create_only() -> precondition::ConditionType {
    precondition::ConditionType::Exists(false)
}

pub(crate) fn unchanged_since(stamp: Timestamp) -> precondition::ConditionType {
    precondition::ConditionType::UpdateTime(stamp)
}

fn job_fields(job: &JobRecord) -> HashMap<String, Value> {
    HashMap::from([
        ("record".to_owned(), json(job)),
        ("id".to_owned(), string(job.id.to_string())),
        ("status".to_owned(), string(job.status.as_str())),
        ("version".to_owned(), integer(job.version)),
    ])
}

/// A log entry as stored: its message cut to the store's cap (never above
/// [`MAX_MESSAGE_BYTES`], which keeps a record well inside a Firestore document).
fn storable(entry: &LogEntry, max: usize) -> std::borrow::Cow<'_, LogEntry> {
    crate::state::cap_log_entry(entry, max.min(MAX_MESSAGE_BYTES))
}

/// A short pause before retrying a commit that lost to a concurrent one, growing with the
/// attempts and spread so that the losers do not collide again.
fn backoff(attempt: u32) -> Duration {
    let spread = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 1000)
        .unwrap_or(0) as u64;
    Duration::from_micros((200 * u64::from(attempt.min(20))) + spread * 5)
}

/// A new connection to the project's default database (or the emulator at `host:port`), and
/// the database's name `projects/<p>/databases/<d>`.
pub(crate) async fn open(project: &str, emulator: Option<&str>) -> Result<(FirestoreDb, String)> {
    let mut options = FirestoreDbOptions::new(project.to_owned());
    let token_source = match emulator {
        Some(host) => {
            options = options.with_firebase_api_url(format!("http://{host}"));
            gcloud_sdk::TokenSourceType::ExternalSource(Box::new(EmulatorToken))
        }
        None => gcloud_sdk::TokenSourceType::Default,
    };
    let database = format!("projects/{project}/databases/{}", options.database_id);
    let db = FirestoreDb::with_options_token_source(
        options,
        gcloud_sdk::GCP_DEFAULT_SCOPES.clone(),
        token_source,
    )
    .await
    .map_err(FirestoreError::Connect)?;
    Ok((db, database))
}

impl Records {
    pub(super) async fn connect(
        project: &str,
        prefix: &str,
        emulator: Option<&str>,
    ) -> Result<Self> {
        let (db, database) = open(project, emulator).await?;
        Ok(Records {
            db,
            documents: format!("{database}/documents"),
            database,
            prefix: prefix.to_owned(),
            written_commits: AtomicU64::new(0),
            written_documents: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
        })
    }

    /// Commits, documents and request bytes written so far by this instance.
    pub(super) fn written(&self) -> (u64, u64, u64) {
        (
            self.written_commits.load(Ordering::Relaxed),
            self.written_documents.load(Ordering::Relaxed),
            self.written_bytes.load(Ordering::Relaxed),
        )
    }

    /// The name of the job's record document.
    pub(super) fn job_doc(&self, id: JobId) -> String {
        format!("{}/{}jobs/{id}", self.documents, self.prefix)
    }

    /// The name of the job's log head document (rewritten by every append).
    pub(super) fn head_doc(&self, id: JobId) -> String {
        format!("{}/{}log_heads/{id}", self.documents, self.prefix)
    }

    fn log_doc(&self, id: JobId, seq: u64) -> String {
        format!("{}/{}jobs/{id}/logs/{seq:020}", self.documents, self.prefix)
    }

    /// Commits `writes` atomically.
    async fn commit(&self, writes: Vec<Write>) -> std::result::Result<(), Status> {
        let request = CommitRequest {
            database: self.database.clone(),
            writes,
            ..Default::default()
        };
        let (documents, bytes) = (request.writes.len() as u64, request.encoded_len() as u64);
        self.db.client().get().commit(request).await?;
        self.written_commits.fetch_add(1, Ordering::Relaxed);
        self.written_documents
            .fetch_add(documents, Ordering::Relaxed);
        self.written_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// The documents `names` that exist, by name.
    async fn get(&self, names: Vec<String>) -> Result<HashMap<String, Doc>> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let mut stream = self
            .db
            .client()
            .get()
            .batch_get_documents(BatchGetDocumentsRequest {
                database: self.database.clone(),
                documents: names,
                ..Default::default()
            })
            .await
            .map_err(|s| rpc("BatchGetDocuments", s))?
            .into_inner();
        let mut found = HashMap::new();
        while let Some(response) = stream
            .try_next()
            .await
            .map_err(|s| rpc("BatchGetDocuments", s))?
        {
            if let Some(batch_get_documents_response::Result::Found(doc)) = response.result {
                let doc = Doc::from_document(doc);
                found.insert(doc.name.clone(), doc);
            }
        }
        Ok(found)
    }

    async fn get_one(&self, name: String) -> Result<Option<Doc>> {
        Ok(self.get(vec![name.clone()]).await?.remove(&name))
    }

    pub(super) async fn create_job(&self, job: &JobRecord) -> Result<JobRecord> {
        let record = JobRecord {
            version: 1,
            ..job.clone()
        };
        let head = HashMap::from([("count".to_owned(), integer(0))]);
        let writes = vec![
            put(self.job_doc(job.id), job_fields(&record), create_only()),
            put(self.head_doc(job.id), head, create_only()),
        ];
        match self.commit(writes).await {
            Ok(()) => Ok(record),
            Err(s) if s.code() == Code::AlreadyExists => {
                Err(Error::already_exists(format!("job {}", job.id)))
            }
            Err(s) => Err(rpc("Commit", s)),
        }
    }

    /// The job's record and the update time of its document.
    pub(super) async fn get_job(&self, id: JobId) -> Result<(JobRecord, Timestamp)> {
        let doc = self
            .get_one(self.job_doc(id))
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        Ok((doc.json("record")?, doc.version_stamp()?))
    }

    /// NotFound unless the job has a record.
    pub(super) async fn check_job(&self, id: JobId) -> Result<()> {
        self.get_job(id).await.map(|_| ())
    }

    pub(super) async fn update_job(&self, job: &JobRecord) -> Result<JobRecord> {
        let (stored, stamp) = self.get_job(job.id).await?;
        let stale = || {
            Error::precondition(format!(
                "job {} has changed since version {}",
                job.id, job.version
            ))
        };
        if stored.version != job.version {
            return Err(stale());
        }
        let record = JobRecord {
            version: job.version + 1,
            ..job.clone()
        };
        let write = put(
            self.job_doc(job.id),
            job_fields(&record),
            unchanged_since(stamp),
        );
        match self.commit(vec![write]).await {
            Ok(()) => Ok(record),
            // A write between our read and our commit: that writer won.
            Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::Aborted) => Err(stale()),
            Err(s) => Err(rpc("Commit", s)),
        }
    }

    pub(super) async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage> {
        use structured_query::{
            composite_filter, field_filter, filter, CollectionSelector, CompositeFilter, Direction,
            FieldFilter, FieldReference, Filter, Order,
        };
        let limit = query.limit.max(1);
        let field = |path: &str| {
            Some(FieldReference {
                field_path: path.to_owned(),
            })
        };
        let compare = |path: &str, op: field_filter::Operator, value: Value| Filter {
            filter_type: Some(filter::FilterType::FieldFilter(FieldFilter {
                field: field(path),
                op: op as i32,
                value: Some(value),
            })),
        };
        let mut filters = Vec::new();
        if let Some(status) = query.status {
            filters.push(compare(
                "status",
                field_filter::Operator::Equal,
                string(status.as_str()),
            ));
        }
        if let Some(before) = query.before {
            filters.push(compare(
                "id",
                field_filter::Operator::LessThan,
                string(before.to_string()),
            ));
        }
        let filter = match filters.len() {
            0 => None,
            1 => filters.pop(),
            _ => Some(Filter {
                filter_type: Some(filter::FilterType::CompositeFilter(CompositeFilter {
                    op: composite_filter::Operator::And as i32,
                    filters,
                })),
            }),
        };
        let structured = StructuredQuery {
            from: vec![CollectionSelector {
                collection_id: format!("{}jobs", self.prefix),
                all_descendants: false,
            }],
            r#where: filter,
            order_by: vec![Order {
                field: field("id"),
                direction: Direction::Descending as i32,
            }],
            limit: Some(i32::try_from(limit + 1).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        let jobs = self
            .query(self.documents.clone(), structured)
            .await?
            .into_iter()
            .map(|doc| Doc::from_document(doc).json::<JobRecord>("record"))
            .collect::<Result<Vec<_>>>()?;
        Ok(page(jobs.into_iter(), limit))
    }

    /// The log head: how many records the job has, and the head's update time.
    async fn log_head(&self, id: JobId) -> Result<(u64, Timestamp)> {
        let doc = self
            .get_one(self.head_doc(id))
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        Ok((doc.integer("count")?, doc.version_stamp()?))
    }

    pub(super) async fn append_logs(
        &self,
        id: JobId,
        entries: &[LogEntry],
        max_record_bytes: usize,
    ) -> Result<u64> {
        let stored: Vec<String> = entries
            .iter()
            .map(|e| {
                serde_json::to_string(&*storable(e, max_record_bytes))
                    .expect("log entries serialize")
            })
            .collect();
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            let (count, stamp) = self.log_head(id).await?;
            if entries.is_empty() {
                return Ok(count);
            }
            let last = count + entries.len() as u64;
            let mut writes = Vec::with_capacity(entries.len() + 1);
            writes.push(put(
                self.head_doc(id),
                HashMap::from([("count".to_owned(), integer(last))]),
                unchanged_since(stamp),
            ));
            for (seq, entry) in (count + 1..).zip(&stored) {
                writes.push(put(
                    self.log_doc(id, seq),
                    HashMap::from([("entry".to_owned(), string(entry.as_str()))]),
                    create_only(),
                ));
            }
            match self.commit(writes).await {
                Ok(()) => return Ok(last),
                // Another appender committed first: read the new head and try again.
                Err(s)
                    if matches!(
                        s.code(),
                        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted
                    ) =>
                {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(s) => return Err(rpc("Commit", s)),
            }
        }
        Err(FirestoreError::Contention(format!("appending to the log of job {id}")).into())
    }

    pub(super) async fn read_logs(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>> {
        let (count, _) = self.log_head(id).await?;
        let last = count.min(after.saturating_add(limit as u64));
        if after >= last {
            return Ok(Vec::new());
        }
        let names: Vec<String> = (after + 1..=last).map(|s| self.log_doc(id, s)).collect();
        let mut docs = self.get(names.clone()).await?;
        let mut records = Vec::with_capacity(names.len());
        for (seq, name) in (after + 1..).zip(names) {
            // Records up to the head's count are committed with it, so each one is there.
            let doc = docs
                .remove(&name)
                .ok_or_else(|| malformed(&name, "a log record below the log head is missing"))?;
            records.push(LogRecord {
                seq,
                entry: doc.json("entry")?,
            });
        }
        Ok(records)
    }

    /// Deletes the job's record and log head in one commit (the job is gone at once), then its
    /// log records; `false` when it had no record. A delete cut short leaves log records that
    /// no read reaches, which the next delete of the job removes.
    pub(super) async fn delete_job(&self, id: JobId) -> Result<bool> {
        let had_record = self.get_one(self.job_doc(id)).await?.is_some();
        let writes = vec![delete(self.job_doc(id)), delete(self.head_doc(id))];
        self.commit(writes).await.map_err(|s| rpc("Commit", s))?;
        loop {
            let names = self.log_doc_names(id, MAX_DELETES_PER_COMMIT).await?;
            if names.is_empty() {
                return Ok(had_record);
            }
            let writes = names.into_iter().map(delete).collect();
            self.commit(writes).await.map_err(|s| rpc("Commit", s))?;
        }
    }

    /// The names of up to `limit` log record documents of the job (whether or not it still
    /// has a record).
    async fn log_doc_names(&self, id: JobId, limit: usize) -> Result<Vec<String>> {
        use structured_query::{CollectionSelector, FieldReference, Projection};
        let structured = StructuredQuery {
            select: Some(Projection {
                fields: vec![FieldReference {
                    field_path: "__name__".to_owned(),
                }],
            }),
            from: vec![CollectionSelector {
                collection_id: "logs".to_owned(),
                all_descendants: false,
            }],
            limit: Some(i32::try_from(limit).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        let docs = self.query(self.job_doc(id), structured).await?;
        Ok(docs.into_iter().map(|doc| doc.name).collect())
    }

    /// The documents a structured query under `parent` finds, in its order.
    async fn query(&self, parent: String, structured: StructuredQuery) -> Result<Vec<Document>> {
        let mut stream = self
            .db
            .client()
            .get()
            .run_query(RunQueryRequest {
                parent,
                query_type: Some(run_query_request::QueryType::StructuredQuery(structured)),
                ..Default::default()
            })
            .await
            .map_err(|s| rpc("RunQuery", s))?
            .into_inner();
        let mut docs = Vec::new();
        while let Some(response) = stream.try_next().await.map_err(|s| rpc("RunQuery", s))? {
            docs.extend(response.document);
        }
        Ok(docs)
    }
}

/// Firestore takes at most 500 writes in one commit.
const MAX_DELETES_PER_COMMIT: usize = 500;

/// A write that deletes the document `name` (a no-op if there is none).
fn delete(name: String) -> Write {
    Write {
        operation: Some(write::Operation::Delete(name)),
        ..Default::default()
    }
}
