//! The web UI's browser session: `POST /ui/login` checks a token as the gate would check it
//! in `Authorization: Bearer` and keeps it in the session cookie; `POST /ui/logout` removes
//! the cookie. The cookie's rules live in [`dbt_remote_core::auth::session`]; this only
//! translates. Both routes need no authentication (the gate lets them through) and are
//! behind the guard, so another site's page cannot log a browser in or out.

use bytes::Bytes;
use dbt_remote_core::auth::session::{self, SessionCookie, MAX_LOGIN_BODY_BYTES};
use dbt_remote_core::auth::Verifier;
use dbt_remote_core::Error;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::{Reply, Response};
use warp::Filter;

use crate::reply::native;
use crate::request::{limited_body, BodyLimits};
use crate::routes::Config;
use crate::ui_headers::page_headers;

/// What the login and logout routes need of the configuration.
#[derive(Clone)]
struct Session {
    verifier: Verifier,
    max_age: std::time::Duration,
    /// `--public-url` is https: the cookie is always `Secure`.
    https: bool,
}

impl Session {
    /// The cookie's attributes for a request: `Secure` when the server's public URL is https
    /// or a proxy in front says the request came over https (`X-Forwarded-Proto`, as Cloud
    /// Run's front end does).
    fn cookie(&self, headers: &HeaderMap) -> SessionCookie {
        let forwarded = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
        SessionCookie {
            secure: self.https || forwarded,
            max_age: self.max_age,
        }
    }
}

/// `POST /ui/login` and `POST /ui/logout`.
pub(crate) fn routes(config: &Config) -> BoxedFilter<(Response,)> {
    use warp::path::end;
    use warp::{path, post};

    let session = Session {
        verifier: config.auth.clone(),
        max_age: config.session_max_age,
        https: config
            .public_url
            .as_deref()
            .is_some_and(|url| url.trim().to_ascii_lowercase().starts_with("https://")),
    };
    let limits = BodyLimits {
        max_bytes: MAX_LOGIN_BODY_BYTES.min(config.max_upload_bytes),
        timeout: config.edge.body_read_timeout,
    };
    let with_session = warp::any().map(move || session.clone());
    let no_query = || {
        warp::query::raw()
            .map(Some)
            .or(warp::any().map(|| None))
            .unify()
    };
    let login = path!("ui" / "login")
        .and(end())
        .and(post())
        .and(with_session.clone())
        .and(warp::header::headers_cloned())
        .and(no_query())
        .and(limited_body(limits))
        .then(login)
        .map(native);
    let logout = path!("ui" / "logout")
        .and(end())
        .and(post())
        .and(with_session)
        .and(warp::header::headers_cloned())
        .map(logout);
    login
        .or(logout)
        .unify()
        .with(page_headers())
        .map(Reply::into_response)
        .boxed()
}

/// Verifies the body's token; 204 with the cookie when it is accepted (none when
/// authentication is off: there is nothing to keep), 401 when it is not.
async fn login(
    session: Session,
    headers: HeaderMap,
    query: Option<String>,
    body: Result<Bytes, Error>,
) -> Result<Response, Error> {
    if query.is_some_and(|q| !q.is_empty()) {
        return Err(Error::invalid(
            "a login takes no query string: send the token in the body, never in a URL",
        ));
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    let token = session::login_token(content_type, &body?)?;
    if !session.verifier.is_enabled() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    session
        .verifier
        .verify(Some(&format!("Bearer {token}")))
        .await?;
    let cookie = session
        .cookie(&headers)
        .set(&token, session::token_expiry(&token));
    Ok(warp::reply::with_header(StatusCode::NO_CONTENT, "set-cookie", cookie).into_response())
}

/// 204 with the cookie removed, whether or not there was one.
fn logout(session: Session, headers: HeaderMap) -> Response {
    let cookie = session.cookie(&headers).clear();
    warp::reply::with_header(StatusCode::NO_CONTENT, "set-cookie", cookie).into_response()
}
