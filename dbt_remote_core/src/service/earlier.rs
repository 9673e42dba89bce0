//! Jobs that start from an earlier job's artifacts: deferral to an environment's latest success
//! (`defer_to`) and `dbt retry` of a failed job. The server keeps every job's artifacts, so it
//! finds the earlier job by project and environment and places its files where dbt reads its
//! state, the [`STATE_DIR`] a `--manifest` sent by the client goes to (docs/slim-ci.md). A job
//! may also run on an earlier job's files (`files_of`: `Job.retry()` in Python).

use crate::api::StateFrom;
use crate::blob::BlobHash;
use crate::job::{with_state, FileEntry, JobId, JobRecord, JobSpec, JobStatus, STATE_DIR};
use crate::paths::RelPath;
use crate::project::{profile_from_args, target_from_args};
use crate::state::JobQuery;
use crate::{Error, Result};

use super::{JobService, MAX_PAGE, MAX_SCAN};

/// Commands whose jobs store no manifest or run results: never the earlier job of another.
const STATELESS_COMMANDS: &[&str] = &["debug", "deps", "clean"];

/// The artifact dbt's state is read from for deferral and `state:` selectors.
pub const MANIFEST: &str = "manifest.json";
/// The artifact `dbt retry` reads the previous run from.
pub const RUN_RESULTS: &str = "run_results.json";

impl JobService {
    /// The newest job of `project` and `environment` (exactly: `None` is the jobs that name no
    /// environment) with `status`, whose command stores dbt's artifacts (not `debug`, `deps`,
    /// `clean`), among the newest [`MAX_SCAN`] jobs with that status. A scan
    /// of the store's status-filtered list, newest first, bounded so that a busy server answers
    /// in a fixed number of reads.
    pub async fn latest_job(
        &self,
        project: &str,
        environment: Option<&str>,
        status: JobStatus,
    ) -> Result<Option<JobRecord>> {
        let mut query = JobQuery {
            status: Some(status),
            before: None,
            limit: MAX_PAGE,
        };
        let mut scanned = 0;
        while scanned < MAX_SCAN {
            let page = self.store.list_jobs(&query).await?;
            scanned += page.jobs.len();
            let found = page.jobs.into_iter().find(|job| {
                job.project.as_deref() == Some(project)
                    && job.spec.environment.as_deref() == environment
                    && !job
                        .spec
                        .command()
                        .is_some_and(|c| STATELESS_COMMANDS.contains(&c))
            });
            if found.is_some() {
                return Ok(found);
            }
            match page.next {
                Some(next) => query.before = Some(next),
                None => break,
            }
        }
        Ok(None)
    }

    /// `spec` with the artifacts of the earlier job `from` names in its state dir and
    /// `--state` pointing there (see [`with_state`]); unchanged for [`StateFrom::Own`]. Fails
    /// with [`Error::InvalidInput`], saying what to run first, when there is no such job or it
    /// stored no such artifacts. Stores the artifacts as blobs (idempotent), nothing else.
    pub async fn with_state_of(&self, spec: JobSpec, from: StateFrom) -> Result<JobSpec> {
        let retry = matches!(from, StateFrom::Retry(_));
        let (earlier, artifacts): (JobRecord, &[&str]) = match from {
            StateFrom::Own => return Ok(spec),
            StateFrom::DeferTo(environment) => {
                let project = self
                    .project_to_find(&spec, "defer to an environment")
                    .await?;
                let found = self
                    .latest_job(&project, Some(&environment), JobStatus::Succeeded)
                    .await?;
                let Some(job) = found else {
                    return Err(Error::invalid(format!(
                        "environment {environment:?} has no succeeded job of project \
                         {project:?} to defer to yet (run one with --environment {environment})"
                    )));
                };
                (job, &[MANIFEST])
            }
            StateFrom::Retry(Some(id)) => (self.job_to_retry(id).await?, &[RUN_RESULTS, MANIFEST]),
            StateFrom::Retry(None) => {
                let project = self.project_to_find(&spec, "retry").await?;
                let environment = spec.environment.as_deref();
                let found = self
                    .latest_job(&project, environment, JobStatus::Failed)
                    .await?;
                let Some(job) = found else {
                    let of = environment.map_or("no environment".to_string(), |e| {
                        format!("environment {e:?}")
                    });
                    return Err(Error::invalid(format!(
                        "there is no failed job of project {project:?} and {of} to retry"
                    )));
                };
                (job, &[RUN_RESULTS, MANIFEST])
            }
        };
        let spec = if retry {
            with_profile_and_target_of(spec, &earlier)
        } else {
            spec
        };
        self.place_artifacts(spec, &earlier, artifacts).await
    }

    /// `spec` on the files and mode of the earlier job `files_of` names (the request sent no
    /// files); unchanged for `None`. Every blob is the store's already. A 400 when there is no
    /// such job. The earlier job's client profiles are never carried over: the new job uses the
    /// server's profiles.
    pub async fn with_files_of(
        &self,
        mut spec: JobSpec,
        files_of: Option<JobId>,
    ) -> Result<JobSpec> {
        let Some(id) = files_of else {
            return Ok(spec);
        };
        let earlier = match self.store.get_job(id).await {
            Err(Error::NotFound { .. }) => {
                return Err(Error::invalid(format!("files_of: there is no job {id}")))
            }
            other => other?,
        };
        spec.files = earlier.spec.files;
        spec.mode = earlier.spec.mode;
        spec.validate()?;
        Ok(spec)
    }

    /// The job `id`, to retry: a 400 (not a 404 of the route) when there is none.
    async fn job_to_retry(&self, id: JobId) -> Result<JobRecord> {
        match self.store.get_job(id).await {
            Err(Error::NotFound { .. }) => Err(Error::invalid(format!(
                "retry_of: there is no job {id} to retry"
            ))),
            other => other,
        }
    }

    /// The project the job's files name, which the earlier job is looked up by.
    async fn project_to_find(&self, spec: &JobSpec, to: &str) -> Result<String> {
        self.project_of(spec).await.ok_or_else(|| {
            Error::invalid(format!(
                "to {to}, the job's dbt_project.yml must have a plain name (the project's \
                 jobs are found by it)"
            ))
        })
    }

    /// `spec` with `names` of `earlier`'s artifacts as files in [`STATE_DIR`] (replacing any
    /// sent there) and its arguments [`with_state`].
    async fn place_artifacts(
        &self,
        mut spec: JobSpec,
        earlier: &JobRecord,
        names: &[&str],
    ) -> Result<JobSpec> {
        for name in names {
            let artifact = RelPath::new(*name)?;
            let content = match self.store.get_artifact(earlier.id, &artifact).await {
                Err(Error::NotFound { .. }) => {
                    return Err(Error::invalid(format!(
                        "job {} ({}) stored no {name}, which this job needs as dbt's state",
                        earlier.id, earlier.status
                    )))
                }
                other => other?,
            };
            let sha256 = BlobHash::of(&content);
            self.store.put_blob(&sha256, content).await?;
            let path = RelPath::new(format!("{STATE_DIR}/{name}"))?;
            spec.files.retain(|f| f.path != path);
            spec.files.push(FileEntry { path, sha256 });
        }
        spec.args = with_state(spec.args);
        spec.state_of = Some(earlier.id);
        Ok(spec)
    }
}

/// A retry's `spec` naming the profile and target of the job it retries, where it names none:
/// dbt's `retry` runs with the retried run's own, so the new job is listed under what it runs
/// against (not under its profile's default target).
fn with_profile_and_target_of(mut spec: JobSpec, earlier: &JobRecord) -> JobSpec {
    let profile = profile_from_args(&earlier.spec.args);
    if let (None, Some(profile)) = (profile_from_args(&spec.args), profile) {
        spec.args.extend(["--profile".to_string(), profile]);
    }
    let target = earlier
        .target
        .clone()
        .or_else(|| target_from_args(&earlier.spec.args));
    if let (None, Some(target)) = (target_from_args(&spec.args), target) {
        spec.args.extend(["--target".to_string(), target]);
    }
    spec
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::testing::{sample_job, RecordingLauncher};
    use crate::{MemoryStore, StateStore};

    struct Setup {
        store: Arc<dyn StateStore>,
        service: JobService,
    }

    fn setup() -> Setup {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let launcher = Arc::new(RecordingLauncher::new(store.clone()));
        let service = JobService::new(store.clone(), launcher);
        Setup { store, service }
    }

    impl Setup {
        /// Stores a job of `project`, `environment`, `status` running `command`.
        async fn job(
            &self,
            project: &str,
            environment: Option<&str>,
            status: JobStatus,
            command: &str,
        ) -> JobId {
            let mut job = sample_job();
            job.spec.args = vec![command.to_string()];
            job.spec.environment = environment.map(str::to_string);
            job.project = Some(project.to_string());
            job.status = status;
            self.store.create_job(&job).await.unwrap().id
        }

        /// A spec whose files name project `shop`.
        async fn spec(&self, args: &[&str], environment: Option<&str>) -> JobSpec {
            let content = Bytes::from_static(b"name: shop\nprofile: p\n");
            let sha256 = BlobHash::of(&content);
            self.store.put_blob(&sha256, content).await.unwrap();
            JobSpec {
                args: args.iter().map(|s| s.to_string()).collect(),
                files: vec![FileEntry {
                    path: RelPath::new("dbt_project.yml").unwrap(),
                    sha256,
                }],
                environment: environment.map(str::to_string),
                ..Default::default()
            }
        }
    }

    #[tokio::test]
    async fn the_latest_job_is_the_newest_of_exactly_that_project_and_environment() {
        let s = setup();
        let ok = JobStatus::Succeeded;
        let prod = s.job("shop", Some("prod"), ok, "build").await;
        let _debug = s.job("shop", Some("prod"), ok, "debug").await;
        let _ci = s.job("shop", Some("ci"), ok, "build").await;
        let _other = s.job("other", Some("prod"), ok, "build").await;
        let _failed = s.job("shop", Some("prod"), JobStatus::Failed, "run").await;
        let none = s.job("shop", None, ok, "run").await;
        let latest = |p: &'static str, e: Option<&'static str>| {
            let service = s.service.clone();
            async move {
                let job = service.latest_job(p, e, ok).await.unwrap();
                job.map(|j| j.id)
            }
        };
        assert_eq!(latest("shop", Some("prod")).await, Some(prod));
        assert_eq!(latest("shop", None).await, Some(none));
        assert_eq!(latest("nope", Some("prod")).await, None);
        assert_eq!(latest("shop", Some("staging")).await, None);
    }

    #[tokio::test]
    async fn deferral_places_the_latest_manifest_and_points_state_at_it() {
        let s = setup();
        let prod = s
            .job("shop", Some("prod"), JobStatus::Succeeded, "build")
            .await;
        let manifest = Bytes::from_static(br#"{"nodes": {}}"#);
        let name = RelPath::new(MANIFEST).unwrap();
        s.store
            .put_artifact(prod, &name, manifest.clone())
            .await
            .unwrap();

        let spec = s
            .spec(&["build", "--select", "state:modified+", "--defer"], None)
            .await;
        let from = StateFrom::DeferTo("prod".into());
        let got = s.service.with_state_of(spec, from).await.unwrap();
        assert_eq!(got.state_of, Some(prod));
        assert_eq!(
            got.args,
            [
                "build",
                "--select",
                "state:modified+",
                "--defer",
                "--state",
                STATE_DIR
            ]
        );
        let placed = got
            .files
            .iter()
            .find(|f| f.path.as_str() == format!("{STATE_DIR}/{MANIFEST}"))
            .expect("the manifest is a file of the job");
        assert_eq!(placed.sha256, BlobHash::of(&manifest));
        assert_eq!(s.store.get_blob(&placed.sha256).await.unwrap(), manifest);

        let spec = s.spec(&["build"], None).await;
        let err = s
            .service
            .with_state_of(spec, StateFrom::DeferTo("staging".into()))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains("environment \"staging\" has no succeeded job of project \"shop\"")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_retry_takes_the_failed_jobs_results_or_says_why_not() {
        let s = setup();
        let failed = s.job("shop", Some("ci"), JobStatus::Failed, "build").await;
        let spec = s.spec(&["retry"], Some("ci")).await;
        // No run_results.json (it failed before dbt ran): refused, saying so.
        let err = s
            .service
            .with_state_of(spec.clone(), StateFrom::Retry(None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains("stored no run_results.json")),
            "{err:?}"
        );
        for name in [RUN_RESULTS, MANIFEST] {
            let name = RelPath::new(name).unwrap();
            let content = Bytes::from(format!("{{\"of\": \"{name}\"}}"));
            s.store.put_artifact(failed, &name, content).await.unwrap();
        }
        let got = s
            .service
            .with_state_of(spec.clone(), StateFrom::Retry(None))
            .await
            .unwrap();
        assert_eq!(got.state_of, Some(failed));
        assert_eq!(got.args, ["retry", "--state", STATE_DIR]);
        // The failed job ran against a named profile and target: the retry names them too,
        // unless it names its own.
        let mut labelled = s.store.get_job(failed).await.unwrap();
        labelled.spec.args = vec!["build".into(), "--profile".into(), "p2".into()];
        labelled.target = Some("ci".into());
        let args = |spec: &JobSpec| with_profile_and_target_of(spec.clone(), &labelled).args;
        assert_eq!(args(&spec), ["retry", "--profile", "p2", "--target", "ci"]);
        let own = s.spec(&["retry", "-t", "prod"], Some("ci")).await;
        assert_eq!(args(&own), ["retry", "-t", "prod", "--profile", "p2"]);
        assert_eq!(got.files.len(), 3);
        let by_id = s
            .service
            .with_state_of(spec.clone(), StateFrom::Retry(Some(failed)))
            .await
            .unwrap();
        assert_eq!(by_id, got);
        // Another environment has no failure; an unknown id is a 400, not a 404.
        let prod = s.spec(&["retry"], Some("prod")).await;
        let err = s.service.with_state_of(prod, StateFrom::Retry(None)).await;
        assert!(matches!(err, Err(Error::InvalidInput(_))), "{err:?}");
        let err = s
            .service
            .with_state_of(spec, StateFrom::Retry(Some(JobId::new())))
            .await;
        assert!(matches!(err, Err(Error::InvalidInput(_))), "{err:?}");
    }
}
