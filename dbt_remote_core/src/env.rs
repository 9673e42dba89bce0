//! Names of the environment variables dbt-remote reads, in one place (docs/configuration.md
//! lists them with their defaults).

/// Port of dbt-server (Cloud Run sets it). Default 8001.
pub const PORT: &str = "PORT";
/// Address dbt-server binds. Default 127.0.0.1.
pub const HOST: &str = "DBT_REMOTE_HOST";
/// Where dbt-server keeps jobs: `local` (the state dir) or `gcp` (Firestore + Cloud Storage,
/// feature `gcp`). Default `local`.
pub const STATE: &str = "DBT_REMOTE_STATE";
/// Folder of the local state store. Default `./.dbt-remote/state`.
pub const STATE_DIR: &str = "DBT_REMOTE_STATE_DIR";
/// Folder where jobs' work dirs are made. Default `<state dir>/../work`.
pub const WORK_DIR: &str = "DBT_REMOTE_WORK_DIR";
/// The dbt executable. Default `dbt` on PATH.
pub const DBT_PATH: &str = "DBT_REMOTE_DBT_PATH";
/// Elementary's `edr`, run after dbt for jobs that ask for a report (docs/elementary.md).
/// Default: the `edr` next to the dbt executable when it exists, else `edr` on PATH.
pub const EDR_PATH: &str = "DBT_REMOTE_EDR_PATH";
/// Seconds an `edr report` may run before it is interrupted (the job keeps dbt's result).
/// Default 900.
pub const EDR_TIMEOUT_SECONDS: &str = "DBT_REMOTE_EDR_TIMEOUT_SECONDS";
/// dbt's profiles dir, owned by the server (as in dbt itself).
pub const PROFILES_DIR: &str = "DBT_PROFILES_DIR";
/// How many jobs run at once; the rest wait queued, in order. Default 4.
pub const MAX_CONCURRENT_JOBS: &str = "DBT_REMOTE_MAX_CONCURRENT_JOBS";
/// Largest accepted upload (one blob or one request body), in bytes. Default 64 MiB.
pub const MAX_UPLOAD_BYTES: &str = "DBT_REMOTE_MAX_UPLOAD_BYTES";
/// Most files one job may have (paths in its spec; docs/security/limits.md). Default 50000.
pub const MAX_JOB_FILES: &str = "DBT_REMOTE_MAX_JOB_FILES";
/// Most bytes one job's files may add up to, each path counting its blob's size (a blob listed
/// under many paths counts each time). Default 1 GiB.
pub const MAX_JOB_BYTES: &str = "DBT_REMOTE_MAX_JOB_BYTES";
/// Most schedules the server keeps. Default 1000.
pub const MAX_SCHEDULES: &str = "DBT_REMOTE_MAX_SCHEDULES";
/// Most entries in the zip of a 0.4.6 form. Default 10000.
pub const MAX_ZIP_ENTRIES: &str = "DBT_REMOTE_MAX_ZIP_ENTRIES";
/// Most bytes the entries of a 0.4.6 form's zip may unzip to. Default 64 MiB.
pub const MAX_UNZIPPED_BYTES: &str = "DBT_REMOTE_MAX_UNZIPPED_BYTES";
/// Seconds a cancelled job has to stop before it is killed. Default 30.
pub const CANCEL_GRACE_SECONDS: &str = "DBT_REMOTE_CANCEL_GRACE_SECONDS";
/// Seconds a server instance's claim on a job it launches holds without renewal (Cloud Run
/// launcher); past it, another instance takes the job over. Default 60.
pub const LEASE_SECONDS: &str = "DBT_REMOTE_LEASE_SECONDS";
/// Milliseconds a job's log appends are at least apart on a store that asks for it (the GCP
/// store: Firestore's ~1 write/s per document); `0`: append at once. Default 1000.
pub const LOG_FLUSH_MS: &str = "DBT_REMOTE_LOG_FLUSH_MS";
/// Days a finished job (record, log, artifacts, work dir, runner files) is kept; `0`: kept
/// forever. Default 30.
pub const RETAIN_DAYS: &str = "DBT_REMOTE_RETAIN_DAYS";
/// How many finished jobs are kept, the newest. Default: no count limit.
pub const RETAIN_JOBS: &str = "DBT_REMOTE_RETAIN_JOBS";
/// Minutes a new blob that no job names yet is kept (a client may be between upload and
/// submit), and a just-finished job past `DBT_REMOTE_RETAIN_JOBS`. Default 60.
pub const RETENTION_GRACE_MINUTES: &str = "DBT_REMOTE_RETENTION_GRACE_MINUTES";
/// Minutes between two retention passes (one also runs at start); `0`: no retention at all.
/// Default 60.
pub const GC_INTERVAL_MINUTES: &str = "DBT_REMOTE_GC_INTERVAL_MINUTES";
/// `false`/`0`: jobs neither restore nor keep dbt's partial parse state in the store
/// (docs/caches.md). Default: on.
pub const PARSE_CACHE: &str = "DBT_REMOTE_PARSE_CACHE";
/// `false`/`0`: jobs neither restore nor keep the `dbt_packages/` of `dbt deps` in the store
/// (docs/caches.md). Default: on.
pub const DEPS_CACHE: &str = "DBT_REMOTE_DEPS_CACHE";
/// Keep each job's work dir after it ends (`1`/`true`). Default: removed.
pub const KEEP_WORK_DIRS: &str = "DBT_REMOTE_KEEP_WORK_DIRS";
/// Comma-separated names of variables of the server's environment that job processes and dbt
/// also get (for `env_var()` in the server's profiles). Default: none beyond the allow-list of
/// [`crate::isolation::passes_by_default`] (`PATH`, `HOME`, `LC_*`, TLS and proxy settings,
/// `DBT_*` but not `DBT_REMOTE_*`, …).
pub const JOB_ENV: &str = "DBT_REMOTE_JOB_ENV";
/// Seconds a local-store write waits for a file lock held by another writer before it is
/// refused with 503. Default 10.
pub const LOCK_TIMEOUT_SECONDS: &str = "DBT_REMOTE_LOCK_TIMEOUT_SECONDS";
/// Longest message of one log record, in bytes; longer ones are cut with a marker. Default
/// 65536.
pub const MAX_LOG_RECORD_BYTES: &str = "DBT_REMOTE_MAX_LOG_RECORD_BYTES";
/// Most log records of one job; past it the runner writes one "log truncated" record and
/// drops the rest. Default 500000.
pub const MAX_LOG_RECORDS: &str = "DBT_REMOTE_MAX_LOG_RECORDS";
/// Most bytes of log messages of one job (same rule as [`MAX_LOG_RECORDS`]). Default 256 MiB.
pub const MAX_LOG_BYTES: &str = "DBT_REMOTE_MAX_LOG_BYTES";
/// Set by the process launcher for the job process: the lock file the runner holds while it
/// lives, by which a restarted server tells a live runner from a dead one.
pub const RUNNER_LOCK: &str = "DBT_REMOTE_RUNNER_LOCK";
/// How many warm dbt workers (Python processes with dbt imported, which fork each job's dbt)
/// the process launcher keeps; `0`: none, dbt starts afresh in each job. Default 2.
pub const DBT_WORKERS: &str = "DBT_REMOTE_DBT_WORKERS";
/// Set by the process launcher for the job process: the socket of its warm dbt workers.
pub const DBT_WORKER_SOCKET: &str = "DBT_REMOTE_DBT_WORKER_SOCKET";
/// The Python that runs manifest jobs (dbt's Python API). Default: the `python` next to the
/// dbt executable, else `python3` on PATH.
pub const PYTHON: &str = "DBT_REMOTE_PYTHON";
/// The server's own base URL as clients reach it, for links in 0.4.6-protocol answers.
/// Default `http://<listen address>/`.
pub const PUBLIC_URL: &str = "DBT_REMOTE_PUBLIC_URL";
/// Accept the `profiles` a 0.4.6 client sends (`1`/`true`). Default: the server's own profiles.
pub const ACCEPT_CLIENT_PROFILES: &str = "DBT_REMOTE_ACCEPT_CLIENT_PROFILES";
/// `dbt-server run-job`: the job to run when no id is given as an argument (a Cloud Run Job
/// execution gets it as an override).
pub const JOB_ID: &str = "DBT_REMOTE_JOB_ID";
/// `dbt-server run-job`: also print each log record as a Cloud Logging JSON line on stdout
/// (`1`/`true`). Default: on when `CLOUD_RUN_JOB` is set (inside a Cloud Run Job).
pub const LOG_JSON: &str = "DBT_REMOTE_LOG_JSON";
/// Set by Cloud Run in every task of a Cloud Run Job (its job's name).
pub const IN_CLOUD_RUN_JOB: &str = "CLOUD_RUN_JOB";
/// The client's static bearer token, for a server started with a static token.
pub const TOKEN: &str = "DBT_REMOTE_TOKEN";
/// How the client authenticates: `auto` (default: `DBT_REMOTE_TOKEN`, else the key file of
/// `--credentials`, else the metadata server for an `https://` server, else nothing), `none`,
/// or `metadata` (the metadata server also for an `http://` server).
pub const AUTH: &str = "DBT_REMOTE_AUTH";
/// The metadata server's `host[:port]` (Google's standard variable). Default
/// `metadata.google.internal`.
pub const GCE_METADATA_HOST: &str = "GCE_METADATA_HOST";
/// Google's application default credentials file (a service-account key or gcloud user
/// credentials), for clients of an `https://` server.
pub const GOOGLE_APPLICATION_CREDENTIALS: &str = "GOOGLE_APPLICATION_CREDENTIALS";
/// gcloud's config folder (default `~/.config/gcloud`), where `gcloud auth
/// application-default login` writes its credentials.
pub const CLOUDSDK_CONFIG: &str = "CLOUDSDK_CONFIG";
/// The server's static token, as its SHA-256 in hex: requests must send the token as bearer.
pub const AUTH_TOKEN_SHA256: &str = "DBT_REMOTE_AUTH_TOKEN_SHA256";
/// The server's static token itself (hashed at start, removed from the environment the jobs
/// inherit, never logged). Prefer `DBT_REMOTE_AUTH_TOKEN_SHA256`.
pub const AUTH_TOKEN: &str = "DBT_REMOTE_AUTH_TOKEN";
/// Accept Google ID tokens (`1`/`true`). Default off.
pub const AUTH_GOOGLE: &str = "DBT_REMOTE_AUTH_GOOGLE";
/// The audience Google ID tokens must have. Default: the public URL.
pub const AUTH_AUDIENCE: &str = "DBT_REMOTE_AUTH_AUDIENCE";
/// Where Google's public keys are fetched. Default `https://www.googleapis.com/oauth2/v3/certs`.
pub const AUTH_JWKS_URL: &str = "DBT_REMOTE_AUTH_JWKS_URL";
/// Comma-separated emails whose Google ID tokens are accepted. Default: any.
pub const AUTH_ALLOWED_EMAILS: &str = "DBT_REMOTE_AUTH_ALLOWED_EMAILS";
/// Seconds the web UI's session cookie lasts (a Google ID token's own expiry is sooner).
/// Default 43200 (12 h).
pub const SESSION_MAX_AGE_SECONDS: &str = "DBT_REMOTE_SESSION_MAX_AGE_SECONDS";

// The HTTP edge of dbt-server (docs/configuration.md, docs/security/http.md).

/// Comma-separated origins (`https://app.example.com`) whose browser pages may call the
/// server. Default: none but the server's own.
pub const ALLOWED_ORIGINS: &str = "DBT_REMOTE_ALLOWED_ORIGINS";
/// Comma-separated host names (`dbt.example.com`) accepted in the `Host` header besides the
/// loopback names and the public URL's host. Default: none; on 0.0.0.0 no Host check.
pub const ALLOWED_HOSTS: &str = "DBT_REMOTE_ALLOWED_HOSTS";
/// Seconds a connection has to send a request's headers (also the idle keep-alive limit of
/// HTTP/1.1). Default 30.
pub const HEADER_READ_TIMEOUT_SECONDS: &str = "DBT_REMOTE_HEADER_READ_TIMEOUT_SECONDS";
/// Seconds a connection may stay idle (no byte read or written) between requests before it
/// is closed. Default 60.
pub const IDLE_TIMEOUT_SECONDS: &str = "DBT_REMOTE_IDLE_TIMEOUT_SECONDS";
/// Seconds a request's whole body has to arrive (else 408). Default 300.
pub const BODY_READ_TIMEOUT_SECONDS: &str = "DBT_REMOTE_BODY_READ_TIMEOUT_SECONDS";
/// Connections served at once; more wait unaccepted. Default 1024.
pub const MAX_CONNECTIONS: &str = "DBT_REMOTE_MAX_CONNECTIONS";
/// Also serve HTTP/2 without TLS (h2c) (`1`/`true`). Default: HTTP/1.1 only.
pub const HTTP2: &str = "DBT_REMOTE_HTTP2";
/// Seconds between the heartbeat comments of a log stream. Default 5.
pub const SSE_HEARTBEAT_SECONDS: &str = "DBT_REMOTE_SSE_HEARTBEAT_SECONDS";

// The GCP state store (feature `gcp`; docs/configuration.md).

/// Google Cloud project of the Firestore database. Default: `GOOGLE_CLOUD_PROJECT`.
pub const GCP_PROJECT: &str = "DBT_REMOTE_GCP_PROJECT";
/// Google's own variable for the project, read when [`GCP_PROJECT`] is unset.
pub const GOOGLE_CLOUD_PROJECT: &str = "GOOGLE_CLOUD_PROJECT";
/// Cloud Storage bucket of blobs and artifacts (it must exist).
pub const GCS_BUCKET: &str = "DBT_REMOTE_GCS_BUCKET";
/// Prefix of the store's Firestore collections and Cloud Storage object names, so that several
/// stores can share a database and a bucket. Default: none.
pub const COLLECTION_PREFIX: &str = "DBT_REMOTE_COLLECTION_PREFIX";
/// `host:port` of a Firestore emulator (Google's variable): no credentials are looked up.
pub const FIRESTORE_EMULATOR_HOST: &str = "FIRESTORE_EMULATOR_HOST";
/// `host:port` of a Cloud Storage emulator (Google's variable): no credentials are looked up.
pub const STORAGE_EMULATOR_HOST: &str = "STORAGE_EMULATOR_HOST";
/// The variables of the GCP store that a Cloud Run execution needs to open the same store as
/// the server (the server passes on those it has).
pub const GCP_STORE_SETTINGS: &[&str] = &[
    GCP_PROJECT,
    GOOGLE_CLOUD_PROJECT,
    GCS_BUCKET,
    COLLECTION_PREFIX,
    FIRESTORE_EMULATOR_HOST,
    STORAGE_EMULATOR_HOST,
];

// The emulators of the tests (docs/testing.md).

/// The `gcp-storage-emulator` executable. Default:
/// `~/.cache/dbt-remote/emulators-venv/bin/gcp-storage-emulator`.
pub const GCS_EMULATOR: &str = "DBT_REMOTE_GCS_EMULATOR";
/// The Firestore emulator's launcher script (run with `node`). Default:
/// `~/.cache/dbt-remote/firestore-emulator/start.js`.
pub const FIRESTORE_EMULATOR: &str = "DBT_REMOTE_FIRESTORE_EMULATOR";
/// `1`: a test that needs an emulator fails when it is not installed, instead of being skipped
/// (`scripts/test.sh` sets it).
pub const REQUIRE_EMULATORS: &str = "DBT_REMOTE_REQUIRE_EMULATORS";

// The Cloud Run launcher and locator (feature `gcp`; docs/configuration.md, docs/deploy-gcp.md).
// The project is [`GCP_PROJECT`]; each execution gets [`JOB_ID`].

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
/// Another endpoint of the Cloud Run Admin API, e.g. a local fake for tests. An `http://`
/// endpoint is sent no credentials. Default: Google's.
pub const CLOUD_RUN_ENDPOINT: &str = "DBT_REMOTE_CLOUD_RUN_ENDPOINT";
/// `dbt-server`: where jobs run, `process` (default) or `cloud-run`.
pub const LAUNCHER: &str = "DBT_REMOTE_LAUNCHER";
/// Client side: the Google Cloud project in which `dbt-remote` looks for dbt-server on Cloud
/// Run. Default: the `project` of the BigQuery target in dbt's `profiles.yml`.
pub const PROJECT: &str = "DBT_REMOTE_PROJECT";
/// Client side: the Cloud Run region in which `dbt-remote` looks for dbt-server (`--location`).
pub const LOCATION: &str = "DBT_REMOTE_LOCATION";
/// A Secret Manager secret holding a `profiles.yml`, mounted into every Cloud Run execution
/// as `/etc/dbt-remote/profiles/profiles.yml` (with `DBT_PROFILES_DIR` pointing there): `SECRET`, `SECRET:VERSION` or
/// `projects/P/secrets/SECRET[:VERSION]`. Default: none (the image's profiles).
pub const CLOUD_RUN_PROFILES_SECRET: &str = "DBT_REMOTE_CLOUD_RUN_PROFILES_SECRET";

// The original dbt-server's (0.4.6) deployment variables, as its `gcloud run deploy
// --set-env-vars` set them: aliases of ours (docs/configuration.md).

/// The original's Cloud Storage bucket: alias of [`GCS_BUCKET`]; set alone (no `--state`), it
/// also selects `--state gcp`, as the original always kept its state in Firestore + Cloud Storage.
pub const BUCKET_NAME: &str = "BUCKET_NAME";
/// The original's image of the Cloud Run jobs: alias of [`CLOUD_RUN_IMAGE`]; with GCP state
/// and no `--launcher`, it also selects `--launcher cloud-run`.
pub const DOCKER_IMAGE: &str = "DOCKER_IMAGE";
/// The original's service account of the Cloud Run jobs: alias of [`CLOUD_RUN_SERVICE_ACCOUNT`].
pub const SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
/// The original's Google Cloud project: alias of [`GCP_PROJECT`].
pub const PROJECT_ID: &str = "PROJECT_ID";
/// The original's region of the Cloud Run jobs: alias of [`CLOUD_RUN_REGION`].
pub const ORIGINAL_LOCATION: &str = "LOCATION";
/// Each original variable and the variable of ours it stands for. Ours wins when both are set.
pub const ORIGINAL_ALIASES: &[(&str, &str)] = &[
    (BUCKET_NAME, GCS_BUCKET),
    (DOCKER_IMAGE, CLOUD_RUN_IMAGE),
    (SERVICE_ACCOUNT, CLOUD_RUN_SERVICE_ACCOUNT),
    (PROJECT_ID, GCP_PROJECT),
    (ORIGINAL_LOCATION, CLOUD_RUN_REGION),
];

// Schedules' triggers (docs/configuration.md, docs/deploy-gcp.md "Schedules").

/// `dbt-server`: what fires schedules, `loop` (default: the server's own loop) or
/// `cloud-scheduler` (one Cloud Scheduler job per schedule, feature `gcp`).
pub const SCHEDULER: &str = "DBT_REMOTE_SCHEDULER";
/// Region of the Cloud Scheduler jobs. Default: [`CLOUD_RUN_REGION`].
pub const CLOUD_SCHEDULER_REGION: &str = "DBT_REMOTE_CLOUD_SCHEDULER_REGION";
/// The service account whose ID token the Cloud Scheduler jobs send to the server (it must
/// be allowed to call it: `roles/run.invoker`, or `--auth-allowed-emails`). Required with
/// `--scheduler cloud-scheduler`.
pub const SCHEDULER_SERVICE_ACCOUNT: &str = "DBT_REMOTE_SCHEDULER_SERVICE_ACCOUNT";
/// Start of the names of the server's Cloud Scheduler jobs (`<prefix><schedule name>`), so
/// that several servers in one project and region do not collide. Default `dbt-server-`.
pub const CLOUD_SCHEDULER_PREFIX: &str = "DBT_REMOTE_CLOUD_SCHEDULER_PREFIX";
/// Another endpoint of the Cloud Scheduler API, e.g. a local fake for tests. An `http://`
/// endpoint is sent no credentials. Default: Google's.
pub const CLOUD_SCHEDULER_ENDPOINT: &str = "DBT_REMOTE_CLOUD_SCHEDULER_ENDPOINT";
