//! The deps cache: the `dbt_packages/` that `dbt deps` installed, zipped into the store
//! ([`CacheKind::Deps`]), so that the next job with the same package files skips `dbt deps`.
//!
//! The key is a SHA-256 over `packages.yml`, `dependencies.yml` and `package-lock.yml`
//! (each absent one a distinct marker), the dbt installation and the environment dbt gets
//! (a package file may read `env_var()`). An entry is stored right after `dbt deps` exits 0,
//! before any code of the job runs, and only when `dbt_packages/` holds nothing but folders
//! and regular files (dbt's `local:` packages are symlinks: such a tree is not cached).
//! A restored zip is not trusted: every entry must be a regular file (its unix mode says so)
//! at a relative path inside `dbt_packages/`, within the job's [`JobLimits`]. Nothing here
//! ever fails a job: a cache that cannot be used means `dbt deps` runs as without it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::cache_key::{self, KeyHasher};
use super::{Outcome, Runner};
use crate::containment::PROJECT_FILE;
use crate::job::JobMode;
use crate::limits::JobLimits;
use crate::log::LogLevel;
use crate::paths::RelPath;
use crate::state::{CacheKey, CacheKind};
use crate::{Error, Result};

/// Where `dbt deps` installs packages (dbt's default `packages-install-path`).
const PACKAGES_DIR: &str = "dbt_packages";
/// The files whose content selects the installed packages.
const KEY_FILES: &[&str] = &["packages.yml", "dependencies.yml", "package-lock.yml"];
/// The file-type bits of a unix mode, and the two types a cached tree may hold.
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;

/// Installs the project's packages: from the deps cache when it holds them, else with
/// `dbt deps` (whose result is then cached). `Some` ends the job with that outcome.
pub(super) async fn install(
    runner: &Runner<'_>,
    profiles: Option<&Path>,
) -> Result<Option<Outcome>> {
    let cache = DepsCache::for_job(runner);
    if let Some(cache) = &cache {
        if cache.restore(runner).await {
            return Ok(None);
        }
    }
    runner
        .note(LogLevel::Info, "dbt-remote: installing packages (dbt deps)")
        .await;
    match runner
        .dbt(JobMode::Project, profiles, &["deps".to_string()])
        .await?
    {
        Outcome::Exited(0) => {
            if let Some(cache) = &cache {
                cache.save(runner).await;
            }
            Ok(None)
        }
        Outcome::Exited(code) => {
            let note = format!("dbt deps failed with code {code}");
            runner.note(LogLevel::Error, note).await;
            Ok(Some(Outcome::Exited(code)))
        }
        other => Ok(Some(other)),
    }
}

/// The deps cache entry of one job.
pub(super) struct DepsCache {
    key: CacheKey,
    dir: PathBuf,
}

impl DepsCache {
    /// The job's entry, when the cache is on and the project installs into `dbt_packages/`.
    pub(super) fn for_job(runner: &Runner<'_>) -> Option<DepsCache> {
        if !runner.config.deps_cache || !default_install_path(runner.work_dir) {
            return None;
        }
        let mut h = KeyHasher::new(CacheKind::Deps.as_str());
        for file in KEY_FILES {
            h.file(file, &runner.work_dir.join(file));
        }
        h.field(
            "dbt",
            Some(&cache_key::installation(&runner.config.dbt_path)),
        );
        h.dbt_env(&runner.config.job_env);
        Some(DepsCache {
            key: CacheKey::new(CacheKind::Deps, h.finish()),
            dir: runner.work_dir.join(PACKAGES_DIR),
        })
    }

    /// Restores the cached `dbt_packages/`; `true` when it was (then `dbt deps` is skipped).
    pub(super) async fn restore(&self, runner: &Runner<'_>) -> bool {
        let zip = match runner.store.get_cache(&self.key).await {
            Ok(Some(zip)) => zip,
            Ok(None) => return false,
            Err(e) => {
                let note = format!("dbt-remote: the deps cache cannot be read: {e}");
                runner.note(LogLevel::Warn, note).await;
                return false;
            }
        };
        let (dir, limits) = (self.dir.clone(), runner.config.limits);
        let restored = tokio::task::spawn_blocking(move || {
            let done = unpack(&zip, &dir, &limits);
            if done.is_err() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            done
        })
        .await
        .map_err(|e| Error::backend("deps cache", e))
        .and_then(|r| r);
        match restored {
            Ok(()) => {
                let note =
                    "dbt-remote: restored dbt_packages from the deps cache (dbt deps skipped)";
                runner.note(LogLevel::Info, note).await;
                true
            }
            Err(e) => {
                let note = format!("dbt-remote: the deps cache entry was not used: {e}");
                runner.note(LogLevel::Warn, note).await;
                false
            }
        }
    }

    /// Stores the `dbt_packages/` that `dbt deps` just installed (call after it exited 0).
    pub(super) async fn save(&self, runner: &Runner<'_>) {
        let dir = self.dir.clone();
        let packed = tokio::task::spawn_blocking(move || pack(&dir)).await;
        match packed {
            Ok(Ok(Some(zip))) => {
                if let Err(e) = runner.store.put_cache(&self.key, Bytes::from(zip)).await {
                    tracing::warn!(job = %runner.id, "storing {}: {e}", self.key);
                }
            }
            Ok(Ok(None)) => {
                tracing::info!(job = %runner.id, "dbt_packages holds links: not cached");
            }
            Ok(Err(e)) => tracing::warn!(job = %runner.id, "packing dbt_packages: {e}"),
            Err(e) => tracing::warn!(job = %runner.id, "packing dbt_packages: {e}"),
        }
    }
}

/// Whether the project's `dbt_project.yml` leaves `packages-install-path` at `dbt_packages`.
fn default_install_path(work_dir: &Path) -> bool {
    let Ok(project) = std::fs::read(work_dir.join(PROJECT_FILE)) else {
        return true;
    };
    let Ok(yaml) = serde_yaml_ng::from_slice::<serde_yaml_ng::Value>(&project) else {
        return false;
    };
    match yaml.get("packages-install-path") {
        None => true,
        Some(v) => v
            .as_str()
            .is_some_and(|p| p.trim_end_matches('/') == PACKAGES_DIR),
    }
}

/// A zip of the files under `dir` (named relative to it); `None` when the tree holds
/// anything but folders and regular files.
pub(super) fn pack(dir: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((folder, prefix)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&folder)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Some(name) = entry.file_name().to_str().map(|n| format!("{prefix}{n}")) else {
                return Ok(None);
            };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push((entry.path(), format!("{name}/")));
            } else if kind.is_file() {
                zip.start_file(name, options)
                    .map_err(std::io::Error::other)?;
                zip.write_all(&std::fs::read(entry.path())?)?;
            } else {
                return Ok(None);
            }
        }
    }
    zip.finish().map_err(std::io::Error::other)?;
    Ok(Some(out.into_inner()))
}

/// Writes the files of `zip` under `dir` (made fresh), refusing any entry that is not a
/// regular file at a relative path inside it, and anything past `limits`.
pub(super) fn unpack(zip: &Bytes, dir: &Path, limits: &JobLimits) -> Result<()> {
    let bad = |why: String| Error::invalid(format!("deps cache entry: {why}"));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip.clone()))
        .map_err(|e| bad(format!("not a valid zip: {e}")))?;
    limits.check_files(archive.len())?;
    let mut budget = limits.bytes();
    let io = |e: std::io::Error| Error::backend("deps cache", e);
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io)?;
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| bad(format!("entry {i} cannot be read: {e}")))?;
        let name = entry.name().to_string();
        let kind = entry.unix_mode().map(|m| m & S_IFMT);
        if kind == Some(S_IFDIR) && name.ends_with('/') {
            RelPath::new(name.trim_end_matches('/')).map_err(|e| bad(e.to_string()))?;
            continue;
        }
        if kind != Some(S_IFREG) || name.ends_with('/') {
            return Err(bad(format!("{name:?} is not a regular file")));
        }
        let path = RelPath::new(name.as_str()).map_err(|e| bad(e.to_string()))?;
        let declared = entry.size();
        budget.clone().charge(declared)?;
        let mut data = Vec::new();
        entry
            .by_ref()
            .take(declared.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("{name:?} cannot be unzipped: {e}")))?;
        if data.len() as u64 != declared {
            return Err(bad(format!("{name:?} does not hold what its header says")));
        }
        budget.charge(declared)?;
        let target = path.join_to(dir);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&target, &data).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_with(add: impl FnOnce(&mut zip::ZipWriter<&mut std::io::Cursor<Vec<u8>>>)) -> Bytes {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut out);
        add(&mut w);
        w.finish().unwrap();
        Bytes::from(out.into_inner())
    }

    fn file(w: &mut zip::ZipWriter<&mut std::io::Cursor<Vec<u8>>>, name: &str, mode: u32) {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(mode);
        w.start_file(name, options).unwrap();
        w.write_all(b"x").unwrap();
    }

    fn refused(zip: Bytes) -> String {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("dbt_packages");
        let err = unpack(&zip, &out, &JobLimits::default()).unwrap_err();
        assert!(
            !dir.path().join("escaped").exists() && !Path::new("/tmp/escaped-deps").exists(),
            "nothing is written outside"
        );
        err.to_string()
    }

    #[test]
    fn a_packed_tree_unpacks_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("pkg/macros")).unwrap();
        std::fs::write(src.join("pkg/dbt_project.yml"), "name: pkg\n").unwrap();
        std::fs::write(
            src.join("pkg/macros/m.sql"),
            "{% macro m() %}1{% endmacro %}",
        )
        .unwrap();
        let zip = pack(&src).unwrap().expect("plain files are packed");
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("stale")).unwrap();
        unpack(&Bytes::from(zip), &out, &JobLimits::default()).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("pkg/macros/m.sql")).unwrap(),
            "{% macro m() %}1{% endmacro %}"
        );
        assert!(!out.join("stale").exists(), "the folder is made fresh");
    }

    #[test]
    fn only_the_default_install_path_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let project = |yml: &str| std::fs::write(dir.path().join(PROJECT_FILE), yml).unwrap();
        assert!(default_install_path(dir.path()), "no dbt_project.yml");
        project("name: p\n");
        assert!(default_install_path(dir.path()));
        project("name: p\npackages-install-path: dbt_packages/\n");
        assert!(default_install_path(dir.path()));
        project("name: p\npackages-install-path: vendor\n");
        assert!(!default_install_path(dir.path()));
        project("[not yaml");
        assert!(!default_install_path(dir.path()));
    }

    #[test]
    fn a_tree_with_a_link_is_not_packed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("src/local_pkg")).unwrap();
        assert!(pack(&dir.path().join("src")).unwrap().is_none());
    }

    #[test]
    fn links_parent_paths_absolute_paths_and_odd_modes_are_refused() {
        let link = zip_with(|w| {
            let options = zip::write::SimpleFileOptions::default();
            w.add_symlink("pkg/link", "/etc/passwd", options).unwrap();
        });
        assert!(refused(link).contains("not a regular file"));
        let up = zip_with(|w| file(w, "../escaped", 0o644));
        assert!(refused(up).contains("'..'"));
        let absolute = zip_with(|w| file(w, "/tmp/escaped-deps", 0o644));
        assert!(refused(absolute).contains("absolute"));
        // A FIFO's mode (and no mode at all), set in the raw external attributes of the
        // central directory entry of a plain file.
        for mode in [0o010644u32, 0o020644, 0] {
            let plain = zip_with(|w| file(w, "pkg/odd", 0o644)).to_vec();
            let mut odd = plain.clone();
            let at = plain
                .windows(4)
                .position(|w| w == b"PK\x01\x02")
                .expect("a central directory entry");
            odd[at + 38..at + 42].copy_from_slice(&(mode << 16).to_le_bytes());
            assert!(
                refused(Bytes::from(odd)).contains("not a regular file"),
                "{mode:o}"
            );
        }
        let too_many = zip_with(|w| {
            file(w, "a", 0o644);
            file(w, "b", 0o644);
        });
        let dir = tempfile::tempdir().unwrap();
        let limits = JobLimits {
            max_files: 1,
            ..Default::default()
        };
        assert!(unpack(&too_many, &dir.path().join("p"), &limits).is_err());
    }
}
