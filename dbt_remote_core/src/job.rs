//! The job model: ids, specs, statuses and records.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::blob::BlobHash;
use crate::paths::RelPath;
use crate::{Error, Result};

/// A job's id: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    /// A new id, later than every id made before it in this process.
    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for JobId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(JobId)
            .map_err(|_| Error::invalid(format!("invalid job id {s:?}: expected a UUID")))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// dbt subcommands a job may run. Two-word commands are written with a space.
pub const DBT_COMMANDS: &[&str] = &[
    "build",
    "run",
    "test",
    "seed",
    "snapshot",
    "compile",
    "ls",
    "list",
    "parse",
    "docs generate",
    "run-operation",
    "source freshness",
    "deps",
    "debug",
    "show",
    "retry",
    "clean",
];

/// `args` with dbt's own `--log-level` set to `level`, as the original dbt-remote passed its
/// `--log-level` to dbt on the server; unchanged when they set it already.
pub fn with_dbt_log_level(mut args: Vec<String>, level: crate::LogLevel) -> Vec<String> {
    let set = args
        .iter()
        .any(|a| a == "--log-level" || a.starts_with("--log-level="));
    if !set {
        args.extend(["--log-level".to_string(), level.as_str().to_string()]);
    }
    args
}

/// Longest accepted argument list, in total bytes.
pub const MAX_ARGS_BYTES: usize = 64 * 1024;

/// The file a [`JobMode::Manifest`] job runs from, at the root of its work dir.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The profiles file of a job with [`JobSpec::client_profiles`], at the root of its work dir.
pub const PROFILES_FILE: &str = "profiles.yml";

/// What a job runs: dbt's arguments and the project files it runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// dbt's arguments, subcommand first, e.g. `["build", "--select", "orders+"]`.
    pub args: Vec<String>,
    /// The project files, by content address; the job's work dir is made of exactly these.
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// How dbt gets the project: by parsing its sources (the default) or from a compiled manifest.
    #[serde(default, skip_serializing_if = "JobMode::is_project")]
    pub mode: JobMode,
    /// Whether dbt uses the `profiles.yml` sent with the job instead of the server's profiles.
    /// Only a server configured to accept client profiles stores such a job.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_profiles: bool,
    /// Whether the runner makes an Elementary report (`edr report`) after the dbt command,
    /// stored as the artifact [`ELEMENTARY_REPORT`](crate::runner::ELEMENTARY_REPORT)
    /// (docs/elementary.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub elementary: bool,
    /// The environment the job runs for (e.g. `prod`, `ci`), as the client named it (see
    /// [`check_environment`]): the server keeps each environment's latest jobs, so a later job
    /// can defer to it or retry its failure (docs/slim-ci.md). `None` for jobs that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The earlier job whose artifacts the server placed in the job's [`STATE_DIR`]: the
    /// environment's latest success (`defer_to`) or the failed job retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_of: Option<JobId>,
}

/// Longest environment name.
pub const MAX_ENVIRONMENT_LEN: usize = 64;

/// Checks an environment name: 1 to [`MAX_ENVIRONMENT_LEN`] ASCII letters, digits, `_`, `.`
/// and `-`.
pub fn check_environment(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ENVIRONMENT_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid environment name {name:?}: use 1 to {MAX_ENVIRONMENT_LEN} letters, digits, \
             '_', '.' or '-'"
        )))
    }
}

/// The folder of a job's work dir that holds dbt's state (`--state`): the manifest sent with
/// `--manifest`, or an earlier job's artifacts placed by the server (`defer_to`, `retry`).
pub const STATE_DIR: &str = ".dbt-remote/state";

/// dbt commands that take `--state`.
const STATE_COMMANDS: &[&str] = &[
    "build", "run", "test", "seed", "snapshot", "compile", "ls", "list", "docs", "show", "source",
    "retry",
];

/// dbt's arguments with `--state` pointing at [`STATE_DIR`]: a `--state` given is redirected
/// there; otherwise it is added for commands that take one.
pub fn with_state(mut args: Vec<String>) -> Vec<String> {
    if let Some(i) = args.iter().position(|a| a == "--state") {
        if i + 1 < args.len() {
            args[i + 1] = STATE_DIR.to_string();
        }
        return args;
    }
    if let Some(a) = args.iter_mut().find(|a| a.starts_with("--state=")) {
        *a = format!("--state={STATE_DIR}");
        return args;
    }
    if args
        .first()
        .is_some_and(|c| STATE_COMMANDS.contains(&c.as_str()))
    {
        args.extend(["--state".to_string(), STATE_DIR.to_string()]);
    }
    args
}

/// How a job's dbt gets the project.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobMode {
    /// dbt parses the project's sources in the work dir.
    #[default]
    Project,
    /// dbt runs from the compiled `manifest.json` at the root of the work dir, without model
    /// sources (what the 0.4.6 protocol sends): no parsing and no `dbt deps`, the manifest
    /// already holds every node and macro. Seeds are read from the work dir.
    Manifest,
}

impl JobMode {
    pub fn is_project(&self) -> bool {
        *self == JobMode::Project
    }
}

/// One project file of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: RelPath,
    pub sha256: BlobHash,
}

/// dbt's arguments from a command line such as `run --select "a b"`, split as a POSIX shell
/// would (quotes, escapes) but never run by one.
pub fn split_command(command: &str) -> Result<Vec<String>> {
    shlex::split(command.trim())
        .ok_or_else(|| Error::invalid(format!("command {command:?} has an unclosed quote")))
}

impl JobSpec {
    /// The dbt subcommand (one or two words) the arguments start with, if it is a known one.
    pub fn command(&self) -> Option<&'static str> {
        DBT_COMMANDS.iter().copied().find(|c| {
            let words = c.split(' ');
            self.args.len() >= words.clone().count() && words.zip(&self.args).all(|(w, a)| w == a)
        })
    }

    /// Whether the job may run `dbt deps`: a project job (the runner installs its packages
    /// first), or any job whose command is `deps`.
    pub fn installs_packages(&self) -> bool {
        self.mode == JobMode::Project || self.command() == Some("deps")
    }

    /// Checks the spec; the error says what to change.
    pub fn validate(&self) -> Result<()> {
        let Some(first) = self.args.first() else {
            return Err(Error::invalid(format!(
                "no dbt command given: the first argument must be one of {}",
                DBT_COMMANDS.join(", ")
            )));
        };
        if self.command().is_none() {
            return Err(Error::invalid(format!(
                "unknown dbt command {first:?}: expected one of {}",
                DBT_COMMANDS.join(", ")
            )));
        }
        let total: usize = self.args.iter().map(|a| a.len()).sum();
        if total > MAX_ARGS_BYTES {
            return Err(Error::invalid(format!(
                "dbt arguments are {total} bytes long, over the limit of {MAX_ARGS_BYTES}"
            )));
        }
        if let Some(arg) = self.args.iter().find(|a| a.contains('\0')) {
            return Err(Error::invalid(format!(
                "dbt argument {arg:?} contains a NUL byte"
            )));
        }
        // Server-owned flags, flags that act outside the project, paths outside the work dir.
        crate::containment::check_args(&self.args)?;
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.files.iter().find(|f| !seen.insert(f.path.as_str())) {
            return Err(Error::invalid(format!("file {} is listed twice", dup.path)));
        }
        if self.mode == JobMode::Manifest && !seen.contains(MANIFEST_FILE) {
            return Err(Error::invalid(format!(
                "a manifest job needs a {MANIFEST_FILE} at the root of its files"
            )));
        }
        if let Some(env) = &self.environment {
            check_environment(env)?;
        }
        if self.client_profiles && !seen.contains(PROFILES_FILE) {
            return Err(Error::invalid(format!(
                "a job with client profiles needs a {PROFILES_FILE} at the root of its files"
            )));
        }
        Ok(())
    }
}

/// Where a job is in its life. `succeeded`, `failed` and `cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl FromStr for JobStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                "unknown job status {s:?}: expected queued, running, succeeded, failed or cancelled"
            ))
            })
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as the state store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub spec: JobSpec,
    pub status: JobStatus,
    /// Bumped by the store on every update; the compare-and-set token.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// dbt's exit code, once dbt has run.
    pub exit_code: Option<i32>,
    /// Why the job failed or was cancelled, in words.
    pub failure_reason: Option<String>,
    /// Set when a cancel was asked for; the runner and launcher stop the job as soon as they see it.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Named read cursors: for readers that consume a job's log (each record once), the last
    /// log sequence number handed out to each, by reader name. Moved with compare-and-set on
    /// the record; the native API's reads take `after` and use none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reader_cursors: BTreeMap<String, u64>,
    /// The runner's handle at its launcher, for launchers that run jobs elsewhere: the Cloud Run
    /// execution (`projects/P/locations/R/jobs/J/executions/E`) of the Cloud Run launcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<String>,
    /// The launcher instance that holds the job's launch (see
    /// [`JobLifecycle::claim_job`](crate::lifecycle::JobLifecycle::claim_job)): the only one that
    /// starts its runner. `None` for jobs no claiming launcher started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_owner: Option<String>,
    /// Until when the owner's claim holds; the owner renews it while it launches and watches the
    /// job. Past it, another instance may take the job over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<DateTime<Utc>>,
    /// The dbt project's name, from its `dbt_project.yml` (or a manifest job's manifest), when
    /// it has a plain one (see [`crate::project`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The dbt target the job runs against: the one its arguments name, else its profile's
    /// default, filled in when the job starts; `None` when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl JobRecord {
    /// A new queued job.
    pub fn new(spec: JobSpec) -> Self {
        JobRecord {
            id: JobId::new(),
            spec,
            status: JobStatus::Queued,
            version: 0,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            exit_code: None,
            failure_reason: None,
            cancel_requested: false,
            reader_cursors: BTreeMap::new(),
            execution: None,
            launch_owner: None,
            lease_until: None,
            project: None,
            target: None,
        }
    }

    /// Moves the record to `running`, stamping the start time.
    pub fn start(&mut self) {
        self.status = JobStatus::Running;
        self.started_at.get_or_insert_with(Utc::now);
    }

    /// Moves the record to a final status, stamping the end time.
    pub fn finish(&mut self, status: JobStatus, exit_code: Option<i32>, reason: Option<String>) {
        debug_assert!(status.is_final());
        self.status = status;
        self.finished_at = Some(Utc::now());
        if exit_code.is_some() {
            self.exit_code = exit_code;
        }
        if reason.is_some() {
            self.failure_reason = reason;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_level_goes_to_dbt_once() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            with_dbt_log_level(args(&["run", "-s", "x"]), crate::LogLevel::Warn),
            args(&["run", "-s", "x", "--log-level", "warn"])
        );
        let given = args(&["run", "--log-level=debug"]);
        assert_eq!(
            with_dbt_log_level(given.clone(), crate::LogLevel::Warn),
            given
        );
    }

    fn spec(args: &[&str]) -> JobSpec {
        JobSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn known_commands_validate() {
        for args in [
            &["build", "--select", "orders+"][..],
            &["docs", "generate"],
            &["source", "freshness"],
            &["ls"],
            &["run-operation", "my_macro", "--args", "{a: 1}"],
        ] {
            spec(args).validate().unwrap();
        }
        assert_eq!(spec(&["docs", "generate"]).command(), Some("docs generate"));
        assert_eq!(
            spec(&["source", "freshness", "-s", "x"]).command(),
            Some("source freshness")
        );
    }

    #[test]
    fn bad_commands_are_refused() {
        for args in [
            &[][..],
            &[""],
            &["rm", "-rf", "/"],
            &["docs"],
            &["docs", "serve"],
            &["--select", "build"],
            &["build", "--profiles-dir", "/etc"],
            &["build", "--project-dir=/"],
            &["build", "a\0b"],
            &["build", "--state", "../prod"],
            &["clean", "--no-clean-project-files-only"],
        ] {
            let err = spec(args).validate().unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{args:?}: {err:?}");
        }
    }

    #[test]
    fn ids_sort_by_creation() {
        let a = JobId::new();
        let b = JobId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<JobId>().unwrap(), a);
        assert!("nope".parse::<JobId>().is_err());
    }

    #[test]
    fn statuses_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
