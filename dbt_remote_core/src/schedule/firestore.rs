//! Schedules in Firestore (feature `gcp`), beside the GCP state store's collections: one
//! document `<prefix>schedules/<name>` per schedule, with the same project, collection prefix
//! and emulator settings as the store ([`crate::state::GcpStore`]).
//!
//! - `create_schedule` commits with an `exists: false` precondition.
//! - `put_schedule` reads the document, checks its `version` and commits the new one with an
//!   `update_time` precondition: a write in between makes the commit fail, so of two puts of
//!   one version exactly one wins, across any number of server instances.
//! - Only the RPCs `Commit`, `BatchGetDocuments` and `RunQuery` are used.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use firestore::FirestoreDb;
use futures::TryStreamExt;
use gcloud_sdk::google::firestore::v1::{
    batch_get_documents_response, run_query_request, structured_query, value, write,
    BatchGetDocumentsRequest, CommitRequest, Document, RunQueryRequest, StructuredQuery, Value,
    Write,
};
use gcloud_sdk::prost_types::Timestamp;
use gcloud_sdk::tonic::{Code, Status};

use super::{check_name, stale, Schedule, ScheduleStore};
use crate::env;
use crate::state::gcp::firestore::{create_only, integer, open, put, string, unchanged_since};
use crate::{Error, Result};

const BACKEND: &str = "firestore schedules";

/// Schedules in Firestore; made by [`FirestoreSchedules::builder`].
pub struct FirestoreSchedules {
    db: FirestoreDb,
    /// `projects/<p>/databases/<d>`.
    database: String,
    /// `projects/<p>/databases/<d>/documents`.
    documents: String,
    prefix: String,
}

impl fmt::Debug for FirestoreSchedules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirestoreSchedules")
            .field("database", &self.database)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Configures [`FirestoreSchedules`]; checked in [`build`](Self::build).
#[derive(Debug, Clone, Default)]
pub struct FirestoreSchedulesBuilder {
    project: Option<String>,
    collection_prefix: Option<String>,
    emulator: Option<String>,
}

impl FirestoreSchedulesBuilder {
    /// The GCP store's variables: `DBT_REMOTE_GCP_PROJECT` (else `GOOGLE_CLOUD_PROJECT`),
    /// `DBT_REMOTE_COLLECTION_PREFIX`, `FIRESTORE_EMULATOR_HOST`.
    pub fn from_env(mut self) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        self.project = var(env::GCP_PROJECT)
            .or_else(|| var(env::GOOGLE_CLOUD_PROJECT))
            .or(self.project);
        self.collection_prefix = var(env::COLLECTION_PREFIX).or(self.collection_prefix);
        self.emulator = var(env::FIRESTORE_EMULATOR_HOST).or(self.emulator);
        self
    }

    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// The GCP store's collection prefix (letters, digits, `_`, `-`).
    pub fn with_collection_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.collection_prefix = Some(prefix.into());
        self
    }

    /// Talk to the Firestore emulator at `host:port`, without credentials.
    pub fn with_emulator(mut self, host: impl Into<String>) -> Self {
        self.emulator = Some(host.into());
        self
    }

    /// Checks the settings and connects (no request is made).
    pub async fn build(self) -> Result<FirestoreSchedules> {
        let project = self.project.filter(|p| !p.is_empty()).ok_or_else(|| {
            Error::invalid(format!(
                "schedules in Firestore need a project: set {} (or {})",
                env::GCP_PROJECT,
                env::GOOGLE_CLOUD_PROJECT
            ))
        })?;
        let prefix = self.collection_prefix.unwrap_or_default();
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::invalid(format!(
                "invalid {} {prefix:?}: use letters, digits, '_' and '-' only",
                env::COLLECTION_PREFIX
            )));
        }
        let (db, database) = open(&project, self.emulator.as_deref()).await?;
        Ok(FirestoreSchedules {
            db,
            documents: format!("{database}/documents"),
            database,
            prefix,
        })
    }
}

fn rpc(op: &str, status: &Status) -> Error {
    Error::backend(
        BACKEND,
        format!("{op} failed: {:?}: {}", status.code(), status.message()),
    )
}

/// The fields of a schedule's document: the schedule as JSON, and its name and version.
fn fields(schedule: &Schedule) -> Result<HashMap<String, Value>> {
    let json = serde_json::to_string(schedule).map_err(|e| Error::backend(BACKEND, e))?;
    Ok(HashMap::from([
        ("schedule".to_owned(), string(json)),
        ("name".to_owned(), string(schedule.name.clone())),
        ("version".to_owned(), integer(schedule.version)),
    ]))
}

/// The schedule in a document, and the document's update time.
fn read(doc: &Document) -> Result<(Schedule, Option<Timestamp>)> {
    let json = match doc
        .fields
        .get("schedule")
        .and_then(|v| v.value_type.as_ref())
    {
        Some(value::ValueType::StringValue(s)) => s,
        _ => {
            return Err(Error::backend(
                BACKEND,
                format!("document {} has no schedule", doc.name),
            ))
        }
    };
    let schedule = serde_json::from_str(json)
        .map_err(|e| Error::backend(BACKEND, format!("document {}: {e}", doc.name)))?;
    Ok((schedule, doc.update_time))
}

impl FirestoreSchedules {
    pub fn builder() -> FirestoreSchedulesBuilder {
        FirestoreSchedulesBuilder::default()
    }

    fn doc(&self, name: &str) -> Result<String> {
        check_name(name)?;
        Ok(format!(
            "{}/{}schedules/{name}",
            self.documents, self.prefix
        ))
    }

    async fn commit(&self, writes: Vec<Write>) -> std::result::Result<(), Status> {
        let request = CommitRequest {
            database: self.database.clone(),
            writes,
            ..Default::default()
        };
        self.db.client().get().commit(request).await.map(|_| ())
    }

    /// The document `name`, if it exists.
    async fn get(&self, name: String) -> Result<Option<Document>> {
        let mut stream = self
            .db
            .client()
            .get()
            .batch_get_documents(BatchGetDocumentsRequest {
                database: self.database.clone(),
                documents: vec![name],
                ..Default::default()
            })
            .await
            .map_err(|s| rpc("BatchGetDocuments", &s))?
            .into_inner();
        while let Some(response) = stream
            .try_next()
            .await
            .map_err(|s| rpc("BatchGetDocuments", &s))?
        {
            if let Some(batch_get_documents_response::Result::Found(doc)) = response.result {
                return Ok(Some(doc));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl ScheduleStore for FirestoreSchedules {
    async fn create_schedule(&self, schedule: &Schedule) -> Result<()> {
        let stored = Schedule {
            version: 1,
            ..schedule.clone()
        };
        let write = put(self.doc(&schedule.name)?, fields(&stored)?, create_only());
        match self.commit(vec![write]).await {
            Ok(()) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                Err(Error::already_exists(format!("schedule {}", schedule.name)))
            }
            Err(s) => Err(rpc("Commit", &s)),
        }
    }

    async fn get_schedule(&self, name: &str) -> Result<Schedule> {
        let doc = self.get(self.doc(name)?).await?;
        let doc = doc.ok_or_else(|| Error::not_found(format!("schedule {name}")))?;
        Ok(read(&doc)?.0)
    }

    async fn put_schedule(&self, schedule: &Schedule) -> Result<Schedule> {
        let name = self.doc(&schedule.name)?;
        let doc = self.get(name.clone()).await?;
        let doc = doc.ok_or_else(|| Error::not_found(format!("schedule {}", schedule.name)))?;
        let (current, stamp) = read(&doc)?;
        let stamp =
            stamp.ok_or_else(|| Error::backend(BACKEND, "a document without update time"))?;
        if current.version != schedule.version {
            return Err(stale(schedule));
        }
        let stored = Schedule {
            version: schedule.version + 1,
            ..schedule.clone()
        };
        let write = put(name, fields(&stored)?, unchanged_since(stamp));
        match self.commit(vec![write]).await {
            Ok(()) => Ok(stored),
            // A write between our read and our commit: that writer won (or deleted it).
            Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::Aborted) => {
                Err(stale(schedule))
            }
            Err(s) => Err(rpc("Commit", &s)),
        }
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        let structured = StructuredQuery {
            from: vec![structured_query::CollectionSelector {
                collection_id: format!("{}schedules", self.prefix),
                all_descendants: false,
            }],
            ..Default::default()
        };
        let mut stream = self
            .db
            .client()
            .get()
            .run_query(RunQueryRequest {
                parent: self.documents.clone(),
                query_type: Some(run_query_request::QueryType::StructuredQuery(structured)),
                ..Default::default()
            })
            .await
            .map_err(|s| rpc("RunQuery", &s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(response) = stream.try_next().await.map_err(|s| rpc("RunQuery", &s))? {
            let Some(doc) = response.document else {
                continue;
            };
            // A damaged document breaks its schedule only: the others are listed (and fired).
            match read(&doc) {
                Ok((schedule, _)) => out.push(schedule),
                Err(e) => tracing::warn!("skipping a damaged schedule: {e}"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool> {
        let doc = self.doc(name)?;
        let existed = self.get(doc.clone()).await?.is_some();
        let write = Write {
            operation: Some(write::Operation::Delete(doc)),
            ..Default::default()
        };
        self.commit(vec![write])
            .await
            .map_err(|s| rpc("Commit", &s))?;
        Ok(existed)
    }
}
