//! The client's settings: `dbt_remote.yml`, `DBT_REMOTE_*` environment variables and flags, with
//! the precedence flag > environment > file > default. Flags (CLI options, Python arguments)
//! come in as one typed [`Overrides`]. Finding the server the settings name is
//! the job of the `connect` module, above this one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The settings file, in the folder dbt-remote runs in.
pub const CONFIG_FILE: &str = "dbt_remote.yml";

/// One setting: its key, its default, and what it is for.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub default: Option<&'static str>,
    pub help: &'static str,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Url,
    Bool,
    /// An environment name ([`crate::job::check_environment`]).
    Environment,
}

/// Every setting, in the order `config show` lists them.
pub const KEYS: &[Key] = &[
    Key {
        name: "server_url",
        default: Some("http://127.0.0.1:8001"),
        help: "URL of the dbt-server",
        kind: Kind::Url,
    },
    Key {
        name: "project_dir",
        default: Some("."),
        help: "the dbt project folder",
        kind: Kind::Text,
    },
    Key {
        name: "manifest",
        default: None,
        help: "a manifest.json sent with the job as dbt state (--state/--defer)",
        kind: Kind::Text,
    },
    Key {
        name: "dbt_project",
        default: None,
        help: "a dbt_project.yml to send instead of the project's",
        kind: Kind::Text,
    },
    Key {
        name: "extra_packages",
        default: None,
        help: "a packages.yml (or its folder) to send; the job runs dbt deps first",
        kind: Kind::Text,
    },
    Key {
        name: "seeds_path",
        default: None,
        help: "a seeds folder to send instead of the project's",
        kind: Kind::Text,
    },
    Key {
        name: "location",
        default: None,
        help: "Google Cloud region of the server (for discovery)",
        kind: Kind::Text,
    },
    Key {
        name: "creds_path",
        default: None,
        help: "a Google service-account key file; requests carry ID tokens made with it",
        kind: Kind::Text,
    },
    Key {
        name: "environment",
        default: None,
        help: "the environment jobs run for (e.g. prod, ci): jobs defer to it and retry in it",
        kind: Kind::Environment,
    },
    Key {
        name: "elementary",
        default: Some("false"),
        help: "make an Elementary report after each job (docs/elementary.md)",
        kind: Kind::Bool,
    },
];

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
    /// Found by a server locator (Cloud Run discovery); see [`Settings::with_located_server_url`].
    Located,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::File => CONFIG_FILE,
            Source::Default => "default",
            Source::Located => "Cloud Run discovery",
        })
    }
}

/// The key named `name`, or an error listing the known ones.
pub fn key(name: &str) -> Result<&'static Key> {
    KEYS.iter().find(|k| k.name == name).ok_or_else(|| {
        let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        Error::invalid(format!(
            "unknown setting {name:?}: expected one of {}",
            names.join(", ")
        ))
    })
}

/// The environment variable of a key: `DBT_REMOTE_<KEY>`.
pub fn env_var(key: &Key) -> String {
    format!("DBT_REMOTE_{}", key.name.to_uppercase())
}

/// Checks a value for `key`; returns it normalised.
pub fn check(key: &Key, value: &str) -> Result<String> {
    match key.kind {
        Kind::Text if value.is_empty() => {
            Err(Error::invalid(format!("{} cannot be empty", key.name)))
        }
        Kind::Text => Ok(value.to_string()),
        Kind::Url => {
            if value.starts_with("http://") || value.starts_with("https://") {
                Ok(value.to_string())
            } else {
                Err(Error::invalid(format!(
                    "{} must be a URL starting with http:// or https://, not {value:?}",
                    key.name
                )))
            }
        }
        Kind::Environment => crate::job::check_environment(value)
            .map(|()| value.to_string())
            .map_err(|e| Error::invalid(format!("{}: {e}", key.name))),
        Kind::Bool => match value.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok("true".into()),
            "false" | "no" | "0" | "off" => Ok("false".into()),
            _ => Err(Error::invalid(format!(
                "{} must be true or false, not {value:?}",
                key.name
            ))),
        },
    }
}

/// The settings given by the caller (CLI flags, Python arguments): each one given wins over the
/// environment, `dbt_remote.yml` and the default. Relative paths are relative to `project_dir`,
/// as everywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub server_url: Option<String>,
    pub project_dir: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
    pub dbt_project: Option<PathBuf>,
    pub extra_packages: Option<PathBuf>,
    pub seeds_path: Option<PathBuf>,
    pub location: Option<String>,
    pub creds_path: Option<PathBuf>,
    pub environment: Option<String>,
    pub elementary: Option<bool>,
}

impl Overrides {
    /// The value given for `key`, as text (checked like any other source's).
    fn value(&self, key: &Key) -> Option<String> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
        match key.name {
            "server_url" => self.server_url.clone(),
            "project_dir" => path(&self.project_dir),
            "manifest" => path(&self.manifest),
            "dbt_project" => path(&self.dbt_project),
            "extra_packages" => path(&self.extra_packages),
            "seeds_path" => path(&self.seeds_path),
            "location" => self.location.clone(),
            "creds_path" => path(&self.creds_path),
            "environment" => self.environment.clone(),
            "elementary" => self.elementary.map(|b| b.to_string()),
            other => unreachable!("setting {other} has no override"),
        }
    }
}

/// The settings file of a folder.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    values: BTreeMap<String, String>,
}

impl ConfigFile {
    /// Reads `<dir>/dbt_remote.yml`; a missing file has no values. A file with unknown keys or
    /// bad values is an error that names them.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(Error::invalid(format!(
                    "{} cannot be read: {e}",
                    path.display()
                )))
            }
        };
        let raw: Option<BTreeMap<String, serde_yaml_ng::Value>> = serde_yaml_ng::from_str(&text)
            .map_err(|e| Error::invalid(format!("{} is not a YAML map: {e}", path.display())))?;
        let mut values = BTreeMap::new();
        for (name, value) in raw.unwrap_or_default() {
            let key = key(&name).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
            let text = match value {
                serde_yaml_ng::Value::Null => continue,
                serde_yaml_ng::Value::String(s) => s,
                serde_yaml_ng::Value::Bool(b) => b.to_string(),
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                _ => {
                    return Err(Error::invalid(format!(
                        "{}: {name} must be a single value",
                        path.display()
                    )))
                }
            };
            let value = check(key, &text)
                .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
            values.insert(name, value);
        }
        Ok(ConfigFile { path, values })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Sets `name` to `value` (checked). Call [`save`](Self::save) to write.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let key = key(name)?;
        self.values.insert(name.to_string(), check(key, value)?);
        Ok(())
    }

    /// Removes `name`; false if it was not set.
    pub fn delete(&mut self, name: &str) -> Result<bool> {
        key(name)?;
        Ok(self.values.remove(name).is_some())
    }

    /// Sets every key that has a default and is not set yet.
    pub fn set_defaults(&mut self) {
        for key in KEYS {
            if let Some(default) = key.default {
                self.values
                    .entry(key.name.to_string())
                    .or_insert_with(|| default.to_string());
            }
        }
    }

    /// Writes the file (keys in `KEYS` order, with their help as comments).
    pub fn save(&self) -> Result<()> {
        let mut text = String::from("# dbt-remote settings (dbt-remote config --help)\n");
        for key in KEYS {
            if let Some(value) = self.values.get(key.name) {
                let quoted = serde_yaml_ng::to_string(value).unwrap_or_default();
                text.push_str(&format!("# {}\n{}: {}", key.help, key.name, quoted));
            }
        }
        std::fs::write(&self.path, text)
            .map_err(|e| Error::invalid(format!("{} cannot be written: {e}", self.path.display())))
    }
}

/// The settings in force: each key's value and where it came from.
#[derive(Debug, Clone)]
pub struct Settings {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl Settings {
    /// Resolves every key: `flags` (given by the user) > `env` > `file` > default.
    /// Bad values from any source are errors naming the source.
    pub fn resolve(
        flags: &Overrides,
        env: impl Fn(&str) -> Option<String>,
        file: &ConfigFile,
    ) -> Result<Self> {
        let mut values = BTreeMap::new();
        for key in KEYS {
            let var = env_var(key);
            let found = if let Some(v) = flags.value(key) {
                Some((v, Source::Flag))
            } else if let Some(v) = env(&var).filter(|v| !v.is_empty()) {
                Some((v, Source::Env))
            } else if let Some(v) = file.get(key.name) {
                Some((v.to_string(), Source::File))
            } else {
                key.default.map(|d| (d.to_string(), Source::Default))
            };
            if let Some((value, source)) = found {
                let value = check(key, &value).map_err(|e| match source {
                    Source::Env => Error::invalid(format!("{var}: {e}")),
                    _ => e,
                })?;
                values.insert(key.name, (value, source));
            }
        }
        Ok(Settings { values })
    }

    /// The settings a client sees: `flags` > `DBT_REMOTE_*` variables > `dbt_remote.yml` in
    /// `dir` > defaults.
    pub fn load(flags: &Overrides, dir: &Path) -> Result<Self> {
        let file = ConfigFile::load(dir)?;
        Settings::resolve(flags, |var| std::env::var(var).ok(), &file)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|(v, _)| v.as_str())
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }

    /// The server's URL (before any discovery: `connect::locate` finds the server).
    pub fn server_url(&self) -> &str {
        self.get("server_url").unwrap_or_default()
    }

    /// Whether `server_url` was given (flag, environment or `dbt_remote.yml`), not the default.
    pub fn server_url_given(&self) -> bool {
        !matches!(self.source("server_url"), None | Some(Source::Default))
    }

    /// The Google Cloud region of the server (for discovery).
    pub fn location(&self) -> Option<&str> {
        self.get("location")
    }

    /// The service-account key file the requests' ID tokens are made with.
    pub fn creds_path(&self) -> Option<PathBuf> {
        self.path("creds_path")
    }

    /// The environment jobs run for (`--environment`, `DBT_REMOTE_ENVIRONMENT`, `environment`).
    pub fn environment(&self) -> Option<&str> {
        self.get("environment")
    }

    /// Whether jobs make an Elementary report after dbt (`--elementary`, `elementary`).
    pub fn elementary(&self) -> bool {
        self.get("elementary") == Some("true")
    }

    /// These settings with the server's URL as a locator found it: `url` replaces
    /// `server_url` (source [`Source::Located`]) unless it is the same URL.
    pub fn with_located_server_url(mut self, url: String) -> Self {
        if self.get("server_url").map(|u| u.trim_end_matches('/')) != Some(url.as_str()) {
            self.values.insert("server_url", (url, Source::Located));
        }
        self
    }

    /// What a job sends, from these settings.
    pub fn job_files(&self) -> crate::package::JobFiles {
        crate::package::JobFiles {
            project_dir: self.path("project_dir").unwrap_or_else(|| ".".into()),
            dbt_project: self.path("dbt_project"),
            extra_packages: self.path("extra_packages"),
            seeds_path: self.path("seeds_path"),
            manifest: self.path("manifest"),
        }
    }

    pub fn source(&self, name: &str) -> Option<Source> {
        self.values.get(name).map(|(_, s)| *s)
    }

    /// `(key, value, source)` of every key that has a value, in `KEYS` order.
    pub fn entries(&self) -> Vec<(&'static str, &str, Source)> {
        KEYS.iter()
            .filter_map(|k| {
                self.values
                    .get(k.name)
                    .map(|(v, s)| (k.name, v.as_str(), *s))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_flag_env_file_default() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = ConfigFile::load(dir.path()).unwrap();
        file.set("server_url", "http://file:1").unwrap();
        file.set("location", "europe-west1").unwrap();
        file.set("manifest", "target/manifest.json").unwrap();
        file.save().unwrap();
        let file = ConfigFile::load(dir.path()).unwrap();
        let env = |var: &str| match var {
            "DBT_REMOTE_SERVER_URL" => Some("http://env:2".to_string()),
            "DBT_REMOTE_LOCATION" => Some("us-central1".to_string()),
            _ => None,
        };
        let flags = Overrides {
            server_url: Some("http://flag:3".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&flags, env, &file).unwrap();
        assert_eq!(s.get("server_url"), Some("http://flag:3"));
        assert_eq!(s.source("server_url"), Some(Source::Flag));
        assert_eq!(s.get("location"), Some("us-central1"));
        assert_eq!(s.source("location"), Some(Source::Env));
        assert_eq!(s.get("manifest"), Some("target/manifest.json"));
        assert_eq!(s.source("manifest"), Some(Source::File));
        assert_eq!(s.get("project_dir"), Some("."));
        assert_eq!(s.source("project_dir"), Some(Source::Default));
        assert_eq!(s.get("creds_path"), None);
    }

    #[test]
    fn bad_keys_and_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = ConfigFile::load(dir.path()).unwrap();
        assert!(file
            .set("colour", "blue")
            .unwrap_err()
            .to_string()
            .contains("unknown setting"));
        assert!(file.set("server_url", "localhost").is_err());
        assert!(file.set("elementary", "maybe").is_err());
        file.set("elementary", "YES").unwrap();
        assert_eq!(file.get("elementary"), Some("true"));
        std::fs::write(dir.path().join(CONFIG_FILE), "colour: blue\n").unwrap();
        let err = ConfigFile::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("unknown setting \"colour\""), "{err}");
        std::fs::write(dir.path().join(CONFIG_FILE), "- a list\n").unwrap();
        assert!(ConfigFile::load(dir.path()).is_err());
        let env = |_: &str| Some("ftp://x".to_string());
        let err = Settings::resolve(
            &Overrides::default(),
            env,
            &ConfigFile::load(tempfile::tempdir().unwrap().path()).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("DBT_REMOTE_SERVER_URL: "), "{err}");
    }

    #[test]
    fn every_override_is_a_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile::load(dir.path()).unwrap();
        let flags = Overrides {
            server_url: Some("http://h:1".into()),
            project_dir: Some("p".into()),
            manifest: Some("m".into()),
            dbt_project: Some("d".into()),
            extra_packages: Some("e".into()),
            seeds_path: Some("s".into()),
            location: Some("europe-west1".into()),
            creds_path: Some("c.json".into()),
            environment: Some("prod".into()),
            elementary: Some(true),
        };
        let s = Settings::resolve(&flags, |_| None, &file).unwrap();
        assert_eq!(s.environment(), Some("prod"));
        let bad = Overrides {
            environment: Some("prod/x".into()),
            ..Default::default()
        };
        assert!(Settings::resolve(&bad, |_| None, &file).is_err());
        let env = |v: &str| (v == "DBT_REMOTE_ENVIRONMENT").then(|| "ci".to_string());
        let from_env = Settings::resolve(&Overrides::default(), env, &file).unwrap();
        let s = Settings::resolve(&flags, |_| None, &file).unwrap();
        assert_eq!(
            (from_env.environment(), from_env.source("environment")),
            (Some("ci"), Some(Source::Env))
        );
        assert!(s
            .entries()
            .iter()
            .all(|(_, _, source)| *source == Source::Flag));
        assert_eq!(s.entries().len(), KEYS.len());
        assert_eq!(s.get("elementary"), Some("true"));
        assert!(s.server_url_given());
        let s = Settings::resolve(&Overrides::default(), |_| None, &file).unwrap();
        assert!(!s.server_url_given());
        assert_eq!(s.server_url(), "http://127.0.0.1:8001");
        let located = s.with_located_server_url("https://x.a.run.app".into());
        assert_eq!(located.server_url(), "https://x.a.run.app");
        assert_eq!(located.source("server_url"), Some(Source::Located));
    }

    #[test]
    fn init_writes_defaults_that_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = ConfigFile::load(dir.path()).unwrap();
        file.set_defaults();
        file.save().unwrap();
        let back = ConfigFile::load(dir.path()).unwrap();
        assert_eq!(back.get("server_url"), Some("http://127.0.0.1:8001"));
        assert_eq!(back.get("elementary"), Some("false"));
        let mut back = back;
        assert!(back.delete("elementary").unwrap());
        assert!(!back.delete("elementary").unwrap());
    }
}
