//! The checks of `dbt-remote debug`: can the project be packed, does the server answer, are the
//! credentials accepted. Each check says what it saw and, when it failed, what to fix; the
//! frontend prints them.

use crate::package::{pack_job, JobFiles};
use crate::{Client, Error};

/// What to do about refused credentials (also the CLI's hint for them).
pub const CREDENTIALS_FIX: &str = "set DBT_REMOTE_TOKEN (a server with a static token) or \
--credentials <service-account key file> (a server that checks Google ID tokens)";

/// Why a check failed, from the least to the most serious (`Ord` follows this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// The project cannot be packed.
    Project,
    /// The server answered, but not as expected.
    Server,
    /// The server refused the credentials.
    CredentialsRefused,
    /// The server could not be reached.
    Unreachable,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was seen, e.g. `42 files to send (1234 bytes)`.
    pub what: String,
    /// `None` when the check passed.
    pub failure: Option<Failure>,
}

/// A failed check: why, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub problem: Problem,
    pub fix: &'static str,
}

impl Check {
    fn passed(what: String) -> Self {
        Check {
            what,
            failure: None,
        }
    }

    fn failed(what: String, problem: Problem, fix: &'static str) -> Self {
        Check {
            what,
            failure: Some(Failure { problem, fix }),
        }
    }

    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Whether the project `files` names can be packed, and how much it sends.
pub fn check_project(files: &JobFiles) -> Check {
    match pack_job(files) {
        Ok(files) => {
            let bytes: usize = files.iter().map(|f| f.content.len()).sum();
            Check::passed(format!("{} files to send ({bytes} bytes)", files.len()))
        }
        Err(e) => Check::failed(
            e.to_string(),
            Problem::Project,
            "run in a dbt project folder or set --project-dir / project_dir",
        ),
    }
}

/// Whether the server answers, then (if it does) whether it accepts the credentials: one or
/// two checks, in that order.
pub async fn check_server(client: &Client) -> Vec<Check> {
    let reachable = match client.health().await {
        Ok(health) => Check::passed(format!(
            "{} answers: dbt-server {}",
            client.base_url(),
            health.version
        )),
        Err(e) => {
            return vec![Check::failed(
                format!("{} cannot be reached: {e}", client.base_url()),
                Problem::Unreachable,
                "start dbt-server or set --server-url / server_url",
            )]
        }
    };
    // /health is open to all; listing one job shows whether the credentials are accepted.
    let sent = client.auth().describe();
    let credentials = match client.jobs(None, Some(1), None).await {
        Ok(_) => Check::passed(format!("credentials accepted (sent: {sent})")),
        Err(Error::Unauthenticated(m)) => Check::failed(
            format!("credentials refused: {m}"),
            Problem::CredentialsRefused,
            CREDENTIALS_FIX,
        ),
        Err(e) => Check::failed(
            format!("listing jobs failed: {e}"),
            Problem::Server,
            "see the server log",
        ),
    };
    vec![reachable, credentials]
}

/// The most serious problem among `checks`, `None` when all passed.
pub fn worst<'a>(checks: impl IntoIterator<Item = &'a Check>) -> Option<Problem> {
    checks
        .into_iter()
        .filter_map(|c| c.failure.as_ref().map(|f| f.problem))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_a_project_fails_the_project_check() {
        let dir = tempfile::tempdir().unwrap();
        let files = JobFiles {
            project_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let check = check_project(&files);
        assert_eq!(check.failure.as_ref().unwrap().problem, Problem::Project);
        assert!(check.what.contains("dbt_project.yml"), "{}", check.what);
        std::fs::write(dir.path().join("dbt_project.yml"), "name: x\n").unwrap();
        let check = check_project(&files);
        assert!(check.ok(), "{check:?}");
        assert!(
            check.what.starts_with("1 files to send ("),
            "{}",
            check.what
        );
        let refused = Check::failed("x".into(), Problem::CredentialsRefused, CREDENTIALS_FIX);
        assert_eq!(worst([&check, &refused]), Some(Problem::CredentialsRefused));
        assert_eq!(worst([&check]), None);
    }

    #[tokio::test]
    async fn a_server_that_is_down_is_one_failed_check() {
        let client = Client::new("http://127.0.0.1:9").unwrap();
        let checks = check_server(&client).await;
        assert_eq!(checks.len(), 1);
        assert_eq!(worst(&checks), Some(Problem::Unreachable));
        assert!(checks[0].what.contains("cannot be reached"), "{checks:?}");
    }
}
