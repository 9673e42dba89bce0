//! The web UI (docs/ui.md): one HTML shell and its script and style sheet, embedded in the
//! binary. The shell holds no data: its script renders the page of the path (`/` the jobs
//! list, `/ui/jobs/{id}` a job, `/ui/schedules` the schedules) from the same API the CLI uses,
//! with the same authentication. Every answer here carries the UI's security headers
//! ([`crate::ui_headers::page_headers`]): the page loads nothing but its own files and runs
//! no inline script.

use warp::filters::BoxedFilter;
use warp::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use warp::reply::{Reply, Response};
use warp::Filter;

/// The HTML shell of every page.
const INDEX_HTML: &str = include_str!("../ui/index.html");
/// The script that renders the pages.
const APP_JS: &str = include_str!("../ui/app.js");
/// The style sheet.
const APP_CSS: &str = include_str!("../ui/app.css");

/// `GET /`, `GET /ui/jobs/{id}`, `GET /ui/schedules` (the shell) and `GET /ui/assets/{file}`.
/// Any other path is left to the other routes (and so is a 404).
pub(crate) fn routes() -> BoxedFilter<(Response,)> {
    use warp::path::end;
    use warp::{get, path};

    let shell = || INDEX_HTML.to_owned();
    let home = end().and(get()).map(shell);
    let job = path!("ui" / "jobs" / String)
        .and(get())
        .map(move |_id: String| shell());
    let schedules = path!("ui" / "schedules").and(end()).and(get()).map(shell);
    let pages = home
        .or(job)
        .unify()
        .or(schedules)
        .unify()
        .map(|html: String| typed(html, "text/html; charset=utf-8"));
    let assets = path!("ui" / "assets" / String)
        .and(get())
        .map(|name: String| {
            let missing = || dbt_remote_core::Error::not_found(format!("UI asset {name:?}"));
            crate::reply::native(asset(&name).ok_or_else(missing))
        });
    pages
        .or(assets)
        .unify()
        .map(no_cache)
        .with(crate::ui_headers::page_headers())
        .map(Reply::into_response)
        .boxed()
}

/// The embedded file of `/ui/assets/{name}`, with its content type.
fn asset(name: &str) -> Option<Response> {
    match name {
        "app.js" => Some(typed(APP_JS.to_owned(), "text/javascript; charset=utf-8")),
        "app.css" => Some(typed(APP_CSS.to_owned(), "text/css; charset=utf-8")),
        _ => None,
    }
}

fn typed(body: String, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Revalidation: a new binary serves a new script at the same URL.
fn no_cache(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_loads_only_its_own_files_and_has_no_inline_script() {
        assert!(INDEX_HTML.contains(r#"src="/ui/assets/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="/ui/assets/app.css""#));
        // Every <script> has a src: the CSP would block an inline one.
        for script in INDEX_HTML.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap_or("");
            assert!(tag.contains("src="), "inline script: <script{tag}>");
        }
        for handler in ["onclick=", "onload=", "onsubmit=", "onerror=", "onchange="] {
            assert!(
                !INDEX_HTML.contains(handler),
                "inline event handler {handler}"
            );
        }
    }

    #[test]
    fn the_script_never_writes_html() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
    }

    #[test]
    fn only_the_embedded_assets_are_served() {
        assert!(asset("app.js").is_some());
        assert!(asset("app.css").is_some());
        assert!(asset("index.html").is_none());
        assert!(asset("../Cargo.toml").is_none());
    }
}
