//! Blobs and artifacts as Cloud Storage objects, through the JSON API (`gcloud-storage`).
//!
//! Object writes are atomic in Cloud Storage (a reader sees the old or the new object whole),
//! which is all blobs (content-addressed, so rewriting one writes the same bytes) and artifacts
//! (replaced whole) need: no generation preconditions are used.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::upload::{Media, UploadObjectRequest, UploadType};
use gcloud_storage::http::objects::Object;

use crate::blob::BlobHash;
use crate::job::JobId;
use crate::paths::RelPath;
use crate::{Error, Result};

const BACKEND: &str = "cloud storage";
/// Object lookups of one `missing_blobs` call in flight at once.
const CONCURRENT_LOOKUPS: usize = 16;

/// The private errors of the Cloud Storage side; callers see [`Error::Backend`].
#[derive(Debug, thiserror::Error)]
enum StorageError {
    #[error("looking up Google credentials: {0}")]
    Credentials(#[source] gcloud_storage::client::google_cloud_auth::error::Error),
    #[error("{op} gs://{bucket}/{object}: {source}")]
    Request {
        op: &'static str,
        bucket: String,
        object: String,
        #[source]
        source: gcloud_storage::http::Error,
    },
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::backend(BACKEND, e)
    }
}

fn is_not_found(e: &gcloud_storage::http::Error) -> bool {
    use gcloud_storage::http::Error as E;
    const NOT_FOUND: u16 = 404;
    match e {
        E::Response(r) => r.code == NOT_FOUND,
        // An error body that is not Google's JSON (the emulator's) comes as the HTTP status.
        E::HttpClient(e) | E::RawResponse(e, _) => {
            e.status().is_some_and(|s| s.as_u16() == NOT_FOUND)
        }
        _ => false,
    }
}

/// The objects of one store (one prefix) in one bucket.
pub(super) struct Objects {
    client: Client,
    bucket: String,
    prefix: String,
    /// Objects uploaded and their bytes.
    objects: AtomicU64,
    bytes: AtomicU64,
}

impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Objects")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Objects {
    pub(super) async fn connect(
        bucket: &str,
        prefix: &str,
        emulator: Option<&str>,
    ) -> Result<Self> {
        let config = match emulator {
            Some(host) => ClientConfig {
                storage_endpoint: format!("http://{host}"),
                ..Default::default()
            }
            .anonymous(),
            None => ClientConfig::default()
                .with_auth()
                .await
                .map_err(StorageError::Credentials)?,
        };
        Ok(Objects {
            client: Client::new(config),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            objects: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// Objects and bytes uploaded so far by this instance.
    pub(super) fn written(&self) -> (u64, u64) {
        (
            self.objects.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    pub(super) fn blob_name(&self, hash: &BlobHash) -> String {
        format!("{}blobs/{hash}", self.prefix)
    }

    /// The object of a cache entry: `<prefix>cache/<kind>/<hex>`.
    pub(super) fn cache_name(&self, key: &crate::state::CacheKey) -> String {
        format!("{}{}", self.prefix, key.path())
    }

    pub(super) fn artifact_prefix(&self, id: JobId) -> String {
        format!("{}jobs/{id}/artifacts/", self.prefix)
    }

    pub(super) fn artifact_name(&self, id: JobId, name: &RelPath) -> String {
        format!("{}{}", self.artifact_prefix(id), name.as_str())
    }

    fn error(&self, op: &'static str, object: &str, source: gcloud_storage::http::Error) -> Error {
        StorageError::Request {
            op,
            bucket: self.bucket.clone(),
            object: object.to_owned(),
            source,
        }
        .into()
    }

    /// Writes (or replaces) the object `name`.
    pub(super) async fn put(&self, name: &str, content: Bytes) -> Result<()> {
        let request = UploadObjectRequest {
            bucket: self.bucket.clone(),
            ..Default::default()
        };
        let size = content.len() as u64;
        let mut media = Media::new(name.to_owned());
        media.content_length = Some(size);
        self.client
            .upload_object(&request, content, &UploadType::Simple(media))
            .await
            .map_err(|e| self.error("uploading", name, e))?;
        self.objects.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    /// The object's content; `None` if there is no such object.
    pub(super) async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let request = GetObjectRequest {
            bucket: self.bucket.clone(),
            object: name.to_owned(),
            ..Default::default()
        };
        match self
            .client
            .download_object(&request, &Range::default())
            .await
        {
            Ok(content) => Ok(Some(Bytes::from(content))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.error("downloading", name, e)),
        }
    }

    /// The object's size; `None` if there is no such object.
    pub(super) async fn size(&self, name: &str) -> Result<Option<u64>> {
        let request = GetObjectRequest {
            bucket: self.bucket.clone(),
            object: name.to_owned(),
            ..Default::default()
        };
        match self.client.get_object(&request).await {
            Ok(object) => Ok(Some(object.size.max(0) as u64)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.error("looking up", name, e)),
        }
    }

    /// Whether each of `names` exists, in order.
    pub(super) async fn exist(&self, names: &[String]) -> Result<Vec<bool>> {
        let lookups: Vec<_> = names.iter().map(|name| self.exists(name)).collect();
        futures::stream::iter(lookups)
            .buffered(CONCURRENT_LOOKUPS)
            .try_collect()
            .await
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        let request = GetObjectRequest {
            bucket: self.bucket.clone(),
            object: name.to_owned(),
            ..Default::default()
        };
        match self.client.get_object(&request).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(self.error("looking up", name, e)),
        }
    }

    /// Every object whose name starts with `prefix`, all pages of the listing.
    async fn objects(&self, prefix: &str) -> Result<Vec<Object>> {
        let mut objects = Vec::new();
        let mut page_token = None;
        loop {
            let request = ListObjectsRequest {
                bucket: self.bucket.clone(),
                prefix: Some(prefix.to_owned()),
                page_token: page_token.take(),
                ..Default::default()
            };
            let page = self
                .client
                .list_objects(&request)
                .await
                .map_err(|e| self.error("listing", &format!("{prefix}*"), e))?;
            objects.extend(page.items.unwrap_or_default());
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(token) => page_token = Some(token),
                None => return Ok(objects),
            }
        }
    }

    /// Every object whose name starts with `prefix`: name and size.
    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let objects = self.objects(prefix).await?;
        Ok(objects
            .into_iter()
            .map(|o| (o.name, o.size.max(0) as u64))
            .collect())
    }

    /// The prefix of every blob's object name.
    pub(super) fn blob_prefix(&self) -> String {
        format!("{}blobs/", self.prefix)
    }

    /// Every object whose name starts with `prefix`: name and last update time.
    pub(super) async fn list_updated(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>> {
        let objects = self.objects(prefix).await?;
        Ok(objects
            .into_iter()
            .map(|o| {
                let nanos = o
                    .updated
                    .or(o.time_created)
                    .map(|t| t.unix_timestamp_nanos());
                let at = nanos
                    .and_then(|n| i64::try_from(n).ok())
                    .map(chrono::DateTime::from_timestamp_nanos)
                    // No time given: treat it as new, so that it is kept.
                    .unwrap_or_else(chrono::Utc::now);
                (o.name, at)
            })
            .collect())
    }

    /// Deletes the object `name`; `false` when there was none.
    pub(super) async fn delete(&self, name: &str) -> Result<bool> {
        let request = DeleteObjectRequest {
            bucket: self.bucket.clone(),
            object: name.to_owned(),
            ..Default::default()
        };
        match self.client.delete_object(&request).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(self.error("deleting", name, e)),
        }
    }

    /// Deletes every object whose name starts with `prefix`.
    pub(super) async fn delete_all(&self, prefix: &str) -> Result<()> {
        for (name, _) in self.list(prefix).await? {
            self.delete(&name).await?;
        }
        Ok(())
    }
}
