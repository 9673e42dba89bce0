//! The parts of the runner's cache keys ([`crate::state::CacheKey`]) that both caches share:
//! a hasher that keeps its fields apart, and a cheap fingerprint of the dbt installation.
//!
//! A key only has to change when what it selects would differ; dbt re-checks its own inputs
//! inside what it restores, so a key that is too coarse costs a full parse or a `dbt deps`,
//! never a wrong result.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A SHA-256 over named, length-prefixed fields, so that no two different field lists hash
/// alike (`("ab", "c")` is not `("a", "bc")`), and an absent field is not an empty one.
pub(super) struct KeyHasher(Sha256);

impl KeyHasher {
    /// A hasher for keys of `purpose` (the cache kind): keys of two purposes never meet.
    pub(super) fn new(purpose: &str) -> Self {
        let mut h = KeyHasher(Sha256::new());
        h.field("purpose", Some(purpose.as_bytes()));
        h
    }

    /// Adds the field `name` with `value` (`None`: absent, distinct from empty).
    pub(super) fn field(&mut self, name: &str, value: Option<&[u8]>) -> &mut Self {
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        match value {
            None => self.0.update([0u8]),
            Some(v) => {
                self.0.update([1u8]);
                self.0.update((v.len() as u64).to_le_bytes());
                self.0.update(v);
            }
        }
        self
    }

    /// Adds the field `name` with the content of `path` (absent or unreadable: `None`).
    pub(super) fn file(&mut self, name: &str, path: &Path) -> &mut Self {
        let content = std::fs::read(path).ok();
        self.field(name, content.as_deref())
    }

    /// Adds the environment dbt gets (what [`isolation::dbt_env`](crate::isolation::dbt_env)
    /// passes, plus `job_env`), one field per variable, by name.
    pub(super) fn dbt_env(&mut self, job_env: &[String]) -> &mut Self {
        let mut env = crate::isolation::dbt_env(job_env);
        env.sort();
        for (name, value) in &env {
            self.field(
                &name.to_string_lossy(),
                Some(value.as_os_str().as_encoded_bytes()),
            );
        }
        self
    }

    pub(super) fn finish(&mut self) -> [u8; 32] {
        std::mem::take(&mut self.0).finalize().into()
    }
}

/// What identifies the dbt installation without running it: the executable's path (as found
/// on PATH when it is a bare name), and the names of the `dbt*` dist-info folders of the
/// venv it sits in (`dbt_core-1.11.16.dist-info`, the adapters'), else the executable's size
/// and modification time.
pub(super) fn installation(dbt: &Path) -> Vec<u8> {
    let exe = resolve(dbt);
    let mut out = exe.as_os_str().as_encoded_bytes().to_vec();
    let dists = exe
        .parent()
        .and_then(Path::parent)
        .map(dist_infos)
        .unwrap_or_default();
    if dists.is_empty() {
        if let Ok(meta) = std::fs::metadata(&exe) {
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            out.extend(format!("|size={}|mtime={modified}", meta.len()).bytes());
        }
    }
    for name in dists {
        out.push(b'|');
        out.extend(name.bytes());
    }
    out
}

/// A bare program name as PATH finds it; a path as it is.
fn resolve(dbt: &Path) -> PathBuf {
    if dbt.components().count() > 1 {
        return dbt.to_path_buf();
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(dbt))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| dbt.to_path_buf())
}

/// The sorted names of `<venv>/lib/python*/site-packages/dbt*.dist-info`.
fn dist_infos(venv: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(libs) = std::fs::read_dir(venv.join("lib")) else {
        return names;
    };
    for lib in libs.flatten() {
        let Ok(entries) = std::fs::read_dir(lib.path().join("site-packages")) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("dbt") && name.ends_with(".dist-info") {
                names.push(name);
            }
        }
    }
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_kept_apart() {
        let key = |fields: &[(&str, Option<&[u8]>)]| {
            let mut h = KeyHasher::new("t");
            for (name, value) in fields {
                h.field(name, *value);
            }
            h.finish()
        };
        let ab_c = key(&[("x", Some(b"ab")), ("y", Some(b"c"))]);
        assert_ne!(ab_c, key(&[("x", Some(b"a")), ("y", Some(b"bc"))]));
        assert_ne!(key(&[("x", None)]), key(&[("x", Some(b""))]));
        assert_eq!(ab_c, key(&[("x", Some(b"ab")), ("y", Some(b"c"))]));
        let mut other = KeyHasher::new("u");
        other.field("x", Some(b"ab")).field("y", Some(b"c"));
        assert_ne!(ab_c, other.finish(), "purposes are apart");
    }

    #[test]
    fn the_installation_is_its_path_and_its_dbt_packages() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let site = dir.path().join("lib/python3.12/site-packages");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(site.join("dbt_core-1.11.16.dist-info")).unwrap();
        std::fs::create_dir_all(site.join("requests-2.0.dist-info")).unwrap();
        std::fs::write(bin.join("dbt"), "#!/bin/sh\n").unwrap();
        let first = installation(&bin.join("dbt"));
        let text = String::from_utf8_lossy(&first).into_owned();
        assert!(text.contains("dbt_core-1.11.16.dist-info"), "{text}");
        assert!(!text.contains("requests"), "{text}");
        std::fs::rename(
            site.join("dbt_core-1.11.16.dist-info"),
            site.join("dbt_core-1.11.17.dist-info"),
        )
        .unwrap();
        assert_ne!(
            first,
            installation(&bin.join("dbt")),
            "an upgrade changes it"
        );
        let lone = tempfile::tempdir().unwrap();
        std::fs::write(lone.path().join("dbt"), "x").unwrap();
        let text = String::from_utf8_lossy(&installation(&lone.path().join("dbt"))).into_owned();
        assert!(text.contains("size=1"), "{text}");
    }
}
