//! What a job is about: the name of its dbt project and the target it runs against, read from
//! the files and arguments it was submitted with, and from the profiles dbt uses. The jobs list
//! shows and filters by them, and "latest docs" are kept per project and target.
//!
//! Each is a best effort and never refuses a job: a project whose `dbt_project.yml` has no
//! plain `name`, or a target that a Jinja expression chooses, is simply unknown (`None`).

use std::path::Path;

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::containment::PROJECT_FILE;
use crate::job::{JobMode, JobSpec, MANIFEST_FILE};

/// The profiles file dbt reads in a profiles dir.
const PROFILES_YML: &str = "profiles.yml";

/// The project's name from the root `dbt_project.yml` of a job's files (`content`): its `name`
/// key, when it is a plain string.
pub fn project_name(dbt_project_yml: &[u8]) -> Option<String> {
    let yaml: Value = serde_yaml_ng::from_slice(dbt_project_yml).ok()?;
    plain(yaml.get("name")?)
}

/// The profile the root `dbt_project.yml` (`content`) names: its `profile` key, when it is a
/// plain string.
pub fn project_profile(dbt_project_yml: &[u8]) -> Option<String> {
    let yaml: Value = serde_yaml_ng::from_slice(dbt_project_yml).ok()?;
    plain(yaml.get("profile")?)
}

/// The project's name from a compiled `manifest.json` (its `metadata.project_name`), for jobs
/// run from a manifest that came without a `dbt_project.yml`.
pub fn manifest_project_name(manifest_json: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Manifest {
        metadata: Metadata,
    }
    #[derive(Deserialize)]
    struct Metadata {
        project_name: Option<String>,
    }
    let manifest: Manifest = serde_json::from_slice(manifest_json).ok()?;
    manifest.metadata.project_name.filter(|n| is_name(n))
}

/// Reads a project's name from one file's content.
pub type NameReader = fn(&[u8]) -> Option<String>;

/// Which job file names the project, and how to read it: the root `dbt_project.yml`, else
/// (manifest jobs) the root `manifest.json`.
pub fn naming_file(spec: &JobSpec) -> Option<(&crate::FileEntry, NameReader)> {
    let root = |name: &str| spec.files.iter().find(|f| f.path.as_str() == name);
    if let Some(file) = root(PROJECT_FILE) {
        return Some((file, project_name));
    }
    if spec.mode == JobMode::Manifest {
        return root(MANIFEST_FILE).map(|f| (f, manifest_project_name as NameReader));
    }
    None
}

/// The target dbt's arguments name (`--target X`, `--target=X`, `-t X`), if any.
pub fn target_from_args(args: &[String]) -> Option<String> {
    flag_value(args, &["--target", "-t"])
}

/// The profile dbt's arguments name (`--profile X`, `--profile=X`), if any.
pub fn profile_from_args(args: &[String]) -> Option<String> {
    flag_value(args, &["--profile"])
}

/// The target dbt picks when none is named: the `target` of the job's profile in
/// `<profiles_dir>/profiles.yml`. The profile is `--profile` from the arguments, else the
/// `profile` of the project's `dbt_project.yml` in `work_dir`.
pub fn default_target(args: &[String], work_dir: &Path, profiles_dir: &Path) -> Option<String> {
    let profile = profile_from_args(args).or_else(|| {
        let project = std::fs::read(work_dir.join(PROJECT_FILE)).ok()?;
        project_profile(&project)
    })?;
    let profiles = std::fs::read(profiles_dir.join(PROFILES_YML)).ok()?;
    let yaml: Value = serde_yaml_ng::from_slice(&profiles).ok()?;
    plain(yaml.get(profile.as_str())?.get("target")?)
}

/// The value of the last of `flags` in `args` (dbt takes the last one).
fn flag_value(args: &[String], flags: &[&str]) -> Option<String> {
    let mut found = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if flags.contains(&arg.as_str()) {
            found = args.next().cloned();
        } else if let Some((flag, value)) = arg.split_once('=') {
            if flag.starts_with("--") && flags.contains(&flag) {
                found = Some(value.to_string());
            }
        }
    }
    found.filter(|v| is_name(v))
}

/// A YAML value that is a plain name (not a Jinja expression).
fn plain(value: &Value) -> Option<String> {
    value.as_str().filter(|s| is_name(s)).map(str::to_string)
}

/// Whether `s` can be a dbt project, profile or target name as shown and filtered on: short,
/// no Jinja, no path or control characters.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_project_is_the_plain_name() {
        assert_eq!(
            project_name(b"name: jaffle_shop\nprofile: jaffle\n").as_deref(),
            Some("jaffle_shop")
        );
        assert_eq!(project_name(b"name: \"{{ env_var('X') }}\""), None);
        assert_eq!(project_name(b"profile: x"), None);
        assert_eq!(project_name(b"[not: yaml"), None);
        assert_eq!(project_name(b"name: a/b"), None);
    }

    #[test]
    fn a_manifest_names_its_project() {
        let m = br#"{"metadata": {"project_name": "shop", "dbt_version": "1.11"}, "nodes": {}}"#;
        assert_eq!(manifest_project_name(m).as_deref(), Some("shop"));
        assert_eq!(manifest_project_name(br#"{"metadata": {}}"#), None);
        assert_eq!(manifest_project_name(b"nope"), None);
    }

    #[test]
    fn the_target_flag_wins_last() {
        assert_eq!(
            target_from_args(&args(&["build", "--target", "prod"])).as_deref(),
            Some("prod")
        );
        assert_eq!(
            target_from_args(&args(&["build", "-t", "a", "--target=b"])).as_deref(),
            Some("b")
        );
        assert_eq!(target_from_args(&args(&["build", "--select", "t"])), None);
        assert_eq!(target_from_args(&args(&["build", "--target"])), None);
        assert_eq!(target_from_args(&args(&["build", "-t", "../x"])), None);
    }

    #[test]
    fn the_default_target_comes_from_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let profiles = dir.path().join("profiles");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&profiles).unwrap();
        std::fs::write(work.join(PROJECT_FILE), "name: p\nprofile: jaffle\n").unwrap();
        std::fs::write(
            profiles.join(PROFILES_YML),
            "jaffle:\n  target: dev\n  outputs: {}\nother:\n  target: \"{{ env_var('T') }}\"\n",
        )
        .unwrap();
        let target = |a: &[&str]| default_target(&args(a), &work, &profiles);
        assert_eq!(target(&["build"]).as_deref(), Some("dev"));
        assert_eq!(target(&["build", "--profile", "other"]), None);
        assert_eq!(target(&["build", "--profile", "missing"]), None);
        assert_eq!(default_target(&args(&["build"]), &work, dir.path()), None);
    }
}
