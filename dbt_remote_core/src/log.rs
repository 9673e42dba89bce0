//! Log records: what a job's log is made of, and how dbt's JSON log events become records.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Severity of a log record, as dbt names its levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl FromStr for LogLevel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "debug" | "trace" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "error" | "critical" | "fatal" => Ok(LogLevel::Error),
            _ => Err(Error::invalid(format!(
                "unknown log level {s:?}: expected debug, info, warn or error"
            ))),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The dbt node a record is about, when dbt said so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// e.g. `model.jaffle_duckdb.orders`.
    pub unique_id: String,
    /// dbt's node status at that event, e.g. `started`, `success`, `error`, `pass`, `fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A log record before the store gives it a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub time: DateTime<Utc>,
    pub level: LogLevel,
    pub message: String,
    /// Where the line came from: `dbt` (a JSON event), `dbt-text` (a non-JSON line of dbt's
    /// output), or `dbt-remote` (the runner or server itself).
    pub source: String,
    /// dbt's event name, e.g. `LogModelResult`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeInfo>,
}

/// A stored log record. Sequence numbers start at 1 and have no gaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub seq: u64,
    #[serde(flatten)]
    pub entry: LogEntry,
}

/// Source name of records written by dbt-remote itself.
pub const SOURCE_DBT_REMOTE: &str = "dbt-remote";

impl LogEntry {
    /// A record written by dbt-remote itself.
    pub fn remote(level: LogLevel, message: impl Into<String>) -> Self {
        LogEntry {
            time: Utc::now(),
            level,
            message: message.into(),
            source: SOURCE_DBT_REMOTE.into(),
            event: None,
            node: None,
        }
    }

    /// Turns one line of dbt's `--log-format json` output into a record. A line that is not a
    /// dbt JSON event is kept as text, at `default_level`.
    pub fn from_dbt_line(line: &str, default_level: LogLevel) -> Self {
        #[derive(Deserialize)]
        struct Event {
            info: Info,
            #[serde(default)]
            data: Option<Data>,
        }
        #[derive(Deserialize)]
        struct Info {
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            level: Option<String>,
            msg: String,
            #[serde(default)]
            ts: Option<DateTime<Utc>>,
        }
        #[derive(Deserialize)]
        struct Data {
            #[serde(default)]
            node_info: Option<DbtNodeInfo>,
        }
        #[derive(Deserialize)]
        struct DbtNodeInfo {
            #[serde(default)]
            unique_id: Option<String>,
            #[serde(default)]
            node_status: Option<String>,
        }

        let line = line.trim_end_matches(['\r', '\n']);
        match serde_json::from_str::<Event>(line) {
            Ok(event) => LogEntry {
                time: event.info.ts.unwrap_or_else(Utc::now),
                level: event
                    .info
                    .level
                    .as_deref()
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(default_level),
                message: event.info.msg,
                source: "dbt".into(),
                event: event.info.name,
                node: event.data.and_then(|d| d.node_info).and_then(|n| {
                    Some(NodeInfo {
                        unique_id: n.unique_id.filter(|u| !u.is_empty())?,
                        status: n.node_status.filter(|s| !s.is_empty()),
                    })
                }),
            },
            Err(_) => LogEntry {
                time: Utc::now(),
                level: default_level,
                message: line.to_owned(),
                source: "dbt-text".into(),
                event: None,
                node: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_dbt_event_with_node_info() {
        let line = r#"{"data": {"description": "sql view model main.stg_orders", "index": 4, "node_info": {"materialized": "view", "meta": {}, "node_finished_at": "", "node_name": "stg_orders", "node_path": "staging/stg_orders.sql", "node_relation": {"alias": "stg_orders", "database": "jaffle", "relation_name": "\"jaffle\".\"main\".\"stg_orders\"", "schema": "main"}, "node_started_at": "2026-11-24T06:50:01.123456", "node_status": "started", "resource_type": "model", "unique_id": "model.jaffle_duckdb.stg_orders"}, "total": 20}, "info": {"category": "", "code": "Q033", "extra": {}, "invocation_id": "x", "level": "info", "msg": "4 of 20 START sql view model main.stg_orders ... [RUN]", "name": "LogStartLine", "pid": 1, "thread": "Thread-1 (worker)", "ts": "2026-11-24T06:50:01.123456Z"}}"#;
        let e = LogEntry::from_dbt_line(line, LogLevel::Info);
        assert_eq!(e.level, LogLevel::Info);
        assert_eq!(
            e.message,
            "4 of 20 START sql view model main.stg_orders ... [RUN]"
        );
        assert_eq!(e.event.as_deref(), Some("LogStartLine"));
        assert_eq!(e.source, "dbt");
        let node = e.node.unwrap();
        assert_eq!(node.unique_id, "model.jaffle_duckdb.stg_orders");
        assert_eq!(node.status.as_deref(), Some("started"));
        assert_eq!(e.time.to_rfc3339(), "2026-11-24T06:50:01.123456+00:00");
    }

    #[test]
    fn keeps_non_json_lines_as_text() {
        let e = LogEntry::from_dbt_line("Traceback (most recent call last):\n", LogLevel::Warn);
        assert_eq!(e.message, "Traceback (most recent call last):");
        assert_eq!(e.level, LogLevel::Warn);
        assert_eq!(e.source, "dbt-text");
        let e = LogEntry::from_dbt_line(r#"{"not": "an event"}"#, LogLevel::Info);
        assert_eq!(e.source, "dbt-text");
    }

    #[test]
    fn empty_node_info_is_dropped() {
        let line = r#"{"info": {"level": "warn", "msg": "careful", "name": "X", "ts": "2026-01-01T00:00:00Z"}, "data": {"node_info": {"unique_id": "", "node_status": ""}}}"#;
        let e = LogEntry::from_dbt_line(line, LogLevel::Info);
        assert_eq!(e.level, LogLevel::Warn);
        assert!(e.node.is_none());
    }
}
