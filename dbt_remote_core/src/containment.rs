//! Job containment: the rules that keep a job's dbt inside its work dir, checked at submit on
//! what the client sent, before anything is stored.
//!
//! - A path in dbt's arguments (`--state`, `--defer-state`, `-o/--output`, …) must resolve
//!   inside the work dir ([`check_args`]); flags that exist to act outside the project, or
//!   that the server owns, are refused.
//! - The path settings of every `dbt_project.yml` (`target-path`, `model-paths`,
//!   `clean-targets`, …) and the `local:` packages of every `packages.yml` /
//!   `dependencies.yml` must resolve inside the work dir ([`check_project_file`]).
//!
//! The rules are lexical: the work dir is made of regular files only (no symlinks), so a path
//! that is relative, has no Jinja, and whose `..` never climbs above the work dir stays inside.

use serde_yaml_ng::Value;

use crate::{Error, Result};

/// Flags a job may not pass: the server owns where dbt finds its project and profiles, where
/// it writes its target and logs, and how it formats its output.
pub const SERVER_OWNED_FLAGS: &[&str] = &[
    "--profiles-dir",
    "--project-dir",
    "--log-path",
    "--target-path",
    "--log-format",
    "--log-format-file",
    "--use-colors",
    "--no-use-colors",
];

/// Flags that exist to act outside the project: refused whatever their value.
pub const OUTSIDE_FLAGS: &[&str] = &["--no-clean-project-files-only"];

/// Flags whose value is a path (dbt 1.11): it must resolve inside the work dir. `-o` is the
/// short form of `--output` (`source freshness`); the other commands' `--output` takes a
/// format name, which is a relative path too. (`--favor-state` is a switch in dbt 1.11: the
/// state it favours is the one of `--state`/`--defer-state`.)
pub const PATH_FLAGS: &[&str] = &[
    "--state",
    "--defer-state",
    "--deprecated-state",
    "--output",
    "-o",
    "--output-path",
    "--partial-parse-file-path",
    "--record-timing-info",
];

/// Project files whose path settings are checked, at any depth of the job's files.
pub const PROJECT_FILE: &str = "dbt_project.yml";
/// Package files whose `local:` entries are checked, at any depth of the job's files.
pub const PACKAGE_FILES: &[&str] = &["packages.yml", "dependencies.yml"];

/// Whether a job file at `path` (relative to the work dir) is one [`check_project_file`] reads:
/// every `dbt_project.yml`, and the packages files when the job installs packages (`dbt deps`
/// never runs otherwise, so dbt never reads them: a 0.4.6 manifest job keeps its client's
/// `packages.yml` whatever it says).
pub fn is_checked_file(path: &str, installs_packages: bool) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == PROJECT_FILE || (installs_packages && PACKAGE_FILES.contains(&name))
}

/// Checks dbt's arguments: no server-owned or outside-acting flag, and every path flag's
/// value (`--flag value`, `--flag=value`, `-ovalue`) inside the work dir. A value is also
/// checked as a flag itself, so `--state --target-path x` cannot slip a flag past the checks.
pub fn check_args(args: &[String]) -> Result<()> {
    for (i, arg) in args.iter().enumerate() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
            _ => (arg.as_str(), None),
        };
        if SERVER_OWNED_FLAGS.contains(&flag) {
            return Err(Error::invalid(format!(
                "{flag} is set by the server and cannot be passed to a job"
            )));
        }
        if OUTSIDE_FLAGS.contains(&flag) {
            return Err(Error::invalid(format!(
                "{flag} lets dbt act outside the job's work dir and cannot be passed to a job"
            )));
        }
        let value = if PATH_FLAGS.contains(&flag) {
            inline.or_else(|| args.get(i + 1).map(String::as_str))
        } else {
            // `-ovalue`: the short flag with its value attached.
            arg.strip_prefix("-o").filter(|v| !v.is_empty())
        };
        if let Some(value) = value {
            check_path(&format!("{flag} {value:?}"), "", value)?;
        }
    }
    Ok(())
}

/// Checks one job file that [`is_checked_file`] names, from its content: the path settings of a
/// `dbt_project.yml`, the `local:` entries of a `packages.yml` or `dependencies.yml`. Paths
/// resolve against the file's folder (and `local:` also against the work dir's root, as dbt
/// resolves it against the root project).
pub fn check_project_file(path: &str, content: &[u8]) -> Result<()> {
    let (folder, name) = match path.rsplit_once('/') {
        Some((folder, name)) => (folder, name),
        None => ("", path),
    };
    let yaml: Value = serde_yaml_ng::from_slice(content)
        .map_err(|e| Error::invalid(format!("{path} is not valid YAML: {e}")))?;
    if name == PROJECT_FILE {
        for (key, value) in path_settings(&yaml) {
            check_path(&format!("{path}: {key}: {value:?}"), folder, value)?;
        }
    } else {
        for local in local_packages(&yaml) {
            let what = format!("{path}: local: {local:?}");
            check_path(&what, folder, local)?;
            check_path(&what, "", local)?;
        }
    }
    Ok(())
}

/// The string values of a project's path settings: every top-level key ending in `-path` or
/// `-paths` (`target-path`, `model-paths`, `packages-install-path`, …) and `clean-targets`,
/// as a string or a list of strings.
fn path_settings(yaml: &Value) -> Vec<(&str, &str)> {
    let Some(map) = yaml.as_mapping() else {
        return vec![];
    };
    let mut out = Vec::new();
    for (key, value) in map {
        let Some(key) = key.as_str() else { continue };
        if !(key.ends_with("-path") || key.ends_with("-paths") || key == "clean-targets") {
            continue;
        }
        match value {
            Value::String(s) => out.push((key, s.as_str())),
            Value::Sequence(items) => {
                out.extend(items.iter().filter_map(Value::as_str).map(|s| (key, s)));
            }
            _ => {}
        }
    }
    out
}

/// The `local:` values of a packages file's `packages:` list.
fn local_packages(yaml: &Value) -> Vec<&str> {
    yaml.get("packages")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("local"))
        .filter_map(Value::as_str)
        .collect()
}

/// Refuses `value` unless it is a relative path without Jinja that, joined to `folder` (a
/// folder relative to the work dir), stays inside the work dir. `what` names it in the error.
fn check_path(what: &str, folder: &str, value: &str) -> Result<()> {
    match escape(folder, value) {
        None => Ok(()),
        Some(why) => Err(Error::invalid(format!(
            "{what} {why}: a job may only read and write inside its work dir"
        ))),
    }
}

/// Why `value` joined to `folder` would leave the work dir, or `None` when it stays inside.
fn escape(folder: &str, value: &str) -> Option<&'static str> {
    if value.chars().any(char::is_control) {
        return Some("contains a control character");
    }
    if value.contains("{{") || value.contains("{%") || value.contains("{#") {
        return Some("uses Jinja, which the server cannot check");
    }
    let bytes = value.as_bytes();
    if value.starts_with(['/', '\\']) || bytes.get(1) == Some(&b':') {
        return Some("is an absolute path");
    }
    if value.starts_with('~') || value.starts_with('$') {
        return Some("names a folder outside the job");
    }
    let mut depth: usize = folder.split('/').filter(|p| !p.is_empty()).count();
    for part in value.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return Some("resolves outside the job's work dir"),
            },
            _ => depth += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn paths_inside_the_work_dir_pass() {
        for (folder, value) in [
            ("", "target"),
            ("", "./state/prod"),
            ("", "a/../b"),
            ("sub", "../models"),
            ("", ""),
        ] {
            assert_eq!(escape(folder, value), None, "{folder:?} {value:?}");
        }
    }

    #[test]
    fn paths_that_leave_the_work_dir_are_refused() {
        for (folder, value) in [
            ("", "../x"),
            ("", "a/../../x"),
            ("sub", "../../x"),
            ("", "/etc"),
            ("", "\\\\host\\share"),
            ("", "C:/x"),
            ("", "~/.dbt"),
            ("", "$HOME"),
            ("", "{{ env_var('X') }}"),
            ("", "a\nb"),
        ] {
            assert!(escape(folder, value).is_some(), "{folder:?} {value:?}");
        }
    }

    #[test]
    fn path_flags_are_checked_in_every_form() {
        for ok in [
            &["build", "--state", "prod-state"][..],
            &["build", "--state=prod-state", "--defer"],
            &["source", "freshness", "-o", "target/fresh.json"],
            &["ls", "--output", "json"],
            &["run", "--vars", "{path: ../../x}"],
        ] {
            check_args(&args(ok)).unwrap();
        }
        for bad in [
            &["build", "--state", "../x"][..],
            &["build", "--defer-state=/tmp/x"],
            &["source", "freshness", "-o", "/tmp/out.json"],
            &["source", "freshness", "-o/tmp/out.json"],
            &["source", "freshness", "--output=../out.json"],
            &["clean", "--no-clean-project-files-only"],
            &["build", "--target-path", "t"],
            &["build", "--log-path=l"],
            &["build", "--profiles-dir", "/etc"],
            &["build", "--state", "--target-path", "t"],
        ] {
            let err = check_args(&args(bad)).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{bad:?}: {err:?}");
        }
    }

    #[test]
    fn project_path_settings_are_checked() {
        let ok = "name: p\ntarget-path: target\nmodel-paths: [models, more/models]\n";
        check_project_file("dbt_project.yml", ok.as_bytes()).unwrap();
        check_project_file("sub/dbt_project.yml", b"model-paths: ['../models']").unwrap();
        for bad in [
            "target-path: ../../x",
            "log-path: /var/log",
            "packages-install-path: ../pk",
            "model-paths: [models, ../../etc]",
            "clean-targets: [target, ../..]",
            "docs-paths: ['{{ env_var(\"D\") }}']",
            "asset-paths: [/]",
            ": [ not yaml",
        ] {
            let err = check_project_file("dbt_project.yml", bad.as_bytes()).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{bad}: {err:?}");
        }
        let err = check_project_file("sub/dbt_project.yml", b"seed-paths: ['../../s']");
        assert!(err.is_err());
    }

    #[test]
    fn local_packages_are_checked() {
        let ok =
            "packages:\n  - local: sub/pkg\n  - package: dbt-labs/dbt_utils\n    version: 1.0.0\n";
        check_project_file("packages.yml", ok.as_bytes()).unwrap();
        for (path, bad) in [
            ("packages.yml", "packages:\n  - local: ../outside\n"),
            ("dependencies.yml", "packages:\n  - local: /opt/pkg\n"),
            ("sub/packages.yml", "packages:\n  - local: ../x\n"),
        ] {
            let err = check_project_file(path, bad.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("local"), "{path}: {err}");
        }
        assert!(is_checked_file("a/b/dependencies.yml", true));
        assert!(!is_checked_file("packages.yml", false));
        assert!(is_checked_file("dbt_project.yml", false));
        assert!(!is_checked_file("models/schema.yml", true));
    }
}
