//! Project packaging: which files of a dbt project a job needs, read without dbt or Python.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::blob::BlobHash;
use crate::paths::RelPath;
use crate::{Error, Result};

/// Largest single project file that is sent.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Files at the project root that are sent when present.
const ROOT_FILES: &[&str] = &[
    "dbt_project.yml",
    "packages.yml",
    "dependencies.yml",
    "selectors.yml",
    "package-lock.yml",
];

/// Folders dbt reads by default, by the `dbt_project.yml` key that can change them.
const PATH_KEYS: &[(&str, &[&str])] = &[
    ("model-paths", &["models"]),
    ("seed-paths", &["seeds"]),
    ("macro-paths", &["macros"]),
    ("snapshot-paths", &["snapshots"]),
    ("test-paths", &["tests"]),
    ("analysis-paths", &["analyses"]),
    ("docs-paths", &[]),
];

/// Folder names never sent, wherever they are.
const NEVER: &[&str] = &[
    "target",
    "dbt_packages",
    "logs",
    ".git",
    "dbt_modules",
    "__pycache__",
];

/// One file of a packed project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFile {
    pub path: RelPath,
    pub sha256: BlobHash,
    pub content: Bytes,
}

impl ProjectFile {
    pub fn new(path: RelPath, content: Bytes) -> Self {
        ProjectFile {
            sha256: BlobHash::of(&content),
            path,
            content,
        }
    }
}

/// The files of the dbt project in `dir` that a job needs: the root files (dbt_project.yml,
/// packages.yml, dependencies.yml, package-lock.yml, selectors.yml) and the model, seed, macro, snapshot, test,
/// analysis and docs folders that dbt_project.yml declares (or dbt's defaults), honouring
/// `.dbtignore`; never target/, dbt_packages/, logs/ or .git/. A symlink is followed only when
/// it stays inside the project; one that leads out is refused.
pub fn pack_project(dir: &Path) -> Result<Vec<ProjectFile>> {
    let root = dir.canonicalize().map_err(|e| {
        Error::invalid(format!(
            "project folder {} cannot be read: {e}",
            dir.display()
        ))
    })?;
    let project_file = root.join("dbt_project.yml");
    let text = std::fs::read_to_string(&project_file)
        .map_err(|e| Error::invalid(format!("{} cannot be read: {e}", project_file.display())))?;
    let project: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| {
        Error::invalid(format!("{} is not valid YAML: {e}", project_file.display()))
    })?;
    let mut files = Vec::new();
    for name in ROOT_FILES {
        let path = root.join(name);
        if path.is_file() {
            files.push(read_file(&root, &path)?);
        }
    }
    for folder in declared_folders(&project)? {
        let path = folder.join_to(&root);
        if path.is_dir() {
            walk(&root, &path, &mut files)?;
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    Ok(files)
}

fn declared_folders(project: &serde_yaml_ng::Value) -> Result<Vec<RelPath>> {
    let mut out = Vec::new();
    for (key, defaults) in PATH_KEYS {
        let folders: Vec<String> = match project.get(*key) {
            None | Some(serde_yaml_ng::Value::Null) => {
                defaults.iter().map(|s| s.to_string()).collect()
            }
            Some(serde_yaml_ng::Value::Sequence(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        Error::invalid(format!(
                            "dbt_project.yml: {key} must be a list of folder names"
                        ))
                    })
                })
                .collect::<Result<_>>()?,
            Some(_) => {
                return Err(Error::invalid(format!(
                    "dbt_project.yml: {key} must be a list of folder names"
                )))
            }
        };
        for folder in folders {
            let clean = folder.trim_end_matches('/');
            out.push(RelPath::new(clean).map_err(|e| {
                Error::invalid(format!("dbt_project.yml: {key} entry {folder:?}: {e}"))
            })?);
        }
    }
    Ok(out)
}

fn walk(root: &Path, folder: &Path, files: &mut Vec<ProjectFile>) -> Result<()> {
    let walker = ignore::WalkBuilder::new(folder)
        .standard_filters(false)
        .hidden(false)
        .add_custom_ignore_filename(".dbtignore")
        .parents(true)
        .follow_links(false)
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            !(e.file_type().is_some_and(|t| t.is_dir()) && NEVER.contains(&name.as_ref()))
        })
        .build();
    // `.dbtignore` at the project root applies to every folder.
    let root_ignore = root.join(".dbtignore");
    let matcher = if root_ignore.is_file() {
        let mut b = ignore::gitignore::GitignoreBuilder::new(root);
        b.add(&root_ignore);
        Some(
            b.build()
                .map_err(|e| Error::invalid(format!(".dbtignore: {e}")))?,
        )
    } else {
        None
    };
    for entry in walker {
        let entry = entry.map_err(|e| Error::invalid(format!("reading the project: {e}")))?;
        let path = entry.path();
        let Some(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if name == ".dbtignore" || name == ".DS_Store" {
            continue;
        }
        if let Some(m) = &matcher {
            if m.matched_path_or_any_parents(path, false).is_ignore() {
                continue;
            }
        }
        if kind.is_symlink() {
            let target = path.canonicalize().map_err(|e| {
                Error::invalid(format!("{} is a broken symlink: {e}", rel(root, path)))
            })?;
            if !target.starts_with(root) {
                return Err(Error::invalid(format!(
                    "{} is a symlink to {}, outside the project: copy the file into the project instead",
                    rel(root, path),
                    target.display()
                )));
            }
            if target.is_dir() {
                walk(root, path, files)?;
                continue;
            }
        } else if !kind.is_file() {
            return Err(Error::invalid(format!(
                "{} is not a regular file (device, socket or pipe) and cannot be sent",
                rel(root, path)
            )));
        }
        files.push(read_file(root, path)?);
    }
    Ok(())
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read_file(root: &Path, path: &Path) -> Result<ProjectFile> {
    let relative: PathBuf = path
        .strip_prefix(root)
        .map(Path::to_path_buf)
        .map_err(|_| Error::invalid(format!("{} is outside the project", path.display())))?;
    let name = relative.to_str().ok_or_else(|| {
        Error::invalid(format!(
            "{} has a name that is not UTF-8",
            relative.display()
        ))
    })?;
    let rel_path = RelPath::new(name)?;
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::invalid(format!("{name} cannot be read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Error::TooLarge {
            what: name.to_string(),
            size: meta.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    let content =
        std::fs::read(path).map_err(|e| Error::invalid(format!("{name} cannot be read: {e}")))?;
    Ok(ProjectFile::new(rel_path, Bytes::from(content)))
}
