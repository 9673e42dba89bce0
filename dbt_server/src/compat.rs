//! The routes of the 0.4.6 protocol (the original dbt-remote CLI), over the same
//! [`JobService`]: multipart forms in, `{"detail": …}` errors out. docs/compat.md describes them.

use std::convert::Infallible;

use bytes::Bytes;
use dbt_remote_core::compat::{LegacyForm, LegacyPolicy, PROTOCOL_VERSION};
use dbt_remote_core::{Error, JobService};
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::routes::{error_status, json_reply, limited_body, Config};

/// An error as the 0.4.6 CLI expects it: `{"detail": "<message>"}`.
pub(crate) fn detail_response(e: Error) -> Response {
    let status = error_status(&e);
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!("internal error: {e}");
        "internal server error; see the server log".to_string()
    } else {
        e.to_string()
    };
    json_reply(&json!({ "detail": message }), status)
}

fn respond(answer: Result<Response, Error>) -> Response {
    answer.unwrap_or_else(detail_response)
}

/// The base URL of links: the configured public URL, else the Host the client reached.
fn base_url(config: &Config, host: Option<String>) -> String {
    let base = match (&config.public_url, host) {
        (Some(url), _) => url.clone(),
        (None, Some(host)) => format!("http://{host}"),
        (None, None) => format!("http://127.0.0.1:{}", config.port),
    };
    format!("{}/", base.trim_end_matches('/'))
}

/// Reads a multipart/form-data body into a form.
async fn read_form(content_type: Option<String>, body: Bytes) -> Result<LegacyForm, Error> {
    let boundary = content_type
        .as_deref()
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| Error::invalid("expected a multipart/form-data body with a boundary"))?;
    let stream = futures::stream::once(async move { Ok::<_, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut form = LegacyForm::default();
    let malformed = |e: multer::Error| Error::invalid(format!("malformed multipart form: {e}"));
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_string();
        let value = field.bytes().await.map_err(malformed)?;
        form.set(&name, value)?;
    }
    Ok(form)
}

/// Every route of the 0.4.6 protocol.
pub fn routes(
    service: JobService,
    config: Config,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    use warp::path::{end, param};
    use warp::{delete, get, path, post};

    let svc = warp::any().map(move || service.clone());
    let cfg = {
        let config = config.clone();
        warp::any().map(move || config.clone())
    };
    let form =
        limited_body(config.max_upload_bytes)
            .and(warp::header::optional::<String>("content-type"))
            .then(
                |body: Result<Bytes, Error>, ct: Option<String>| async move {
                    read_form(ct, body?).await
                },
            );
    let host = warp::header::optional::<String>("host");
    let job = || path("job").and(param::<String>());

    let version = path("version")
        .and(end())
        .and(get())
        .map(|| json_reply(&json!({ "version": PROTOCOL_VERSION }), StatusCode::OK));

    let submit = path("dbt")
        .and(end())
        .and(post())
        .and(svc.clone())
        .and(cfg.clone())
        .and(host)
        .and(form.clone())
        .then(
            |svc: JobService, config: Config, host, form: Result<LegacyForm, Error>| async move {
                respond(
                    async {
                        let job = svc.submit_legacy(&form?, &config.legacy_policy()).await?;
                        let base = base_url(&config, host);
                        let id = job.id;
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
                    .await,
                )
            },
        );

    let status = job().and(end()).and(get()).and(svc.clone()).then(
        |id: String, svc: JobService| async move {
            respond(
                svc.legacy_status(&id)
                    .await
                    .map(|s| json_reply(&json!({ "run_status": s }), StatusCode::OK)),
            )
        },
    );
    let logs = job()
        .and(path("logs"))
        .and(end())
        .and(get())
        .and(svc.clone())
        .then(|id: String, svc: JobService| async move {
            respond(
                svc.legacy_logs(&id)
                    .await
                    .map(|l| json_reply(&l, StatusCode::OK)),
            )
        });
    let last_logs = job()
        .and(path("last_logs"))
        .and(end())
        .and(get())
        .and(svc.clone())
        .then(|id: String, svc: JobService| async move {
            respond(
                svc.legacy_last_logs(&id)
                    .await
                    .map(|l| json_reply(&l, StatusCode::OK)),
            )
        });

    let schedule = path("schedule").and(end()).and(
        post()
            .and(svc.clone())
            .and(cfg.clone())
            .and(host)
            .and(form)
            .then(
                |svc: JobService,
                 config: Config,
                 host,
                 form: Result<LegacyForm, Error>| async move {
                    respond(
                        async {
                            let form = form?;
                            let s = svc
                                .create_legacy_schedule(&form, &config.legacy_policy())
                                .await?;
                            let start = format!("{}schedule/{}/start", base_url(&config, host), s.id);
                            let answer = json!({
                                "uuid": s.id,
                                "message": format!(
                                    "Job {} scheduled at {} ({}) with uuid: {}",
                                    s.command, s.cron, s.describe(), s.id
                                ),
                                "links": { "start": start },
                            });
                            Ok(json_reply(&answer, StatusCode::CREATED))
                        }
                        .await,
                    )
                },
            )
            .or(get().and(svc.clone()).and(cfg.clone()).and(host).then(
                |svc: JobService, config: Config, host| async move {
                    respond(
                        async {
                            let base = base_url(&config, host);
                            let list = svc.schedules().list_schedules().await?;
                            let schedules: serde_json::Map<String, serde_json::Value> = list
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
                            Ok(json_reply(&json!({ "schedules": schedules }), StatusCode::OK))
                        }
                        .await,
                    )
                },
            ))
            .unify(),
    );
    let delete_schedule = path("schedule")
        .and(param::<String>())
        .and(end())
        .and(delete())
        .and(svc.clone())
        .then(|name: String, svc: JobService| async move {
            respond(
                async {
                    // As the original: deleting what is not there is not an error.
                    let message = if svc.schedules().delete_schedule(&name).await? {
                        format!("Schedule {name} deleted")
                    } else {
                        format!("Nothing to delete, schedule {name} does not exist")
                    };
                    Ok(json_reply(&json!({ "message": message }), StatusCode::OK))
                }
                .await,
            )
        });
    let start = path("schedule")
        .and(param::<String>())
        .and(path("start"))
        .and(end())
        .and(post())
        .and(svc)
        .then(|id: String, svc: JobService| async move {
            respond(svc.start_schedule(&id).await.map(|job| {
                let answer = json!({
                    "uuid": job.id,
                    "message": format!("Job created with uuid: {}", job.id),
                });
                json_reply(&answer, StatusCode::OK)
            }))
        });

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
        .map(|r: Response| r.into_response())
}

impl Config {
    fn legacy_policy(&self) -> LegacyPolicy {
        LegacyPolicy {
            accept_client_profiles: self.accept_client_profiles,
            max_unzipped_bytes: self.max_upload_bytes,
        }
    }
}
