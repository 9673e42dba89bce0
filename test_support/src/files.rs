//! Files for tests: a dbt project, its profiles.

use std::path::Path;

/// Writes each `(path, content)` of `files` under `dir`, making the directories it needs.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
    }
}
