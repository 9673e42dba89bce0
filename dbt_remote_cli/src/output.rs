//! How dbt-remote prints: log records like dbt's own console output, errors as one line each.

use dbt_remote_core::config::{Settings, KEYS};
use dbt_remote_core::diagnose::{Check, CREDENTIALS_FIX};
use dbt_remote_core::{Error, LogLevel, LogRecord};

/// A log record as dbt prints it (`HH:MM:SS  message`), warnings and errors marked, if its
/// level is at least `min`.
pub fn record(record: &LogRecord, min: LogLevel) {
    let e = &record.entry;
    if e.level < min {
        return;
    }
    let time = e.time.format("%H:%M:%S");
    for (i, line) in e.message.split('\n').enumerate() {
        let time = if i == 0 {
            time.to_string()
        } else {
            " ".repeat(8)
        };
        match e.level {
            LogLevel::Debug | LogLevel::Info => println!("{time}  {line}"),
            LogLevel::Warn => println!("{time}  [WARN] {line}"),
            LogLevel::Error => println!("{time}  [ERROR] {line}"),
        }
    }
}

/// Every setting in force and where it comes from, one line each.
pub fn settings(settings: &Settings) {
    for key in KEYS {
        match (settings.get(key.name), settings.source(key.name)) {
            (Some(v), Some(source)) => println!("{:<15} {v}  ({source})", key.name),
            _ => println!("{:<15} -", key.name),
        }
    }
}

/// One check of `dbt-remote debug`: `OK` or `FAIL` and what to fix.
pub fn check(check: &Check) {
    match &check.failure {
        None => println!("  OK    {}", check.what),
        Some(f) => println!("  FAIL  {}\n        fix: {}", check.what, f.fix),
    }
}

/// A note of dbt-remote itself, on stderr (stdout carries dbt's output only).
pub fn note(message: impl AsRef<str>) {
    eprintln!("dbt-remote: {}", message.as_ref());
}

/// An error and its causes, one line each.
pub fn error(e: &Error) {
    let message = e.to_string();
    eprintln!("dbt-remote: error: {message}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let cause = s.to_string();
        if !message.contains(&cause) {
            eprintln!("  caused by: {cause}");
        }
        source = s.source();
    }
    if let Some(hint) = hint(e) {
        eprintln!("  hint: {hint}");
    }
}

fn hint(e: &Error) -> Option<&'static str> {
    match e {
        Error::Unreachable { .. } => Some(
            "is dbt-server running there? Check --server-url (or DBT_REMOTE_SERVER_URL, dbt_remote.yml); `dbt-remote debug` checks it",
        ),
        Error::Unauthenticated(_) => Some(CREDENTIALS_FIX),
        _ => None,
    }
}
