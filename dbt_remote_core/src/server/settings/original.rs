//! The original dbt-server's (0.4.6) deployment variables and the choice of state store and
//! launcher they lead to, with the reason, for the start-up log.
//!
//! The original was deployed with `gcloud run deploy --set-env-vars BUCKET_NAME=… DOCKER_IMAGE=…
//! SERVICE_ACCOUNT=… PROJECT_ID=… LOCATION=…` and always kept its state in Firestore + Cloud
//! Storage and ran each dbt command as a Cloud Run job. [`apply_original_env`] makes those
//! variables aliases of ours ([`env::ORIGINAL_ALIASES`]); [`choose`] picks `--state gcp` when
//! `BUCKET_NAME` is set and no `--state` is given, and `--launcher cloud-run` when, on GCP
//! state, `DOCKER_IMAGE` is set and no `--launcher` is given.

use std::fmt;

use super::{var, LauncherKind, ServerSettings, StateKind};
use crate::env;

/// What [`apply_original_env`] did with one of the original's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasNote {
    /// The original's variable was set and ours was not: ours now has its value.
    Used {
        original: &'static str,
        ours: &'static str,
    },
    /// Both were set to different values: ours is used.
    Conflict {
        original: &'static str,
        ours: &'static str,
        original_value: String,
        our_value: String,
    },
}

impl AliasNote {
    /// Whether this note is worth a warning.
    pub fn is_conflict(&self) -> bool {
        matches!(self, AliasNote::Conflict { .. })
    }
}

impl fmt::Display for AliasNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AliasNote::Used { original, ours } => {
                write!(
                    f,
                    "{original} (the original dbt-server's variable) is used as {ours}"
                )
            }
            AliasNote::Conflict {
                original,
                ours,
                original_value,
                our_value,
            } => write!(
                f,
                "{original}={original_value:?} and {ours}={our_value:?} are both set: using \
                 {ours}; unset {original} or make them agree"
            ),
        }
    }
}

/// Gives each of our variables of [`env::ORIGINAL_ALIASES`] that is unset the value of the
/// original's variable, in this process's environment (so the stores, the launcher and the
/// job processes all see it). When both are set and differ, ours is kept. Returns what it did,
/// for the log. Call it before any other thread runs (first thing in `main`).
pub fn apply_original_env() -> Vec<AliasNote> {
    let mut notes = Vec::new();
    for &(original, ours) in env::ORIGINAL_ALIASES {
        let Some(original_value) = var(original) else {
            continue;
        };
        match var(ours) {
            None => {
                std::env::set_var(ours, &original_value);
                notes.push(AliasNote::Used { original, ours });
            }
            Some(our_value) if our_value != original_value => notes.push(AliasNote::Conflict {
                original,
                ours,
                original_value,
                our_value,
            }),
            Some(_) => {}
        }
    }
    notes
}

/// The state store and launcher a server uses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub state: StateKind,
    pub launcher: LauncherKind,
    /// Why [`state`](Self::state), e.g. "because BUCKET_NAME is set …".
    pub state_reason: String,
    /// Why [`launcher`](Self::launcher).
    pub launcher_reason: String,
}

/// The state store and launcher of the given `--state` and `--launcher` (`None`: not given),
/// filled in from the original's variables: `BUCKET_NAME` set selects GCP state, and then
/// `DOCKER_IMAGE` set selects the Cloud Run launcher.
pub fn choose(state: Option<StateKind>, launcher: Option<LauncherKind>) -> Choice {
    let bucket = var(env::BUCKET_NAME).is_some();
    let image = var(env::DOCKER_IMAGE).is_some();
    choose_given(state, launcher, bucket, image)
}

/// [`choose`] with whether `BUCKET_NAME` and `DOCKER_IMAGE` are set.
fn choose_given(
    state: Option<StateKind>,
    launcher: Option<LauncherKind>,
    bucket: bool,
    image: bool,
) -> Choice {
    let (state, state_reason) = match state {
        Some(s) => (s, format!("because --state {} was given", s.as_str())),
        None if bucket => (
            StateKind::Gcp,
            format!(
                "because {} is set (the original dbt-server's variable) and --state was not given",
                env::BUCKET_NAME
            ),
        ),
        None => (
            StateKind::Local,
            format!(
                "because --state was not given and {} is not set",
                env::BUCKET_NAME
            ),
        ),
    };
    let (launcher, launcher_reason) = match launcher {
        Some(l) => (l, format!("because --launcher {} was given", l.as_str())),
        None if image && state == StateKind::Gcp => (
            LauncherKind::CloudRun,
            format!(
                "because {} is set (the original dbt-server's variable) and --launcher was not given",
                env::DOCKER_IMAGE
            ),
        ),
        None if image => (
            LauncherKind::Process,
            format!(
                "because --launcher was not given; {} is set, but Cloud Run executions cannot \
                 reach local state (give --state gcp, or set {})",
                env::DOCKER_IMAGE,
                env::BUCKET_NAME
            ),
        ),
        None => (
            LauncherKind::Process,
            format!(
                "because --launcher was not given and {} is not set",
                env::DOCKER_IMAGE
            ),
        ),
    };
    Choice {
        state,
        launcher,
        state_reason,
        launcher_reason,
    }
}

impl Choice {
    /// The two start-up log lines: which state store and launcher `settings` use (built, so
    /// with absolute paths), and why. They name no secret.
    pub fn lines(&self, settings: &ServerSettings) -> [String; 2] {
        let state = match self.state {
            StateKind::Local => format!("local ({})", settings.job.state_dir.display()),
            StateKind::Gcp => format!(
                "gcp (Firestore of project {} + gs://{})",
                shown(var(env::GCP_PROJECT).or_else(|| var(env::GOOGLE_CLOUD_PROJECT))),
                shown(var(env::GCS_BUCKET)),
            ),
        };
        let launcher = match self.launcher {
            LauncherKind::Process => format!(
                "process (up to {} jobs at once)",
                settings.max_concurrent_jobs
            ),
            LauncherKind::CloudRun => format!(
                "cloud-run (executions of a Cloud Run job in {}/{}, image {})",
                shown(var(env::GCP_PROJECT).or_else(|| var(env::GOOGLE_CLOUD_PROJECT))),
                shown(var(env::CLOUD_RUN_REGION)),
                shown(var(env::CLOUD_RUN_IMAGE)),
            ),
        };
        [
            format!("state: {state} {}", self.state_reason),
            format!("launcher: {launcher} {}", self.launcher_reason),
        ]
    }
}

/// A setting's value for the log, or `<unset>`.
fn shown(value: Option<String>) -> String {
    value.unwrap_or_else(|| "<unset>".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_bucket_selects_gcp_state_and_its_image_the_cloud_run_launcher() {
        let c = choose_given(None, None, true, true);
        assert_eq!(
            (c.state, c.launcher),
            (StateKind::Gcp, LauncherKind::CloudRun)
        );
        assert!(c.state_reason.contains("BUCKET_NAME is set"), "{c:?}");
        assert!(c.launcher_reason.contains("DOCKER_IMAGE is set"), "{c:?}");

        let c = choose_given(None, None, true, false);
        assert_eq!(
            (c.state, c.launcher),
            (StateKind::Gcp, LauncherKind::Process)
        );
        assert!(
            c.launcher_reason.contains("DOCKER_IMAGE is not set"),
            "{c:?}"
        );

        let c = choose_given(None, None, false, true);
        assert_eq!(
            (c.state, c.launcher),
            (StateKind::Local, LauncherKind::Process)
        );
        assert!(
            c.launcher_reason.contains("cannot reach local state"),
            "{c:?}"
        );

        let c = choose_given(None, None, false, false);
        assert_eq!(
            (c.state, c.launcher),
            (StateKind::Local, LauncherKind::Process)
        );
        assert!(c.state_reason.contains("--state was not given"), "{c:?}");
    }

    #[test]
    fn explicit_flags_win_over_the_original_variables() {
        let c = choose_given(
            Some(StateKind::Local),
            Some(LauncherKind::Process),
            true,
            true,
        );
        assert_eq!(
            (c.state, c.launcher),
            (StateKind::Local, LauncherKind::Process)
        );
        assert!(c.state_reason.contains("--state local was given"), "{c:?}");
        assert!(
            c.launcher_reason.contains("--launcher process was given"),
            "{c:?}"
        );
        let c = choose_given(Some(StateKind::Gcp), None, false, true);
        assert_eq!(c.launcher, LauncherKind::CloudRun);
    }
}
