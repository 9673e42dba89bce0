//! The native schedule routes (`/api/v1/schedules`): create, list, get, delete and run now,
//! keyed by the schedule's name. Each handler reads the request into core types and calls the
//! [`JobService`]; errors are answered by [`crate::reply`]. `POST
//! /api/v1/schedules/{name}/run` is also what Cloud Scheduler calls.

use bytes::Bytes;
use dbt_remote_core::api::{CreateSchedule, ScheduleInfo, ScheduleList};
use dbt_remote_core::schedule::{check_name, parse_schedule_time};
use dbt_remote_core::{Error, JobService};
use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::Filter;

use crate::reply::{json_reply, native};
use crate::request::{json_body, optional_json_body, parse_json, BodyLimits};

type Answer = Result<Response, Error>;

/// The body of `POST /api/v1/schedules/{name}/run`: empty, or `{}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunSchedule {}

/// The schedule routes. Paths come before methods, so that a known path with another method
/// is a 405.
pub(crate) fn routes(service: JobService, limits: BodyLimits) -> BoxedFilter<(Response,)> {
    use warp::path::end;
    use warp::{delete, get, path, post};

    let svc = warp::any().map(move || service.clone());
    let schedules = || path("api").and(path("v1")).and(path("schedules"));
    let named = || schedules().and(path::param::<String>());

    let create = schedules()
        .and(end())
        .and(post())
        .and(svc.clone())
        .and(json_body(limits))
        .then(create)
        .map(native);
    let list = schedules()
        .and(end())
        .and(get())
        .and(svc.clone())
        .then(list)
        .map(native);
    let get_one = named()
        .and(end())
        .and(get())
        .and(svc.clone())
        .then(get_schedule)
        .map(native);
    let remove = named()
        .and(end())
        .and(delete())
        .and(svc.clone())
        .then(delete_schedule)
        .map(native);
    let run = named()
        .and(path("run"))
        .and(end())
        .and(post())
        .and(svc)
        .and(warp::header::optional::<String>(
            "x-cloudscheduler-scheduletime",
        ))
        .and(optional_json_body(limits))
        .then(run)
        .map(native);

    create
        .or(list)
        .unify()
        .or(get_one)
        .unify()
        .or(remove)
        .unify()
        .or(run)
        .unify()
        .boxed()
}

/// `201 Created` with the schedule and its `Location`.
async fn create(svc: JobService, body: Result<Bytes, Error>) -> Answer {
    let request: CreateSchedule = parse_json(&body?)?;
    let schedule = svc.create_schedule_from(request).await?;
    let location = format!("/api/v1/schedules/{}", schedule.name);
    let reply = reply::with_status(
        reply::json(&ScheduleInfo::from(&schedule)),
        StatusCode::CREATED,
    );
    Ok(reply::with_header(reply, "location", location).into_response())
}

async fn list(svc: JobService) -> Answer {
    let schedules = svc.list_schedules().await?;
    let answer = ScheduleList {
        schedules: schedules.iter().map(ScheduleInfo::from).collect(),
    };
    Ok(json_reply(&answer, StatusCode::OK))
}

/// A schedule name from a URL: one the server would refuse names no schedule.
fn schedule_name(name: String) -> Result<String, Error> {
    match check_name(&name) {
        Ok(()) => Ok(name),
        Err(_) => Err(Error::not_found(format!("schedule {name:?}"))),
    }
}

async fn get_schedule(name: String, svc: JobService) -> Answer {
    let name = schedule_name(name)?;
    let schedule = svc.schedule_named(&name).await?;
    Ok(json_reply(&ScheduleInfo::from(&schedule), StatusCode::OK))
}

/// `204 No Content`, or a 404 when there was no such schedule.
async fn delete_schedule(name: String, svc: JobService) -> Answer {
    let name = schedule_name(name)?;
    if svc.delete_schedule(&name).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Error::not_found(format!("schedule {name:?}")))
    }
}

/// Submits the schedule's job now: `201 Created` with the job and its `Location`, as a submit.
/// With Cloud Scheduler's header
/// ([`SCHEDULE_TIME_HEADER`](dbt_remote_core::schedule::SCHEDULE_TIME_HEADER)), runs that
/// occurrence once: a retried or second call for it is `200 OK` saying it ran already, and
/// submits nothing.
async fn run(
    name: String,
    svc: JobService,
    schedule_time: Option<String>,
    body: Result<Option<Bytes>, Error>,
) -> Answer {
    let name = schedule_name(name)?;
    if let Some(body) = body? {
        parse_json::<RunSchedule>(&body)?;
    }
    let job = match schedule_time {
        None => svc.run_schedule_named(&name).await?,
        Some(value) => {
            let at = parse_schedule_time(&value)?;
            match svc.run_schedule_occurrence(&name, at).await? {
                Some(job) => job,
                None => {
                    let answer = serde_json::json!({
                        "schedule": name,
                        "occurrence": at,
                        "submitted": false,
                        "message": format!(
                            "the occurrence {} of schedule {name} ran already",
                            at.to_rfc3339()
                        ),
                    });
                    return Ok(json_reply(&answer, StatusCode::OK));
                }
            }
        }
    };
    let location = format!("/api/v1/jobs/{}", job.id);
    let reply = reply::with_status(reply::json(&job), StatusCode::CREATED);
    Ok(reply::with_header(reply, "location", location).into_response())
}
