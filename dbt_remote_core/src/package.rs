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
    pack_job(&JobFiles {
        project_dir: dir.to_path_buf(),
        ..Default::default()
    })
}

pub use crate::job::{with_state, STATE_DIR};

/// What a job sends, as the original dbt-remote's options say it. Relative paths are relative
/// to `project_dir`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFiles {
    /// The dbt project folder.
    pub project_dir: PathBuf,
    /// A dbt_project.yml to send instead of the project's own.
    pub dbt_project: Option<PathBuf>,
    /// A packages.yml (or the folder holding it) to send; the job runs `dbt deps` first.
    pub extra_packages: Option<PathBuf>,
    /// A seeds folder to send instead of the project's seed paths.
    pub seeds_path: Option<PathBuf>,
    /// A manifest.json (or the folder holding it, e.g. `target`) sent as dbt state.
    pub manifest: Option<PathBuf>,
}

impl JobFiles {
    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.project_dir.join(path)
        }
    }

    /// `path`, or `path/<name>` when `path` is a folder.
    fn file_or_in(&self, path: &Path, name: &str) -> PathBuf {
        let path = self.resolve(path);
        if path.is_dir() {
            path.join(name)
        } else {
            path
        }
    }
}

/// The files of a job (see [`JobFiles`]).
pub fn pack_job(job: &JobFiles) -> Result<Vec<ProjectFile>> {
    let dir = &job.project_dir;
    let root = dir.canonicalize().map_err(|e| {
        Error::invalid(format!(
            "project folder {} cannot be read: {e}",
            dir.display()
        ))
    })?;
    let project_file = match &job.dbt_project {
        Some(p) => job.file_or_in(p, "dbt_project.yml"),
        None => root.join("dbt_project.yml"),
    };
    let text = std::fs::read_to_string(&project_file).map_err(|e| {
        Error::invalid(format!(
            "{} cannot be read: {e} (is this a dbt project? use --project-dir)",
            project_file.display()
        ))
    })?;
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
    let folders = declared_folders(&project)?;
    let seed_folders = seed_folders(&project)?;
    for folder in &folders {
        if job.seeds_path.is_some() && seed_folders.contains(folder) {
            continue;
        }
        let path = folder.join_to(&root);
        if path.is_dir() {
            walk(&root, &path, &mut files)?;
        }
    }
    let mut replace = |name: &str, path: PathBuf| -> Result<()> {
        let content = std::fs::read(&path)
            .map_err(|e| Error::invalid(format!("{} cannot be read: {e}", path.display())))?;
        files.retain(|f| f.path.as_str() != name);
        files.push(ProjectFile::new(RelPath::new(name)?, Bytes::from(content)));
        Ok(())
    };
    if job.dbt_project.is_some() {
        replace("dbt_project.yml", project_file.clone())?;
    }
    if let Some(p) = &job.extra_packages {
        replace("packages.yml", job.file_or_in(p, "packages.yml"))?;
    }
    if let Some(p) = &job.manifest {
        replace(
            &format!("{STATE_DIR}/manifest.json"),
            job.file_or_in(p, "manifest.json"),
        )?;
    }
    if let Some(seeds) = &job.seeds_path {
        let seeds = job.resolve(seeds).canonicalize().map_err(|e| {
            Error::invalid(format!(
                "seeds folder {} cannot be read: {e}",
                seeds.display()
            ))
        })?;
        let target = seed_folders
            .first()
            .cloned()
            .unwrap_or(RelPath::new("seeds")?);
        let mut seed_files = Vec::new();
        walk(&seeds, &seeds, &mut seed_files)?;
        for f in seed_files {
            let path = RelPath::new(format!("{target}/{}", f.path))?;
            files.push(ProjectFile { path, ..f });
        }
    }
    for folder in local_packages(&root, &files)? {
        walk(&root, &folder.join_to(&root), &mut files)?;
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    Ok(files)
}

/// The folders of the `local:` packages that `packages.yml` and `dependencies.yml` (among
/// `files`) name, relative to the project root, so they are sent with the project (the
/// original dbt-remote needed them passed by hand). A local package outside the project, or
/// whose path is a template, is refused: dbt-server could not install it.
fn local_packages(root: &Path, files: &[ProjectFile]) -> Result<Vec<RelPath>> {
    let mut out = Vec::new();
    for file in files {
        let name = file.path.as_str();
        if name != "packages.yml" && name != "dependencies.yml" {
            continue;
        }
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&file.content)
            .map_err(|e| Error::invalid(format!("{name} is not valid YAML: {e}")))?;
        let Some(serde_yaml_ng::Value::Sequence(packages)) = doc.get("packages") else {
            continue;
        };
        for local in packages.iter().filter_map(|p| p.get("local")) {
            let Some(path) = local.as_str() else {
                return Err(Error::invalid(format!(
                    "{name}: a `local:` package path must be a string, not {local:?}"
                )));
            };
            out.push(local_package(root, name, path)?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The folder of one `local:` package, checked to be inside the project.
fn local_package(root: &Path, file: &str, path: &str) -> Result<RelPath> {
    let outside = |why: &str| {
        Error::invalid(format!(
            "{file}: the local package {path:?} {why}; dbt-server only sees the files sent \
             from the project folder: move the package into it"
        ))
    };
    if path.contains("{{") || path.contains("{%") {
        return Err(outside("is a template, which dbt-remote cannot resolve"));
    }
    let full = root.join(path.trim_end_matches('/'));
    let real = full
        .canonicalize()
        .map_err(|e| outside(&format!("cannot be read ({e})")))?;
    let relative = real
        .strip_prefix(root)
        .map_err(|_| outside("is outside the project folder"))?;
    let text = relative
        .to_str()
        .ok_or_else(|| outside("has a name that is not UTF-8"))?;
    if text.is_empty() {
        return Err(outside("is the project folder itself"));
    }
    RelPath::new(text)
}

fn seed_folders(project: &serde_yaml_ng::Value) -> Result<Vec<RelPath>> {
    match project.get("seed-paths") {
        Some(serde_yaml_ng::Value::Sequence(items)) => items
            .iter()
            .filter_map(|v| v.as_str())
            .map(|s| RelPath::new(s.trim_end_matches('/')))
            .collect(),
        _ => Ok(vec![RelPath::new("seeds")?]),
    }
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
        if name == ".dbtignore" || name == ".DS_Store" || is_key_file(&name) {
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

/// Files never sent, as they usually hold secrets: private keys, certificates' keys, `.env`,
/// service-account credentials, and profiles (the server owns those).
fn is_key_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".pem", ".key", ".p12", ".pfx", ".jks", ".keystore"]
        .iter()
        .any(|ext| lower.ends_with(ext))
        || lower == ".env"
        || lower.starts_with(".env.")
        || lower.starts_with("id_rsa")
        || lower.starts_with("id_ed25519")
        || lower == "profiles.yml"
        || (lower.ends_with(".json")
            && (lower.contains("credentials")
                || lower.contains("service-account")
                || lower.contains("service_account")))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, content: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn names(files: &[ProjectFile]) -> Vec<&str> {
        files.iter().map(|f| f.path.as_str()).collect()
    }

    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "dbt_project.yml",
            "name: p\nmodel-paths: [models, more_models]\n",
        );
        write(root, "models/a.sql", "select 1");
        write(root, "models/scratch/wip.sql", "select broken");
        write(root, "models/.dbtignore", "");
        write(root, ".dbtignore", "scratch/\n*.tmp\n");
        write(root, "models/b.tmp", "x");
        write(root, "more_models/c.sql", "select 3");
        write(root, "seeds/raw.csv", "id\n1\n");
        write(root, "macros/m.sql", "{% macro m() %}{% endmacro %}");
        write(root, "target/manifest.json", "{}");
        write(root, "models/target/x.sql", "no");
        write(root, "logs/dbt.log", "no");
        write(root, "dbt_packages/p/x.sql", "no");
        write(root, ".git/config", "no");
        write(root, "models/key.pem", "secret");
        write(root, "models/.env", "SECRET=1");
        write(root, "models/gcp-credentials.json", "{}");
        write(root, "notes/readme.md", "not a dbt folder");
        write(root, "packages.yml", "packages: []");
        dir
    }

    #[test]
    fn sends_what_dbt_needs_and_nothing_else() {
        let dir = project();
        let files = pack_project(dir.path()).unwrap();
        assert_eq!(
            names(&files),
            [
                "dbt_project.yml",
                "macros/m.sql",
                "models/a.sql",
                "more_models/c.sql",
                "packages.yml",
                "seeds/raw.csv"
            ]
        );
        assert_eq!(files[2].sha256, BlobHash::of(b"select 1"));
    }

    #[test]
    fn symlinks_inside_are_followed_and_outside_refused() {
        let dir = project();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret.sql", "select secret");
        std::os::unix::fs::symlink(
            dir.path().join("more_models/c.sql"),
            dir.path().join("models/link.sql"),
        )
        .unwrap();
        let files = pack_project(dir.path()).unwrap();
        assert!(names(&files).contains(&"models/link.sql"));
        std::os::unix::fs::symlink(
            outside.path().join("secret.sql"),
            dir.path().join("models/out.sql"),
        )
        .unwrap();
        let err = pack_project(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("models/out.sql is a symlink to") && err.contains("outside the project"),
            "{err}"
        );
    }

    #[test]
    fn local_packages_inside_the_project_are_sent_and_outside_refused() {
        let dir = project();
        write(
            dir.path(),
            "packages.yml",
            "packages:\n  - local: pkgs/helpers/\n  - package: dbt-labs/dbt_utils\n",
        );
        write(
            dir.path(),
            "dependencies.yml",
            "packages:\n  - local: pkgs/more\n",
        );
        write(
            dir.path(),
            "pkgs/helpers/dbt_project.yml",
            "name: helpers\n",
        );
        write(
            dir.path(),
            "pkgs/helpers/macros/answer.sql",
            "{% macro a() %}42{% endmacro %}",
        );
        write(dir.path(), "pkgs/helpers/target/x.sql", "never");
        write(dir.path(), "pkgs/more/dbt_project.yml", "name: more\n");
        write(dir.path(), "pkgs/unused/dbt_project.yml", "name: unused\n");
        let files = pack_project(dir.path()).unwrap();
        let sent = names(&files);
        for path in [
            "pkgs/helpers/dbt_project.yml",
            "pkgs/helpers/macros/answer.sql",
            "pkgs/more/dbt_project.yml",
        ] {
            assert!(sent.contains(&path), "{path} in {sent:?}");
        }
        assert!(!sent
            .iter()
            .any(|p| p.contains("target") || p.contains("unused")));
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "p/dbt_project.yml", "name: p\n");
        for (local, why) in [
            (
                outside.path().join("p").display().to_string(),
                "outside the project",
            ),
            (
                "../".to_string() + outside.path().file_name().unwrap().to_str().unwrap(),
                "outside the project",
            ),
            ("missing".to_string(), "cannot be read"),
            ("{{ env_var('PKG') }}".to_string(), "template"),
        ] {
            write(
                dir.path(),
                "packages.yml",
                &format!("packages:\n  - local: \"{local}\"\n"),
            );
            let err = pack_project(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains(why) && err.contains("move the package"),
                "{local}: {err}"
            );
        }
    }

    #[test]
    fn options_replace_project_files() {
        let dir = project();
        let other = tempfile::tempdir().unwrap();
        write(other.path(), "seeds/s.csv", "x\n1\n");
        write(
            other.path(),
            "pk/packages.yml",
            "packages:\n  - package: dbt-labs/dbt_utils\n",
        );
        write(dir.path(), "target/manifest.json", "{\"nodes\": {}}");
        write(
            dir.path(),
            "alt/dbt_project.yml",
            "name: p\nmodel-paths: [models]\n",
        );
        let files = pack_job(&JobFiles {
            project_dir: dir.path().to_path_buf(),
            dbt_project: Some("alt/dbt_project.yml".into()),
            extra_packages: Some(other.path().join("pk")),
            seeds_path: Some(other.path().join("seeds")),
            manifest: Some("target".into()),
        })
        .unwrap();
        assert_eq!(
            names(&files),
            [
                ".dbt-remote/state/manifest.json",
                "dbt_project.yml",
                "macros/m.sql",
                "models/a.sql",
                "packages.yml",
                "seeds/s.csv"
            ]
        );
        let find = |n: &str| files.iter().find(|f| f.path.as_str() == n).unwrap();
        assert_eq!(
            &find("packages.yml").content[..],
            b"packages:\n  - package: dbt-labs/dbt_utils\n"
        );
        assert_eq!(
            &find("dbt_project.yml").content[..],
            b"name: p\nmodel-paths: [models]\n"
        );
        let err = pack_job(&JobFiles {
            project_dir: dir.path().into(),
            manifest: Some("nope".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("nope") && err.contains("cannot be read"),
            "{err}"
        );
    }

    #[test]
    fn state_points_at_the_sent_manifest() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            with_state(args(&["build", "-s", "state:modified+"])),
            args(&["build", "-s", "state:modified+", "--state", STATE_DIR])
        );
        assert_eq!(
            with_state(args(&["run", "--state", "target", "--defer"])),
            args(&["run", "--state", STATE_DIR, "--defer"])
        );
        assert_eq!(
            with_state(args(&["run", "--state=prod"])),
            args(&["run", &format!("--state={STATE_DIR}")])
        );
        assert_eq!(with_state(args(&["deps"])), args(&["deps"]));
    }

    #[test]
    fn a_folder_without_dbt_project_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = pack_project(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("dbt_project.yml cannot be read") && err.contains("--project-dir"),
            "{err}"
        );
    }
}
