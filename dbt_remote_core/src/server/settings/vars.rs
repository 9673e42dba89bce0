//! Reading the settings' environment variables: unset and empty are the same.

use std::path::PathBuf;
use std::str::FromStr;

use crate::{Error, Result};

pub(super) fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub(super) fn var_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `1`/`true`/`yes`/`on` (any case) is true; `0`/`false`/`no`/`off` false.
pub(super) fn var_bool(name: &str) -> Result<Option<bool>> {
    var(name)
        .map(|v| match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" | "y" => Ok(true),
            "0" | "false" | "no" | "off" | "n" => Ok(false),
            _ => Err(Error::invalid(format!(
                "{name}={v:?}: expected true or false"
            ))),
        })
        .transpose()
}

pub(super) fn var_parse<T: FromStr>(name: &str) -> Result<Option<T>> {
    var(name)
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| Error::invalid(format!("{name}={v:?} is not a valid value")))
        })
        .transpose()
}
