//! The body of the 0.4.6 `GET /job/{uuid}/logs`, `{"run_logs": [every line], "run_status",
//! "uuid"}`, written page by page as it is sent: however long the log, the server holds one
//! page of records at a time (and the HTTP layer a few chunks), never the whole log.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use super::{legacy_status, push_legacy_lines};
use crate::job::{JobId, JobStatus};
use crate::state::StateStore;
use crate::Result;

/// Records read from the store per chunk of the body.
pub const LOG_BODY_PAGE: usize = 1000;

/// Where the body is.
enum Part {
    /// Nothing sent yet.
    Start,
    /// The lines of the records after `after` come next; `first` until a line is sent.
    Lines { after: u64, first: bool },
    /// Everything sent.
    Done,
}

/// The JSON body of every line of job `id`'s log with `status` (read before the records, so
/// the records read after a final status are the last ones), in chunks of at most
/// [`LOG_BODY_PAGE`] records. A store error ends the stream with that error (the answer is
/// then cut short, never a valid-looking partial log).
pub fn legacy_logs_body(
    store: Arc<dyn StateStore>,
    id: JobId,
    status: JobStatus,
) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
    futures::stream::try_unfold(Part::Start, move |part| {
        let store = store.clone();
        async move {
            match part {
                Part::Start => Ok(Some((
                    Bytes::from_static(b"{\"run_logs\":["),
                    Part::Lines {
                        after: 0,
                        first: true,
                    },
                ))),
                Part::Lines { after, first } => {
                    let records = store.read_logs(id, after, LOG_BODY_PAGE).await?;
                    let Some(last) = records.last().map(|r| r.seq) else {
                        return Ok(Some((tail(id, status), Part::Done)));
                    };
                    let mut lines = Vec::new();
                    records
                        .iter()
                        .for_each(|r| push_legacy_lines(r, &mut lines));
                    let chunk = json_items(&lines, first);
                    let first = first && lines.is_empty();
                    Ok(Some((chunk, Part::Lines { after: last, first })))
                }
                Part::Done => Ok(None),
            }
        }
    })
}

/// `lines` as JSON array items, with a leading comma unless they are the array's first.
fn json_items(lines: &[String], first: bool) -> Bytes {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 || !first {
            out.push(b',');
        }
        // A string always serialises.
        if let Ok(json) = serde_json::to_vec(line) {
            out.extend_from_slice(&json);
        }
    }
    Bytes::from(out)
}

/// The end of the body: the status word and the uuid.
fn tail(id: JobId, status: JobStatus) -> Bytes {
    let status = serde_json::Value::from(legacy_status(status));
    Bytes::from(format!("],\"run_status\":{status},\"uuid\":\"{id}\"}}"))
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;
    use crate::compat::LegacyLogs;
    use crate::job::{JobRecord, JobSpec};
    use crate::log::{LogEntry, LogLevel};
    use crate::state::MemoryStore;

    #[tokio::test]
    async fn the_body_is_the_whole_answer_in_pages() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let job = store
            .create_job(&JobRecord::new(JobSpec::default()))
            .await
            .unwrap();
        let entries: Vec<LogEntry> = (0..2500)
            .map(|i| LogEntry::remote(LogLevel::Info, format!("line \"{i}\"\nsecond")))
            .collect();
        store.append_logs(job.id, &entries).await.unwrap();
        let chunks: Vec<Bytes> = legacy_logs_body(store.clone(), job.id, JobStatus::Succeeded)
            .try_collect()
            .await
            .unwrap();
        // Start, three pages, end.
        assert_eq!(chunks.len(), 5);
        let body: Vec<u8> = chunks.concat();
        let answer: LegacyLogs = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer.run_logs.len(), 5000);
        assert!(
            answer.run_logs[2].ends_with("\tline \"1\""),
            "{:?}",
            answer.run_logs[2]
        );
        assert_eq!(answer.run_status, "success");
        assert_eq!(answer.uuid, job.id.to_string());

        let empty = store
            .create_job(&JobRecord::new(JobSpec::default()))
            .await
            .unwrap();
        let body: Vec<Bytes> = legacy_logs_body(store, empty.id, JobStatus::Queued)
            .try_collect()
            .await
            .unwrap();
        let answer: LegacyLogs = serde_json::from_slice(&body.concat()).unwrap();
        assert!(answer.run_logs.is_empty());
        assert_eq!(answer.run_status, "pending");
    }
}
