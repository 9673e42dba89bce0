//! The security headers of what a browser renders: the web UI's pages and assets
//! ([`page_headers`]) and the HTML artifacts jobs write
//! ([`with_artifact_headers`]: dbt docs, the Elementary report).
//!
//! For the UI's routes (`dbt_server/src/ui.rs`), wrap a page or asset filter with
//! `.with(crate::ui_headers::page_headers())` (as `session.rs` does). Pages then load scripts, styles, images and data from this server
//! only, run no inline script, and cannot be framed by another site.

use warp::http::header::{HeaderMap, HeaderName, HeaderValue};
use warp::reply::Response;

/// The CSP of the UI's pages: everything from this origin only, no inline script or style,
/// never framed, forms and `<base>` to this origin only.
pub(crate) const PAGE_CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The CSP of an HTML artifact (dbt docs' `index.html`, the Elementary report). Both are one
/// file of inline scripts and styles, so those run; whatever they fetch (`connect-src`:
/// dbt docs loads `manifest.json` and `catalog.json` beside it) and load (images, fonts,
/// frames) comes from this server, `data:` or `blob:`, never from another origin; forms go
/// nowhere and no other site frames them.
pub(crate) const ARTIFACT_CSP: &str = "default-src 'self'; \
     script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'self'";

/// The headers of every UI answer: [`PAGE_CSP`], no MIME sniffing, no `Referer` (a job's URL
/// does not leave to other sites), no framing for browsers without CSP.
fn page_header_map() -> HeaderMap {
    headers(PAGE_CSP, "DENY")
}

fn headers(csp: &'static str, frame_options: &'static str) -> HeaderMap {
    let pairs = [
        ("content-security-policy", csp),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", frame_options),
    ];
    pairs
        .into_iter()
        .map(|(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        })
        .collect()
}

/// The UI's security headers as a warp wrapper: `page.with(page_headers())`.
pub(crate) fn page_headers() -> warp::reply::with::WithHeaders {
    warp::reply::with::headers(page_header_map())
}

/// An artifact's answer with the headers of what a job wrote: [`ARTIFACT_CSP`] when it is
/// HTML, and for any artifact no MIME sniffing (a `.txt` is never run as HTML) and no
/// `Referer`. dbt docs may be framed by this server's own pages only.
pub(crate) fn with_artifact_headers(mut response: Response, html: bool) -> Response {
    let mut map = headers(ARTIFACT_CSP, "SAMEORIGIN");
    if !html {
        map.remove("content-security-policy");
        map.remove("x-frame-options");
    }
    response.headers_mut().extend(map);
    response
}
