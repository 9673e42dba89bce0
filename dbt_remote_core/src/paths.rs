//! Relative paths that cannot escape the folder they are joined to.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Longest accepted path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// A relative, normalised, `/`-separated path: no leading `/`, no `.` or `..` component, no empty
/// component, no backslash, no NUL or control character. Joining it to a folder always stays inside.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl RelPath {
    /// Validates `path`; the error says what is wrong with it.
    pub fn new(path: impl Into<String>) -> Result<Self> {
        let path = path.into();
        let bad = |why: &str| Err(Error::invalid(format!("invalid file path {path:?}: {why}")));
        if path.is_empty() {
            return bad("empty");
        }
        if path.len() > MAX_PATH_LEN {
            return bad("too long");
        }
        if path.starts_with('/') || path.contains(':') && path.as_bytes().get(1) == Some(&b':') {
            return bad("absolute paths are not allowed");
        }
        if path.contains('\\') {
            return bad("backslashes are not allowed; use '/'");
        }
        if path.chars().any(|c| c.is_control()) {
            return bad("control characters are not allowed");
        }
        for part in path.split('/') {
            match part {
                "" => return bad("empty path component"),
                "." | ".." => return bad("'.' and '..' components are not allowed"),
                _ => {}
            }
        }
        Ok(RelPath(path))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path joined to `base`; always inside `base`.
    pub fn join_to(&self, base: &Path) -> PathBuf {
        self.0
            .split('/')
            .fold(base.to_path_buf(), |p, part| p.join(part))
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl TryFrom<String> for RelPath {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        RelPath::new(s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        for p in [
            "dbt_project.yml",
            "models/staging/stg_orders.sql",
            "seeds/raw .csv",
        ] {
            assert_eq!(RelPath::new(p).unwrap().as_str(), p);
        }
    }

    #[test]
    fn rejects_paths_that_escape() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "models/../../x",
            "a//b",
            "./a",
            "a/",
            "a\\b",
            "C:/x",
            "a\0b",
            "a\nb",
        ] {
            let err = RelPath::new(p).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{p:?} gave {err:?}");
        }
    }

    #[test]
    fn join_stays_inside() {
        let p = RelPath::new("models/a.sql").unwrap();
        assert_eq!(p.join_to(Path::new("/w")), PathBuf::from("/w/models/a.sql"));
        assert_eq!(p.file_name(), "a.sql");
    }
}
