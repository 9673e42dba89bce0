//! Names of the environment variables dbt-remote reads, in one place (docs/configuration.md
//! lists them with their defaults).

/// Port of dbt-server (Cloud Run sets it). Default 8001.
pub const PORT: &str = "PORT";
/// Address dbt-server binds. Default 127.0.0.1.
pub const HOST: &str = "DBT_REMOTE_HOST";
/// Folder of the local state store. Default `./.dbt-remote/state`.
pub const STATE_DIR: &str = "DBT_REMOTE_STATE_DIR";
/// Folder where jobs' work dirs are made. Default `<state dir>/../work`.
pub const WORK_DIR: &str = "DBT_REMOTE_WORK_DIR";
/// The dbt executable. Default `dbt` on PATH.
pub const DBT_PATH: &str = "DBT_REMOTE_DBT_PATH";
/// dbt's profiles dir, owned by the server (as in dbt itself).
pub const PROFILES_DIR: &str = "DBT_PROFILES_DIR";
/// How many jobs run at once; the rest wait queued, in order. Default 4.
pub const MAX_CONCURRENT_JOBS: &str = "DBT_REMOTE_MAX_CONCURRENT_JOBS";
/// Largest accepted upload (one blob or one request body), in bytes. Default 64 MiB.
pub const MAX_UPLOAD_BYTES: &str = "DBT_REMOTE_MAX_UPLOAD_BYTES";
/// Seconds a cancelled job has to stop before it is killed. Default 30.
pub const CANCEL_GRACE_SECONDS: &str = "DBT_REMOTE_CANCEL_GRACE_SECONDS";
/// Keep each job's work dir after it ends (`1`/`true`). Default: removed.
pub const KEEP_WORK_DIRS: &str = "DBT_REMOTE_KEEP_WORK_DIRS";
/// Set by the process launcher for the job process: the lock file the runner holds while it
/// lives, by which a restarted server tells a live runner from a dead one.
pub const RUNNER_LOCK: &str = "DBT_REMOTE_RUNNER_LOCK";
/// The Python that runs manifest jobs (dbt's Python API). Default: the `python` next to the
/// dbt executable, else `python3` on PATH.
pub const PYTHON: &str = "DBT_REMOTE_PYTHON";
/// The server's own base URL as clients reach it, for links in 0.4.6-protocol answers.
/// Default `http://<listen address>/`.
pub const PUBLIC_URL: &str = "DBT_REMOTE_PUBLIC_URL";
/// Accept the `profiles` a 0.4.6 client sends (`1`/`true`). Default: the server's own profiles.
pub const ACCEPT_CLIENT_PROFILES: &str = "DBT_REMOTE_ACCEPT_CLIENT_PROFILES";

// The Cloud Run launcher and locator (feature `gcp`; docs/configuration.md, docs/deploy-gcp.md).

/// Google Cloud project of the Cloud Run job. Default: `GOOGLE_CLOUD_PROJECT`.
pub const GCP_PROJECT: &str = "DBT_REMOTE_GCP_PROJECT";
/// Google's own variable for the project, read when [`GCP_PROJECT`] is unset.
pub const GOOGLE_CLOUD_PROJECT: &str = "GOOGLE_CLOUD_PROJECT";
/// Cloud Run region of the jobs' executions, e.g. `europe-west1`.
pub const CLOUD_RUN_REGION: &str = "DBT_REMOTE_CLOUD_RUN_REGION";
/// Name of the one Cloud Run job whose executions run dbt jobs. Default `dbt-server-job`.
pub const CLOUD_RUN_JOB: &str = "DBT_REMOTE_CLOUD_RUN_JOB";
/// Container image of the Cloud Run job; its entry point must be `dbt-server`.
pub const CLOUD_RUN_IMAGE: &str = "DBT_REMOTE_CLOUD_RUN_IMAGE";
/// Service account the executions run as. Default: the project's default compute account.
pub const CLOUD_RUN_SERVICE_ACCOUNT: &str = "DBT_REMOTE_CLOUD_RUN_SERVICE_ACCOUNT";
/// Seconds one execution may run before Cloud Run stops it. Default 3600.
pub const CLOUD_RUN_TASK_TIMEOUT_SECONDS: &str = "DBT_REMOTE_CLOUD_RUN_TASK_TIMEOUT_SECONDS";
/// CPU limit of an execution's container (Cloud Run syntax: `1`, `2`, `4000m`). Default `1`.
pub const CLOUD_RUN_CPU: &str = "DBT_REMOTE_CLOUD_RUN_CPU";
/// Memory limit of an execution's container (`512Mi`, `2Gi`). Default `2Gi`.
pub const CLOUD_RUN_MEMORY: &str = "DBT_REMOTE_CLOUD_RUN_MEMORY";
/// Set by the Cloud Run launcher in each execution (an override): the dbt job it runs.
pub const JOB_ID: &str = "DBT_REMOTE_JOB_ID";
/// Client side: the Google Cloud project in which `dbt-remote` looks for dbt-server on Cloud
/// Run. Default: the `project` of the BigQuery target in dbt's `profiles.yml`.
pub const PROJECT: &str = "DBT_REMOTE_PROJECT";
/// Client side: the Cloud Run region in which `dbt-remote` looks for dbt-server (`--location`).
pub const LOCATION: &str = "DBT_REMOTE_LOCATION";
