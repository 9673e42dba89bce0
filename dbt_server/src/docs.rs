//! dbt's docs site, served from a job's artifacts: `GET /api/v1/jobs/{id}/docs/` is the
//! `index.html` a `dbt docs generate` job stored, and the `manifest.json` and `catalog.json` it
//! loads sit beside it. `GET /api/v1/docs/{project}/{target}/` sends the browser to the newest
//! such site of that project and target.

use dbt_remote_core::service::DOCS_INDEX;
use dbt_remote_core::{Error, JobService, RelPath};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::path::{FullPath, Tail};
use warp::reply::{Reply, Response};
use warp::Filter;

use crate::reply::{artifact_reply, native};
use crate::request::{job_id, percent_decode};

/// The files of a docs site: what dbt's `index.html` loads, and itself.
const DOCS_FILES: &[&str] = &[DOCS_INDEX, "manifest.json", "catalog.json"];

type Answer = Result<Response, Error>;

/// The docs routes. Paths come before methods, so that a known path with another method is a
/// 405.
pub(crate) fn routes(service: JobService) -> BoxedFilter<(Response,)> {
    use warp::{get, path};
    let svc = warp::any().map(move || service.clone());
    let api = || path("api").and(path("v1"));
    let job_docs = api()
        .and(path("jobs"))
        .and(path::param::<String>())
        .and(path("docs"))
        .and(path::tail())
        .and(get())
        .and(path::full())
        .and(svc.clone())
        .then(job_docs)
        .map(native);
    let latest = api()
        .and(path("docs"))
        .and(path::param::<String>())
        .and(path::param::<String>())
        .and(path::tail())
        .and(get())
        .and(path::full())
        .and(svc)
        .then(latest_docs)
        .map(native);
    job_docs.or(latest).unify().boxed()
}

/// `/api/v1/jobs/{id}/docs/{file}`: a file of the job's docs site; `…/docs` (no slash) is
/// redirected to `…/docs/`, so that the site's relative links resolve beneath it.
async fn job_docs(id: String, file: Tail, full: FullPath, svc: JobService) -> Answer {
    let id = job_id(&id)?;
    let file = percent_decode(file.as_str())?;
    if file.is_empty() && !full.as_str().ends_with('/') {
        return Ok(redirect(
            StatusCode::PERMANENT_REDIRECT,
            &format!("{}/", full.as_str()),
        ));
    }
    let name = if file.is_empty() {
        DOCS_INDEX
    } else {
        docs_file(&file)?
    };
    svc.job(id).await?;
    if !svc.has_docs(id).await? {
        return Err(Error::not_found(format!(
            "a docs site of job {id} (only a `dbt docs generate` job stores one)"
        )));
    }
    let content = svc.artifact(id, &RelPath::new(name)?).await?;
    Ok(artifact_reply(name, content))
}

/// `/api/v1/docs/{project}/{target}/{file}`: a temporary redirect to the same file of the
/// newest docs site of that project and target.
async fn latest_docs(
    project: String,
    target: String,
    file: Tail,
    full: FullPath,
    svc: JobService,
) -> Answer {
    let project = label("project", &project)?;
    let target = label("target", &target)?;
    let file = percent_decode(file.as_str())?;
    if file.is_empty() && !full.as_str().ends_with('/') {
        return Ok(redirect(
            StatusCode::PERMANENT_REDIRECT,
            &format!("{}/", full.as_str()),
        ));
    }
    if !file.is_empty() {
        docs_file(&file)?;
    }
    let id = svc.latest_docs(&project, &target).await?;
    Ok(redirect(
        StatusCode::TEMPORARY_REDIRECT,
        &format!("/api/v1/jobs/{id}/docs/{file}"),
    ))
}

/// A project or target name from the path.
fn label(what: &str, raw: &str) -> Result<String, Error> {
    let value = percent_decode(raw)?;
    if dbt_remote_core::project::is_name(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(format!(
            "invalid {what} name {value:?}: expected letters, digits, `_`, `-` or `.`"
        )))
    }
}

/// `file` if it is one of a docs site's files.
fn docs_file(file: &str) -> Result<&'static str, Error> {
    DOCS_FILES
        .iter()
        .copied()
        .find(|f| *f == file)
        .ok_or_else(|| {
            Error::not_found(format!(
                "docs file {file:?} (a docs site has {})",
                DOCS_FILES.join(", ")
            ))
        })
}

/// A redirect that no cache keeps: where "latest" points changes with each docs job.
fn redirect(status: StatusCode, location: &str) -> Response {
    let reply = warp::reply::with_status(warp::reply(), status);
    let reply = warp::reply::with_header(reply, "location", location);
    warp::reply::with_header(reply, "cache-control", "no-store").into_response()
}
