//! What Cloud Run discovery reads from the dbt project's profile, as the original dbt-remote
//! did: `dbt_project.yml` names the profile, `profiles.yml` gives its target, and a BigQuery
//! target's `project` and `location` say where dbt-server runs.

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use crate::{env, Error, Result};

/// The target of the dbt project's profile that a job would use.
#[derive(Debug, Clone)]
pub struct ProfileTarget {
    /// The profile's name (`profile:` of `dbt_project.yml`).
    pub profile: String,
    /// The target's name.
    pub target: String,
    /// The `profiles.yml` read.
    pub path: PathBuf,
    /// The target's settings (`outputs.<target>`).
    pub output: Value,
}

impl ProfileTarget {
    /// Reads the target of the profile of the dbt project in `project_dir`: `target` or the
    /// profile's default, from `profiles_dir/profiles.yml` (default: `DBT_PROFILES_DIR`, else
    /// the project dir if it has a `profiles.yml`, else `~/.dbt`). `hint` ends each error.
    pub fn read(
        project_dir: &Path,
        profiles_dir: Option<&Path>,
        target: Option<&str>,
        hint: &str,
    ) -> Result<ProfileTarget> {
        let read = |path: &Path| -> Result<Value> {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::invalid(format!("{} cannot be read ({e}); {hint}", path.display()))
            })?;
            serde_yaml_ng::from_str(&text)
                .map_err(|e| Error::invalid(format!("{} is not valid YAML: {e}", path.display())))
        };
        let dbt_project = read(&project_dir.join("dbt_project.yml"))?;
        let profile = dbt_project["profile"]
            .as_str()
            .ok_or_else(|| Error::invalid(format!("dbt_project.yml names no profile; {hint}")))?
            .to_string();
        let profiles_dir = match profiles_dir {
            Some(dir) => dir.to_path_buf(),
            None => match std::env::var_os(env::PROFILES_DIR) {
                Some(dir) => PathBuf::from(dir),
                None if project_dir.join("profiles.yml").is_file() => project_dir.to_path_buf(),
                None => std::env::var_os("HOME")
                    .map(|home| PathBuf::from(home).join(".dbt"))
                    .unwrap_or_default(),
            },
        };
        let path = profiles_dir.join("profiles.yml");
        let profiles = read(&path)?;
        let entry = &profiles[profile.as_str()];
        let target = match target {
            Some(t) => t.to_string(),
            None => entry["target"].as_str().unwrap_or("default").to_string(),
        };
        let output = entry["outputs"][target.as_str()].clone();
        if output.is_null() {
            return Err(Error::invalid(format!(
                "{} has no target {target:?} in profile {profile:?}; {hint}",
                path.display()
            )));
        }
        Ok(ProfileTarget {
            profile,
            target,
            path,
            output,
        })
    }

    /// Whether the target is a BigQuery one.
    pub fn is_bigquery(&self) -> bool {
        self.output["type"].as_str() == Some("bigquery")
    }

    /// A plain (not templated, not empty) string setting of the target.
    fn plain(&self, key: &str) -> Option<&str> {
        self.output[key]
            .as_str()
            .filter(|v| !v.is_empty() && !v.contains("{{"))
    }

    /// The BigQuery target's `location` (e.g. `EU`, `europe-west1`), when plain.
    pub fn location(&self) -> Option<&str> {
        self.is_bigquery().then(|| self.plain("location")).flatten()
    }
}

/// The Google Cloud project of the BigQuery target of the dbt project in `project_dir`, as
/// the original dbt-remote found it: `dbt_project.yml` names the profile, `profiles.yml` gives
/// its target's `project`.
pub fn bigquery_project(
    project_dir: &Path,
    profiles_dir: Option<&Path>,
    target: Option<&str>,
) -> Result<String> {
    let hint = format!(
        "set {} to the Google Cloud project of dbt-server",
        env::PROJECT
    );
    let t = ProfileTarget::read(project_dir, profiles_dir, target, &hint)
        .map_err(|e| Error::invalid(format!("no Google Cloud project: {}", message(e))))?;
    let (target, profile) = (&t.target, &t.profile);
    if !t.is_bigquery() {
        return Err(Error::invalid(format!(
            "no Google Cloud project: target {target:?} of profile {profile:?} is not a BigQuery \
             target; {hint}"
        )));
    }
    match t.plain("project").or(t.plain("database")) {
        Some(p) => Ok(p.to_string()),
        None => Err(Error::invalid(format!(
            "no Google Cloud project: target {target:?} of profile {profile:?} in {} has no \
             plain `project`; {hint}",
            t.path.display()
        ))),
    }
}

/// Where to look for dbt-server when no `--location` is given: the `location` of the
/// project's BigQuery target, and where it was read (for messages). `None` when the profile
/// cannot be read or its target is not BigQuery. `profiles_dir` as in [`ProfileTarget::read`].
pub fn bigquery_location(
    project_dir: &Path,
    profiles_dir: Option<&Path>,
) -> Option<(String, String)> {
    let t = ProfileTarget::read(project_dir, profiles_dir, None, "").ok()?;
    let location = t.location()?.to_string();
    let origin = format!(
        "the location of target {:?} of profile {:?} in {}",
        t.target,
        t.profile,
        t.path.display()
    );
    Some((location, origin))
}

fn message(e: Error) -> String {
    match e {
        Error::InvalidInput(m) => m,
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(profiles: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("dbt_project.yml"),
            "name: x\nprofile: shop\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("profiles.yml"), profiles).unwrap();
        dir
    }

    #[test]
    fn the_project_comes_from_the_bigquery_target() {
        let dir = project(
            "shop:\n  target: dev\n  outputs:\n    dev: {type: bigquery, project: shop-dev, dataset: d}\n    \
             prod: {type: bigquery, project: shop-prod, dataset: d}\n    local: {type: duckdb, path: x}\n",
        );
        let p = |target| bigquery_project(dir.path(), Some(dir.path()), target);
        assert_eq!(p(None).unwrap(), "shop-dev");
        assert_eq!(p(Some("prod")).unwrap(), "shop-prod");
        let err = p(Some("local")).unwrap_err().to_string();
        assert!(err.contains("not a BigQuery target"), "{err}");
        assert!(err.contains("DBT_REMOTE_PROJECT"), "{err}");
        assert!(p(Some("nope")).is_err());
    }

    #[test]
    fn the_location_comes_from_the_bigquery_target() {
        let dir = project(
            "shop:\n  target: dev\n  outputs:\n    dev: {type: bigquery, project: p, location: europe-west1}\n",
        );
        let (location, origin) = bigquery_location(dir.path(), Some(dir.path())).unwrap();
        assert_eq!(location, "europe-west1");
        assert!(
            origin.contains("target \"dev\" of profile \"shop\""),
            "{origin}"
        );
        let templated = project(
            "shop:\n  target: dev\n  outputs:\n    dev: {type: bigquery, location: \"{{ env_var('L') }}\"}\n",
        );
        assert!(bigquery_location(templated.path(), Some(templated.path())).is_none());
        let duckdb =
            project("shop:\n  target: dev\n  outputs:\n    dev: {type: duckdb, location: x}\n");
        assert!(bigquery_location(duckdb.path(), Some(duckdb.path())).is_none());
        let empty = tempfile::tempdir().unwrap();
        assert!(bigquery_location(empty.path(), Some(empty.path())).is_none());
    }
}
