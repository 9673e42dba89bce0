//! The `Allow` header of a 405 answer (RFC 9110 §15.5.6 requires it): the methods of the
//! route a path belongs to. Native routes come from the served OpenAPI document, so a route
//! added there is known here; the 0.4.6 routes, which the document does not describe, are
//! listed below.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use warp::http::header::{HeaderValue, ALLOW};
use warp::http::StatusCode;
use warp::reply::Response;

/// The 0.4.6 routes and their methods (see `compat.rs`).
const LEGACY_ROUTES: &[(&str, &str)] = &[
    ("/version", "GET"),
    ("/dbt", "POST"),
    ("/job/{id}", "GET"),
    ("/job/{id}/logs", "GET"),
    ("/job/{id}/last_logs", "GET"),
    ("/schedule", "GET"),
    ("/schedule", "POST"),
    ("/schedule/{name}", "DELETE"),
    ("/schedule/{name}/start", "POST"),
];

/// Every route as (path template, method), native ones read from the OpenAPI document.
static ROUTES: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    let mut routes: Vec<(String, String)> = LEGACY_ROUTES
        .iter()
        .map(|(path, method)| (path.to_string(), method.to_string()))
        .collect();
    let document: serde_json::Value =
        serde_json::from_str(crate::routes::OPENAPI).unwrap_or_default();
    if let Some(paths) = document.get("paths").and_then(|p| p.as_object()) {
        for (path, operations) in paths {
            for method in operations.as_object().into_iter().flat_map(|o| o.keys()) {
                routes.push((path.clone(), method.to_ascii_uppercase()));
            }
        }
    }
    routes
});

/// Whether a path template (`/api/v1/jobs/{id}`) matches a request path. A template whose
/// last segment is a parameter named `name` takes the rest of the path (artifact names hold
/// slashes).
fn matches(template: &str, path: &str) -> bool {
    let template: Vec<&str> = template.trim_matches('/').split('/').collect();
    let path: Vec<&str> = path.trim_matches('/').split('/').collect();
    let is_param = |s: &str| s.starts_with('{') && s.ends_with('}');
    let tail = template.last() == Some(&"{name}") && template.len() <= path.len();
    if template.len() != path.len() && !tail {
        return false;
    }
    template
        .iter()
        .zip(&path)
        .all(|(t, p)| is_param(t) || t == p)
}

/// The methods a path allows; `None` when no route has it.
fn allowed(path: &str) -> Option<String> {
    let exact: Vec<&(String, String)> = ROUTES
        .iter()
        .filter(|(template, _)| {
            matches(template, path) && template.split('/').count() == path.split('/').count()
        })
        .collect();
    let mut candidates = if exact.is_empty() {
        ROUTES.iter().filter(|(t, _)| matches(t, path)).collect()
    } else {
        exact
    };
    // A literal segment wins over a parameter (`/api/v1/blobs/missing` is not a blob).
    let literals = |t: &str| t.split('/').filter(|s| !s.starts_with('{')).count();
    let most = candidates.iter().map(|(t, _)| literals(t)).max();
    candidates.retain(|(t, _)| Some(literals(t)) == most);
    let methods: BTreeSet<&str> = candidates.iter().map(|(_, m)| m.as_str()).collect();
    if methods.is_empty() {
        return None;
    }
    Some(methods.into_iter().collect::<Vec<_>>().join(", "))
}

/// Adds `Allow` to a 405 answer for `path`.
pub(crate) fn with_allow(path: &str, mut response: Response) -> Response {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(value) = allowed(path).and_then(|m| HeaderValue::from_str(&m).ok()) {
            response.headers_mut().insert(ALLOW, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_list_their_methods() {
        assert_eq!(allowed("/api/v1/jobs").as_deref(), Some("GET, POST"));
        let id = "0190c2a4-7c1e-7b4a-9f3e-2d1c0b9a8f7e";
        assert_eq!(
            allowed(&format!("/api/v1/jobs/{id}")).as_deref(),
            Some("GET")
        );
        assert_eq!(
            allowed(&format!("/api/v1/jobs/{id}/cancel")).as_deref(),
            Some("POST")
        );
        assert_eq!(
            allowed(&format!(
                "/api/v1/jobs/{id}/artifacts/target/run_results.json"
            ))
            .as_deref(),
            Some("GET")
        );
        assert_eq!(allowed("/api/v1/blobs/missing").as_deref(), Some("POST"));
        assert_eq!(allowed("/schedule").as_deref(), Some("GET, POST"));
        assert_eq!(allowed("/schedule/nightly").as_deref(), Some("DELETE"));
        assert_eq!(allowed("/nowhere"), None);
    }
}
