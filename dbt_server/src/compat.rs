//! The routes of the 0.4.6 protocol (the original dbt-remote CLI), over the core's
//! [`LegacyService`]: multipart forms in, `{"detail": …}` errors out. docs/compat.md describes
//! them.

use std::convert::Infallible;

use bytes::Bytes;
use dbt_remote_core::compat::{LegacyForm, LegacyPolicy, LegacyService, PROTOCOL_VERSION};
use dbt_remote_core::{Error, JobService};
use serde_json::json;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::Filter;

use crate::reply::{json_reply, legacy};
use crate::request::{job_id, limited_body};
use crate::routes::Config;

type Answer = Result<Response, Error>;

/// The base URL of links: the configured public URL, else the Host the client reached.
#[derive(Debug, Clone)]
struct Links {
    public_url: Option<String>,
    port: u16,
}

impl Links {
    fn base(&self, host: Option<String>) -> String {
        let base = match (&self.public_url, host) {
            (Some(url), _) => url.clone(),
            (None, Some(host)) => format!("http://{host}"),
            (None, None) => format!("http://127.0.0.1:{}", self.port),
        };
        format!("{}/", base.trim_end_matches('/'))
    }
}

/// Most fields a 0.4.6 form may have (the 0.4.6 CLI sends at most 9). Each field is bounded by
/// the body, which is bounded by `--max-upload-bytes`.
const MAX_FORM_FIELDS: usize = 32;

/// Reads a multipart/form-data body (already read whole, within the upload limit) into a
/// form: at most [`MAX_FORM_FIELDS`] fields, each given once.
async fn read_form(
    body: Result<Bytes, Error>,
    content_type: Option<String>,
) -> Result<LegacyForm, Error> {
    let body = body?;
    let boundary = content_type
        .as_deref()
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| Error::invalid("expected a multipart/form-data body with a boundary"))?;
    let stream = futures::stream::once(async move { Ok::<_, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut form = LegacyForm::default();
    let malformed = |e: multer::Error| Error::invalid(format!("malformed multipart form: {e}"));
    let mut fields = 0;
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        fields += 1;
        if fields > MAX_FORM_FIELDS {
            return Err(Error::TooMany {
                what: "fields in the form".into(),
                count: fields as u64,
                limit: MAX_FORM_FIELDS as u64,
            });
        }
        let name = field.name().unwrap_or_default().to_string();
        let value = field.bytes().await.map_err(malformed)?;
        form.set(&name, value)?;
    }
    Ok(form)
}

/// Every route of the 0.4.6 protocol.
pub(crate) fn routes(service: JobService, config: &Config) -> BoxedFilter<(Response,)> {
    use warp::path::{end, param};
    use warp::{delete, get, path, post};

    let policy = LegacyPolicy {
        accept_client_profiles: config.accept_client_profiles,
        zip: service.limits().zip,
    };
    let service = LegacyService::new(service, policy);
    let svc = warp::any().map(move || service.clone());
    let links = Links {
        public_url: config.public_url.clone(),
        port: config.port,
    };
    let links = warp::any()
        .map(move || links.clone())
        .and(warp::header::optional::<String>("host"))
        .map(|links: Links, host| links.base(host));
    let form = limited_body(config.body_limits())
        .and(warp::header::optional::<String>("content-type"))
        .then(read_form);
    let job = || path("job").and(param::<String>());

    let version = path("version")
        .and(end())
        .and(get())
        .map(|| json_reply(&json!({ "version": PROTOCOL_VERSION }), StatusCode::OK));
    let submit = path("dbt")
        .and(end())
        .and(post())
        .and(svc.clone())
        .and(links.clone())
        .and(form.clone())
        .then(submit)
        .map(legacy);
    let status = job()
        .and(end())
        .and(get())
        .and(svc.clone())
        .then(status)
        .map(legacy);
    let logs = job()
        .and(path("logs"))
        .and(end())
        .and(get())
        .and(svc.clone())
        .then(logs)
        .map(legacy);
    let last_logs = job()
        .and(path("last_logs"))
        .and(end())
        .and(get())
        .and(svc.clone())
        .then(last_logs)
        .map(legacy);
    let schedule = path("schedule").and(end()).and(
        post()
            .and(svc.clone())
            .and(links.clone())
            .and(form)
            .then(create_schedule)
            .map(legacy)
            .or(get()
                .and(svc.clone())
                .and(links)
                .then(list_schedules)
                .map(legacy))
            .unify(),
    );
    let delete_schedule = path("schedule")
        .and(param::<String>())
        .and(end())
        .and(delete())
        .and(svc.clone())
        .then(delete_schedule)
        .map(legacy);
    let start = path("schedule")
        .and(param::<String>())
        .and(path("start"))
        .and(end())
        .and(post())
        .and(svc)
        .then(start_schedule)
        .map(legacy);

    version
        .or(submit)
        .unify()
        .or(status)
        .unify()
        .or(logs)
        .unify()
        .or(last_logs)
        .unify()
        .or(schedule)
        .unify()
        .or(delete_schedule)
        .unify()
        .or(start)
        .unify()
        .boxed()
}

async fn submit(svc: LegacyService, base: String, form: Result<LegacyForm, Error>) -> Answer {
    let id = svc.submit(&form?).await?.id;
    let answer = json!({
        "uuid": id,
        "message": format!("Job created with uuid: {id}"),
        "links": {
            "run_status": format!("{base}job/{id}"),
            "last_logs": format!("{base}job/{id}/last_logs"),
        }
    });
    Ok(json_reply(&answer, StatusCode::ACCEPTED))
}

async fn status(id: String, svc: LegacyService) -> Answer {
    let status = svc.status(job_id(&id)?).await?;
    Ok(json_reply(&json!({ "run_status": status }), StatusCode::OK))
}

/// Every line, streamed: the body is sent as the log is read, a page at a time.
async fn logs(id: String, svc: LegacyService) -> Answer {
    let body = svc.logs(job_id(&id)?).await?;
    let reply = warp::reply::stream(sync_stream(body));
    Ok(warp::reply::with_header(reply, "content-type", "application/json").into_response())
}

/// `stream` driven in a task, as warp wants a `Sync` body: a channel of two chunks, so the
/// reader waits for the client (bounded memory), and stops when the client leaves.
fn sync_stream(
    stream: impl futures::Stream<Item = Result<Bytes, Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<Bytes, Error>> + Send + Sync + 'static {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            if let Err(e) = &chunk {
                tracing::error!("0.4.6 log body failed: {e}");
            }
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn last_logs(id: String, svc: LegacyService) -> Answer {
    Ok(json_reply(
        &svc.last_logs(job_id(&id)?).await?,
        StatusCode::OK,
    ))
}

async fn create_schedule(
    svc: LegacyService,
    base: String,
    form: Result<LegacyForm, Error>,
) -> Answer {
    let s = svc.create_schedule(&form?).await?;
    let answer = json!({
        "uuid": s.id,
        "message": format!(
            "Job {} scheduled at {} ({}) with uuid: {}",
            s.command, s.cron, s.describe(), s.id
        ),
        "links": { "start": format!("{base}schedule/{}/start", s.id) },
    });
    Ok(json_reply(&answer, StatusCode::CREATED))
}

async fn list_schedules(svc: LegacyService, base: String) -> Answer {
    let schedules: serde_json::Map<String, serde_json::Value> = svc
        .schedules()
        .await?
        .into_iter()
        .map(|s| {
            let entry = json!({
                "name": s.name,
                "command": s.command,
                "schedule": s.cron,
                "timezone": "UTC",
                "target": format!("{base}schedule/{}/start", s.id),
            });
            (s.name, entry)
        })
        .collect();
    Ok(json_reply(
        &json!({ "schedules": schedules }),
        StatusCode::OK,
    ))
}

async fn delete_schedule(name: String, svc: LegacyService) -> Answer {
    // As the original: deleting what is not there is not an error.
    let message = if svc.delete_schedule(&name).await? {
        format!("Schedule {name} deleted")
    } else {
        format!("Nothing to delete, schedule {name} does not exist")
    };
    Ok(json_reply(&json!({ "message": message }), StatusCode::OK))
}

async fn start_schedule(id: String, svc: LegacyService) -> Answer {
    let id: Uuid = id
        .parse()
        .map_err(|_| Error::not_found(format!("schedule {id:?}")))?;
    let job = svc.start_schedule(id).await?;
    let answer = json!({
        "uuid": job.id,
        "message": format!("Job created with uuid: {}", job.id),
    });
    Ok(json_reply(&answer, StatusCode::OK))
}
