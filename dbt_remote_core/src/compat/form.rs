//! The `POST /dbt` and `POST /schedule` forms of the 0.4.6 protocol, checked and turned into a
//! native [`JobSpec`] (a [`JobMode::Manifest`] job) with the content of its files.

use bytes::Bytes;
use serde_yaml_ng::Value;

use super::unzip::unzip;
use crate::blob::BlobHash;
use crate::job::{split_command, FileEntry, JobMode, JobSpec, MANIFEST_FILE, PROFILES_FILE};
use crate::limits::ZipLimits;
use crate::paths::RelPath;
use crate::{Error, Result};

/// The fields of a `POST /dbt` or `POST /schedule` form. The client's `server_url` field is
/// not kept: links are built from the server's own configured URL.
#[derive(Debug, Default, Clone)]
pub struct LegacyForm {
    pub user_command: Option<String>,
    /// `dbt_native_params_overrides`: a Python dict literal, read as YAML.
    pub overrides: Option<String>,
    pub dbt_project: Option<Bytes>,
    pub profiles: Option<Bytes>,
    pub packages: Option<Bytes>,
    /// A zip with `manifest.json` and `seeds/<name>.csv`.
    pub zipped_artifacts: Option<Bytes>,
    /// `POST /schedule` only: a five-field cron expression.
    pub schedule: Option<String>,
    /// `POST /schedule` only.
    pub schedule_name: Option<String>,
}

impl LegacyForm {
    /// Stores one form field. Text fields must be UTF-8; a known field given twice is
    /// refused; unknown fields (`server_url` among them) are ignored.
    pub fn set(&mut self, name: &str, value: Bytes) -> Result<()> {
        let text = |value: Bytes| {
            String::from_utf8(value.to_vec())
                .map_err(|_| Error::invalid(format!("form field {name} is not UTF-8 text")))
        };
        match name {
            "user_command" => set_once(&mut self.user_command, name, text(value)?),
            "dbt_native_params_overrides" => set_once(&mut self.overrides, name, text(value)?),
            "schedule" => set_once(&mut self.schedule, name, text(value)?),
            "schedule_name" => {
                set_once(&mut self.schedule_name, name, text(value)?)?;
                self.schedule_name = self.schedule_name.take().filter(|s| !s.is_empty());
                Ok(())
            }
            "dbt_project" => set_once(&mut self.dbt_project, name, value),
            "profiles" => set_once(&mut self.profiles, name, value),
            "packages" => set_once(&mut self.packages, name, value),
            "zipped_artifacts" => set_once(&mut self.zipped_artifacts, name, value),
            _ => Ok(()),
        }
    }
}

/// Sets `field` to `value` unless it was set before.
fn set_once<T>(field: &mut Option<T>, name: &str, value: T) -> Result<()> {
    if field.is_some() {
        return Err(Error::invalid(format!("form field {name} is given twice")));
    }
    *field = Some(value);
    Ok(())
}

/// How the server treats 0.4.6 requests.
#[derive(Debug, Clone, Copy)]
pub struct LegacyPolicy {
    /// Use the `profiles` the client sends; otherwise they are dropped and the server's own
    /// profiles are used.
    pub accept_client_profiles: bool,
    /// What the `zipped_artifacts` zip may hold.
    pub zip: ZipLimits,
}

/// A job read from a form: its spec, the content of its files, and notes for its log.
#[derive(Debug, Clone)]
pub struct LegacyJob {
    pub spec: JobSpec,
    pub blobs: Vec<Bytes>,
    pub notes: Vec<String>,
    /// The `user_command` as sent.
    pub command: String,
}

/// Checks a form and turns it into a manifest job; the error says which field is wrong.
pub fn legacy_job(form: &LegacyForm, policy: &LegacyPolicy) -> Result<LegacyJob> {
    let command = required(&form.user_command, "user_command")?
        .trim()
        .to_string();
    let mut args =
        split_command(&command).map_err(|e| Error::invalid(format!("user_command: {e}")))?;
    let overrides = match &form.overrides {
        Some(text) => override_args(text, &args)?,
        None => ReadOverrides::default(),
    };
    args.extend(overrides.flags);
    let notes = overrides.notes;

    let mut files: Vec<(String, Bytes)> = Vec::new();
    let project = required(&form.dbt_project, "dbt_project")?;
    yaml_field(project, "dbt_project")?;
    files.push(("dbt_project.yml".into(), project.clone()));
    if let Some(packages) = &form.packages {
        yaml_field(packages, "packages")?;
        files.push(("packages.yml".into(), packages.clone()));
    }
    let client_profiles = policy.accept_client_profiles && form.profiles.is_some();
    if let Some(profiles) = form.profiles.as_ref().filter(|_| client_profiles) {
        yaml_field(profiles, "profiles")?;
        files.push((PROFILES_FILE.into(), profiles.clone()));
    }
    let zip = required(&form.zipped_artifacts, "zipped_artifacts")?;
    files.extend(unzip(zip, &policy.zip)?);
    if !files.iter().any(|(path, _)| path == MANIFEST_FILE) {
        return Err(Error::invalid(format!(
            "zipped_artifacts has no {MANIFEST_FILE} at its root"
        )));
    }

    let mut entries = Vec::with_capacity(files.len());
    let mut blobs = Vec::with_capacity(files.len());
    for (path, content) in files {
        entries.push(FileEntry {
            path: RelPath::new(path)?,
            sha256: BlobHash::of(&content),
        });
        blobs.push(content);
    }
    let spec = JobSpec {
        args,
        files: entries,
        mode: JobMode::Manifest,
        client_profiles,
        elementary: overrides.elementary,
        environment: None,
        state_of: None,
    };
    spec.validate()?;
    Ok(LegacyJob {
        spec,
        blobs,
        notes,
        command,
    })
}

fn required<'a, T>(field: &'a Option<T>, name: &str) -> Result<&'a T> {
    field
        .as_ref()
        .ok_or_else(|| Error::invalid(format!("form field {name} is missing")))
}

fn yaml_field(content: &[u8], name: &str) -> Result<()> {
    serde_yaml_ng::from_slice::<Value>(content)
        .map(drop)
        .map_err(|e| Error::invalid(format!("form field {name} is not valid YAML: {e}")))
}

/// Override keys that become dbt flags: `(key, flag)`. A `true` boolean adds the bare flag; a
/// string or number adds the flag and its value; a mapping (`vars`) adds it as JSON.
const PASSED_OVERRIDES: &[(&str, &str)] = &[
    ("target", "--target"),
    ("profile", "--profile"),
    ("full_refresh", "--full-refresh"),
    ("threads", "--threads"),
    ("vars", "--vars"),
    ("fail_fast", "--fail-fast"),
    ("warn_error", "--warn-error"),
    ("store_failures", "--store-failures"),
    ("empty", "--empty"),
    ("debug", "--debug"),
];

/// Keys the 0.4.6 CLI sends with every request that have no meaning for a job here: its own
/// options and dbt's global settings, which the server owns.
const CLIENT_OVERRIDES: &[&str] = &[
    "server_url",
    "manifest",
    "project_dir",
    "profiles_dir",
    "dbt_project",
    "extra_packages",
    "seeds_path",
    "schedule",
    "schedule_name",
    "location",
    "cache_selected_only",
    "enable_legacy_logger",
    "log_cache_events",
    "log_file_max_bytes",
    "log_format",
    "log_format_file",
    "log_level",
    "log_level_file",
    "log_path",
    "macro_debugging",
    "partial_parse",
    "partial_parse_file_diff",
    "populate_cache",
    "print",
    "printer_width",
    "quiet",
    "send_anonymous_usage_stats",
    "single_threaded",
    "static_parser",
    "use_colors",
    "use_colors_file",
    "use_experimental_parser",
    "version_check",
    "write_json",
    "introspect",
    "indirect_selection",
    "target_path",
];

/// The override key that asks for an Elementary report after the job (the original ran
/// `edr report` after dbt when it was `True`).
const ELEMENTARY_OVERRIDE: &str = "elementary";

/// What a form's overrides ask for.
#[derive(Debug, Default, PartialEq, Eq)]
struct ReadOverrides {
    /// dbt flags.
    flags: Vec<String>,
    /// A note for each key that was not used.
    notes: Vec<String>,
    /// `elementary: True`: an Elementary report after the job ([`JobSpec::elementary`]).
    elementary: bool,
}

/// dbt flags for the overrides in `text` (a Python dict literal, read as YAML), skipping those
/// `command` already sets; a note for each key that was not used; and whether `elementary` is
/// on.
fn override_args(text: &str, command: &[String]) -> Result<ReadOverrides> {
    let invalid = |why: String| {
        Error::invalid(format!(
            "dbt_native_params_overrides is not a mapping of parameters ({why})"
        ))
    };
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let map = match value {
        Value::Mapping(map) => map,
        Value::Null => return Ok(ReadOverrides::default()),
        _ => return Err(invalid("not a dict".into())),
    };
    let mut args = Vec::new();
    let mut notes = Vec::new();
    let mut elementary = false;
    for (key, value) in map {
        let Value::String(key) = key else {
            return Err(invalid("a key is not a string".into()));
        };
        if key == ELEMENTARY_OVERRIDE {
            elementary = is_on(&value);
            continue;
        }
        let Some((_, flag)) = PASSED_OVERRIDES.iter().find(|(k, _)| *k == key) else {
            if !CLIENT_OVERRIDES.contains(&key.as_str()) && !is_unset(&value) {
                notes.push(format!(
                    "dbt-remote: parameter {key} of the request is not supported here and was ignored"
                ));
            }
            continue;
        };
        let set_by_command = command
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
        if set_by_command {
            continue;
        }
        match value {
            Value::Bool(true) => args.push(flag.to_string()),
            Value::Bool(false) | Value::Null => {}
            Value::String(s) if s == "None" => {}
            Value::String(s) => args.extend([flag.to_string(), s]),
            Value::Number(n) => args.extend([flag.to_string(), n.to_string()]),
            Value::Mapping(_) => {
                let json =
                    serde_json::to_string(&value).map_err(|e| invalid(format!("{key}: {e}")))?;
                args.extend([flag.to_string(), json]);
            }
            _ => return Err(invalid(format!("{key} has a value of an unsupported kind"))),
        }
    }
    Ok(ReadOverrides {
        flags: args,
        notes,
        elementary,
    })
}

/// Whether an override value says "on": `True`, or the text `True` (the original compared
/// the value it received with `'True'`).
fn is_on(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// Whether an override value says "not set" (Python's `None`, `False`, empty).
fn is_unset(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty() || s == "None",
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const CAPTURED_OVERRIDES: &str = "{'cache_selected_only': False, 'debug': False, 'enable_legacy_logger': False, 'fail_fast': False, 'log_cache_events': False, 'log_file_max_bytes': 10485760, 'log_format_file': 'debug', 'log_level': 'info', 'log_level_file': 'debug', 'macro_debugging': False, 'partial_parse': True, 'partial_parse_file_diff': True, 'populate_cache': True, 'print': True, 'printer_width': 80, 'quiet': False, 'send_anonymous_usage_stats': True, 'single_threaded': False, 'static_parser': True, 'use_colors': True, 'use_colors_file': True, 'use_experimental_parser': False, 'version_check': True, 'write_json': True, 'log_format': 'default', 'server_url': 'http://127.0.0.1:18081/', 'manifest': 'target'}";

    fn args(command: &str, overrides: &str) -> (Vec<String>, Vec<String>) {
        let command = shlex::split(command).unwrap();
        let read = override_args(overrides, &command).unwrap();
        (read.flags, read.notes)
    }

    #[test]
    fn the_elementary_override_asks_for_a_report_and_adds_no_flag() {
        for (value, on) in [
            ("True", true),
            ("'True'", true),
            ("False", false),
            ("None", false),
        ] {
            let read = override_args(&format!("{{'elementary': {value}}}"), &[]).unwrap();
            assert_eq!(read.elementary, on, "elementary: {value}");
            assert!(read.flags.is_empty() && read.notes.is_empty(), "{read:?}");
        }
        assert!(!override_args(CAPTURED_OVERRIDES, &[]).unwrap().elementary);
    }

    #[test]
    fn the_captured_overrides_add_nothing() {
        assert_eq!(args("build", CAPTURED_OVERRIDES), (vec![], vec![]));
    }

    #[test]
    fn target_full_refresh_and_vars_reach_dbt() {
        let with = CAPTURED_OVERRIDES.replace(
            "'manifest': 'target'",
            "'manifest': 'target', 'target': 'dev', 'full_refresh': True, 'vars': {'a': 1}, 'threads': 4",
        );
        let (flags, notes) = args("run --select x", &with);
        assert_eq!(
            flags,
            [
                "--target",
                "dev",
                "--full-refresh",
                "--vars",
                r#"{"a":1}"#,
                "--threads",
                "4"
            ]
        );
        assert!(notes.is_empty());
    }

    #[test]
    fn the_command_wins_over_an_override() {
        let (flags, _) = args("run --target prod", "{'target': 'dev'}");
        assert!(flags.is_empty());
    }

    #[test]
    fn unknown_parameters_are_noted() {
        let (flags, notes) = args("run", "{'frobnicate': 3, 'other': None}");
        assert!(flags.is_empty());
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("frobnicate"), "{notes:?}");
    }

    #[test]
    fn non_mapping_overrides_are_refused() {
        for bad in [
            "[1, 2]",
            "{'a': ",
            "'text'",
            "{1: 2}",
            "{'target': ('a', 'b')}",
        ] {
            let err = override_args(bad, &[]).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{bad}: {err:?}");
        }
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Bytes {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut out);
        for (name, content) in entries {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            w.start_file(*name, options).unwrap();
            w.write_all(content).unwrap();
        }
        w.finish().unwrap();
        Bytes::from(out.into_inner())
    }

    fn form(zip: Bytes) -> LegacyForm {
        LegacyForm {
            user_command: Some("build --select orders".into()),
            overrides: Some("{'target': 'dev'}".into()),
            dbt_project: Some(Bytes::from_static(b"name: p\nprofile: p\n")),
            profiles: Some(Bytes::from_static(b"p: {target: dev}\n")),
            zipped_artifacts: Some(zip),
            ..Default::default()
        }
    }

    const POLICY: LegacyPolicy = LegacyPolicy {
        accept_client_profiles: false,
        zip: ZipLimits {
            max_entries: 100,
            max_unzipped_bytes: 1 << 20,
        },
    };

    #[test]
    fn the_elementary_override_makes_a_job_with_a_report() {
        let zip = zip_of(&[("manifest.json", b"{}")]);
        let mut with = form(zip.clone());
        with.overrides = Some("{'target': 'dev', 'elementary': True}".into());
        let job = legacy_job(&with, &POLICY).unwrap();
        assert!(job.spec.elementary);
        assert_eq!(
            job.spec.args,
            ["build", "--select", "orders", "--target", "dev"]
        );
        assert!(job.notes.is_empty(), "{:?}", job.notes);
        assert!(!legacy_job(&form(zip), &POLICY).unwrap().spec.elementary);
    }

    #[test]
    fn a_form_becomes_a_manifest_job() {
        let zip = zip_of(&[("manifest.json", b"{}"), ("seeds/a.csv", b"x\n1\n")]);
        let job = legacy_job(&form(zip), &POLICY).unwrap();
        assert_eq!(job.spec.mode, JobMode::Manifest);
        assert_eq!(
            job.spec.args,
            ["build", "--select", "orders", "--target", "dev"]
        );
        let paths: Vec<&str> = job.spec.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["dbt_project.yml", "manifest.json", "seeds/a.csv"]);
        assert!(
            !job.spec.client_profiles,
            "client profiles are dropped by default"
        );

        let accepting = LegacyPolicy {
            accept_client_profiles: true,
            ..POLICY
        };
        let zip = zip_of(&[("manifest.json", b"{}")]);
        let job = legacy_job(&form(zip), &accepting).unwrap();
        assert!(job.spec.client_profiles);
        assert!(job
            .spec
            .files
            .iter()
            .any(|f| f.path.as_str() == "profiles.yml"));
    }

    #[test]
    fn bad_zips_are_refused() {
        let cases: Vec<Bytes> = vec![
            Bytes::from_static(b"not a zip"),
            zip_of(&[("../evil.json", b"{}"), ("manifest.json", b"{}")]),
            zip_of(&[("/etc/passwd", b"x"), ("manifest.json", b"{}")]),
            zip_of(&[("seeds/a.csv", b"x")]),
            zip_of(&[("manifest.json", &vec![b' '; 2 << 20])]),
        ];
        for (i, zip) in cases.into_iter().enumerate() {
            let err = legacy_job(&form(zip), &POLICY).unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput(_) | Error::TooLarge { .. }),
                "case {i}: {err:?}"
            );
        }
    }

    #[test]
    fn bad_commands_and_fields_are_refused() {
        let zip = || zip_of(&[("manifest.json", b"{}")]);
        let mut f = form(zip());
        f.user_command = Some("rm -rf /".into());
        assert!(legacy_job(&f, &POLICY).is_err());
        let mut f = form(zip());
        f.user_command = Some("build --profiles-dir /etc".into());
        assert!(legacy_job(&f, &POLICY).is_err());
        let mut f = form(zip());
        f.dbt_project = Some(Bytes::from_static(b"a: [unclosed"));
        assert!(legacy_job(&f, &POLICY).is_err());
        let mut f = form(zip());
        f.zipped_artifacts = None;
        assert!(legacy_job(&f, &POLICY).is_err());
    }
}
