//! The partial-parse cache: dbt's `target/partial_parse.msgpack` kept in the store
//! ([`CacheKind::PartialParse`]), so that a job in a fresh work dir lets dbt parse only the
//! files that changed since the last job with the same key.
//!
//! The key is a SHA-256 over what dbt's partial parsing depends on that dbt-remote can see:
//! the project's name, the profile and target, the profiles.yml used, the job's `--vars`, the
//! dbt installation and the environment dbt gets. dbt checks all of it again inside the file
//! (and every file's checksum), so a key that matches too often only costs a full parse.
//! Nothing here ever fails a job: a cache that cannot be read or written is a warning.
//!
//! dbt keeps absolute paths in the file (each node's `root_path`: seeds are loaded from it),
//! and each job has its own work dir: the state is stored with its work dir replaced by a
//! marker, and restored with the marker replaced by the new work dir ([`relocate`]), so an
//! unchanged seed is read from the new job's folder, never from a previous job's.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::cache_key::{self, KeyHasher};
use super::{Outcome, Runner, TARGET_DIR};
use crate::containment::PROJECT_FILE;
use crate::job::{JobMode, JobRecord};
use crate::log::LogLevel;
use crate::state::{CacheKey, CacheKind};

/// dbt's partial parse state, in its target dir.
const STATE_FILE: &str = "partial_parse.msgpack";
/// What stands for the job's work dir in a stored parse state.
const WORK_DIR_MARK: &str = "\u{1}dbt-remote:work-dir\u{1}";
/// Commands that do not parse the project.
const NO_PARSE: &[&str] = &["deps", "debug", "clean", "init"];

/// The partial parse state of one job: its key and what was in the work dir before dbt ran.
pub(super) struct ParseCache {
    key: CacheKey,
    path: PathBuf,
    /// The state file's content before dbt ran (restored from the cache, or none).
    before: Option<Bytes>,
}

impl ParseCache {
    /// Restores the cached state of `job` into its work dir, when the job's command parses
    /// and the cache is on; `None` when the job does not use the cache.
    pub(super) async fn restore(
        runner: &Runner<'_>,
        job: &JobRecord,
        profiles: Option<&Path>,
    ) -> Option<ParseCache> {
        let command = job.spec.command()?;
        let word = command.split(' ').next().unwrap_or(command);
        if !runner.config.parse_cache
            || job.spec.mode != JobMode::Project
            || NO_PARSE.contains(&word)
        {
            return None;
        }
        let profiles_dir = runner.profiles_dir(profiles);
        let key = CacheKey::new(
            CacheKind::PartialParse,
            key(runner, &job.spec.args, profiles_dir.as_deref()),
        );
        let path = runner.work_dir.join(TARGET_DIR).join(STATE_FILE);
        let mut cache = ParseCache {
            key,
            path,
            before: None,
        };
        let work_dir = runner.work_dir.to_string_lossy();
        let cached = runner.store.get_cache(&key).await.map(|state| {
            // A state that cannot be relocated is not used: dbt then parses everything.
            state.and_then(|s| relocate(&s, WORK_DIR_MARK, &work_dir).map(Bytes::from))
        });
        match cached {
            Ok(Some(state)) => match write(&cache.path, &state).await {
                Ok(()) => {
                    cache.before = Some(state);
                    runner
                        .note(
                            LogLevel::Info,
                            "dbt-remote: restored dbt's partial parse state",
                        )
                        .await;
                }
                Err(e) => tracing::warn!(job = %runner.id, "restoring {}: {e}", cache.key),
            },
            Ok(None) => {}
            Err(e) => {
                runner
                    .note(
                        LogLevel::Warn,
                        format!("dbt-remote: the partial parse cache cannot be read: {e}"),
                    )
                    .await;
            }
        }
        Some(cache)
    }

    /// Stores the state dbt left, when dbt ran to an exit code and the state changed.
    pub(super) async fn save(&self, runner: &Runner<'_>, outcome: &Outcome) {
        if !matches!(outcome, Outcome::Exited(_)) {
            return;
        }
        let Ok(state) = tokio::fs::read(&self.path).await else {
            return;
        };
        if self.before.as_deref() == Some(state.as_slice()) {
            return;
        }
        let Some(state) = relocate(&state, &runner.work_dir.to_string_lossy(), WORK_DIR_MARK)
        else {
            tracing::warn!(job = %runner.id, "dbt's partial parse state is not msgpack: not kept");
            return;
        };
        if let Err(e) = runner.store.put_cache(&self.key, Bytes::from(state)).await {
            tracing::warn!(job = %runner.id, "storing {}: {e}", self.key);
        }
    }
}

/// Writes `content` at `path`, creating its folder.
/// The msgpack document `state` with `from` replaced by `to` in every string (map keys too);
/// `None` when `state` is not one whole msgpack value.
fn relocate(state: &[u8], from: &str, to: &str) -> Option<Vec<u8>> {
    fn walk(value: &mut rmpv::Value, from: &str, to: &str) {
        match value {
            rmpv::Value::String(s) => {
                if let Some(text) = s.as_str().filter(|t| t.contains(from)) {
                    *s = text.replace(from, to).into();
                }
            }
            rmpv::Value::Array(items) => items.iter_mut().for_each(|v| walk(v, from, to)),
            rmpv::Value::Map(pairs) => {
                for (k, v) in pairs {
                    walk(k, from, to);
                    walk(v, from, to);
                }
            }
            _ => {}
        }
    }
    if from.is_empty() {
        return None;
    }
    let mut input = state;
    let mut value = rmpv::decode::read_value(&mut input).ok()?;
    if !input.is_empty() {
        return None;
    }
    walk(&mut value, from, to);
    let mut out = Vec::with_capacity(state.len());
    rmpv::encode::write_value(&mut out, &value).ok()?;
    Some(out)
}

async fn write(path: &Path, content: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::write(path, content).await
}

/// The key's hash for dbt arguments `args`, profiles in `profiles_dir`.
fn key(runner: &Runner<'_>, args: &[String], profiles_dir: Option<&Path>) -> [u8; 32] {
    let project = std::fs::read(runner.work_dir.join(PROJECT_FILE)).ok();
    let name = project.as_deref().and_then(crate::project::project_name);
    let profile = crate::project::profile_from_args(args)
        .or_else(|| project.as_deref().and_then(crate::project::project_profile));
    let target = crate::project::target_from_args(args).or_else(|| {
        profiles_dir.and_then(|dir| crate::project::default_target(args, runner.work_dir, dir))
    });
    let mut h = KeyHasher::new(CacheKind::PartialParse.as_str());
    h.field("project", name.as_deref().map(str::as_bytes))
        .field("profile", profile.as_deref().map(str::as_bytes))
        .field("target", target.as_deref().map(str::as_bytes))
        .field("vars", vars(args).map(str::as_bytes))
        .field(
            "dbt",
            Some(&cache_key::installation(&runner.config.dbt_path)),
        );
    match profiles_dir {
        Some(dir) => h.file("profiles.yml", &dir.join("profiles.yml")),
        None => h.field("profiles.yml", None),
    };
    h.dbt_env(&runner.config.job_env);
    h.finish()
}

/// The text of the last `--vars` of dbt's arguments (`--vars X` or `--vars=X`).
fn vars(args: &[String]) -> Option<&str> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--vars" {
            found = it.next().map(String::as_str);
        } else if let Some(v) = arg.strip_prefix("--vars=") {
            found = Some(v);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::job::JobId;
    use crate::runner::RunnerConfig;
    use crate::state::{MemoryStore, StateStore};

    #[test]
    fn the_key_changes_with_each_input() {
        let dir = tempfile::tempdir().unwrap();
        let (work, profiles) = (dir.path().join("work"), dir.path().join("profiles"));
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&profiles).unwrap();
        let project = |name: &str| {
            let yml = format!("name: {name}\nprofile: jaffle\n");
            std::fs::write(work.join(PROJECT_FILE), yml).unwrap();
        };
        let profiles_yml = |threads: u32| {
            let yml = format!(
                "jaffle:\n  target: dev\n  outputs:\n    dev: {{type: duckdb, threads: {threads}}}\n"
            );
            std::fs::write(profiles.join("profiles.yml"), yml).unwrap();
        };
        project("shop");
        profiles_yml(1);
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let cancel = CancellationToken::new();
        let key_with = |config: &RunnerConfig, args: &[&str]| {
            let runner = Runner {
                store: &store,
                id: JobId::new(),
                config,
                cancel: &cancel,
                work_dir: &work,
            };
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            key(&runner, &args, Some(&profiles))
        };
        let config = RunnerConfig::new(dir.path().join("work-root"));
        let key = |args: &[&str]| key_with(&config, args);
        let base = key(&["parse"]);
        assert_eq!(
            base,
            key(&["build", "--select", "x"]),
            "other flags do not count"
        );
        assert_eq!(
            base,
            key(&["parse", "--target", "dev"]),
            "the default target, named"
        );
        let mut seen = vec![base];
        let mut differs = |k: [u8; 32], what: &str| {
            assert!(!seen.contains(&k), "{what} changes the key");
            seen.push(k);
        };
        differs(key(&["parse", "--target", "prod"]), "the target");
        differs(key(&["parse", "--profile", "other"]), "the profile");
        differs(key(&["parse", "--vars", "{a: 1}"]), "--vars");
        let mut other_dbt = RunnerConfig::new(dir.path().join("work-root"));
        other_dbt.dbt_path = dir.path().join("venv2/bin/dbt");
        differs(key_with(&other_dbt, &["parse"]), "the dbt installation");
        profiles_yml(2);
        differs(key(&["parse"]), "profiles.yml");
        profiles_yml(1);
        project("other_shop");
        differs(key(&["parse"]), "the project name");
        project("shop");
        assert_eq!(key(&["parse"]), base, "the same inputs, the same key");
    }

    #[test]
    fn a_parse_state_moves_from_one_work_dir_to_another() {
        use rmpv::Value;
        let old = "/srv/work/0190-a";
        let state = Value::Map(vec![
            (
                Value::from("nodes"),
                Value::Map(vec![(
                    Value::from("seed.p.raw"),
                    Value::Map(vec![
                        (Value::from("root_path"), Value::from(old)),
                        (
                            Value::from("original_file_path"),
                            Value::from("seeds/raw.csv"),
                        ),
                        (Value::from("size"), Value::from(12u64)),
                        (
                            Value::from("checksum"),
                            Value::Binary(vec![0, 159, 146, 150]),
                        ),
                    ]),
                )]),
            ),
            (
                Value::from(format!("{old}/dbt_packages/utils")),
                Value::Array(vec![
                    Value::from(format!("{old}/dbt_packages/utils/macros")),
                    Value::F64(1.5),
                ]),
            ),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &state).unwrap();

        let stored = relocate(&bytes, old, WORK_DIR_MARK).unwrap();
        let text = String::from_utf8_lossy(&stored);
        assert!(
            !text.contains(old),
            "the old work dir is still in the stored state"
        );
        let new = "/srv/work/0190-b";
        let restored = relocate(&stored, WORK_DIR_MARK, new).unwrap();
        let mut moved = Vec::new();
        let expected = String::from_utf8_lossy(&bytes).replace(old, new);
        rmpv::encode::write_value(
            &mut moved,
            &rmpv::decode::read_value(&mut restored.as_slice()).unwrap(),
        )
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&moved), expected);
        // Cut short, or trailing bytes: not used.
        assert!(relocate(&bytes[..bytes.len() - 3], old, new).is_none());
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        assert!(relocate(&two, old, new).is_none());
    }

    #[test]
    fn the_last_vars_flag_counts() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(vars(&a(&["run", "--vars", "{a: 1}"])), Some("{a: 1}"));
        assert_eq!(
            vars(&a(&["run", "--vars={a: 1}", "--vars", "b"])),
            Some("b")
        );
        assert_eq!(vars(&a(&["run"])), None);
    }
}
