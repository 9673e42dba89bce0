//! Elementary reports: after the dbt command of a job that asks for one
//! ([`JobSpec::elementary`](crate::job::JobSpec::elementary)), the runner runs
//! `edr report` on the work dir, with the profiles dir dbt used, and stores the HTML as the
//! artifact [`ELEMENTARY_REPORT`]. A report that cannot be made is one warning in the job's
//! log: the job keeps dbt's exit code and status (docs/elementary.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use tokio::process::Command;

use super::{Outcome, Runner, Tool, TARGET_DIR};
use crate::isolation;
use crate::log::{LogEntry, LogLevel};
use crate::paths::RelPath;
use crate::Result;

/// The artifact name of a job's Elementary report
/// (`GET /api/v1/jobs/{id}/artifacts/elementary_report.html`).
pub const ELEMENTARY_REPORT: &str = "elementary_report.html";

/// Default longest run of `edr report` (15 minutes); past it, edr is interrupted.
pub const DEFAULT_EDR_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The `source` of the log records of edr's output.
const SOURCE_EDR: &str = "edr";

/// edr's settings folder, inside the work dir's target folder: it turns edr's anonymous usage
/// events off (they would also wait on the network), whatever `~/.edr` of the server says.
const CONFIG_DIR: &str = "edr-config";
const CONFIG: &str = "anonymous_usage_tracking: false\n";

/// Elementary's `edr`: its lines become records prefixed `edr: `, at the level they name.
const EDR: Tool = Tool {
    name: "edr",
    flag: "--edr-path",
    line: edr_line,
};

/// How a report went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Report {
    /// Written and stored as [`ELEMENTARY_REPORT`].
    Stored,
    /// Not made; the reason is in the job's log (one warning).
    Failed,
    /// Interrupted by a cancel of the job.
    Cancelled,
}

/// Runs `edr report` for the job of `args` (its `--target` is passed on) with `profiles` (the
/// job's own profiles dir, else the server's, as dbt had them) and stores the report. Only a
/// store that cannot take the report is an error.
pub(super) async fn report(
    runner: &Runner<'_>,
    args: &[String],
    profiles: Option<&Path>,
) -> Result<Report> {
    runner
        .note(
            LogLevel::Info,
            "dbt-remote: making the Elementary report (edr report)",
        )
        .await;
    let file = runner.work_dir.join(TARGET_DIR).join(ELEMENTARY_REPORT);
    let why = match run_edr(runner, args, profiles, &file).await {
        Ok(Outcome::Exited(0)) => match tokio::fs::read(&file).await {
            Ok(html) => {
                let name = RelPath::new(ELEMENTARY_REPORT)?;
                runner
                    .store
                    .put_artifact(runner.id, &name, Bytes::from(html))
                    .await?;
                let note = format!("dbt-remote: Elementary report stored as {ELEMENTARY_REPORT}");
                runner.note(LogLevel::Info, note).await;
                return Ok(Report::Stored);
            }
            Err(_) => format!("edr wrote no report ({TARGET_DIR}/{ELEMENTARY_REPORT})"),
        },
        Ok(Outcome::Cancelled) => return Ok(Report::Cancelled),
        Ok(Outcome::Exited(code)) => format!("edr exited with code {code}"),
        Ok(Outcome::Signalled(reason)) => reason,
        Ok(Outcome::TimedOut(limit)) => format!(
            "edr ran past its limit of {}s (--edr-timeout-seconds)",
            limit.as_secs()
        ),
        Err(e) => e.to_string(),
    };
    let note = format!("dbt-remote: no Elementary report: {why}; the job keeps dbt's result");
    runner.note(LogLevel::Warn, note).await;
    Ok(Report::Failed)
}

/// Runs edr in the work dir, with dbt's isolated environment, to write `file`.
async fn run_edr(
    runner: &Runner<'_>,
    args: &[String],
    profiles: Option<&Path>,
    file: &Path,
) -> Result<Outcome> {
    let io =
        |e: std::io::Error| crate::Error::backend("edr", format!("preparing edr: {}", e.kind()));
    // Whatever the job left there is not a report of this run.
    let _ = tokio::fs::remove_file(file).await;
    let config_dir = runner.work_dir.join(TARGET_DIR).join(CONFIG_DIR);
    tokio::fs::create_dir_all(&config_dir).await.map_err(io)?;
    tokio::fs::write(config_dir.join("config.yml"), CONFIG)
        .await
        .map_err(io)?;
    let profiles_dir = runner.profiles_dir(profiles);
    let target = crate::project::target_from_args(args);
    let mut cmd = Command::new(runner.config.edr());
    cmd.args(edr_args(
        runner.work_dir,
        profiles_dir.as_deref(),
        file,
        &config_dir,
        target.as_deref(),
    ))
    .current_dir(runner.work_dir)
    .env_clear()
    .envs(isolation::dbt_env(&runner.config.job_env))
    .env("DO_NOT_TRACK", "1")
    .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    .env_remove("DBT_PROJECT_DIR")
    .stdin(std::process::Stdio::null());
    if let Some(dir) = &profiles_dir {
        cmd.env(crate::env::PROFILES_DIR, dir);
    }
    runner
        .stream(cmd, &EDR, Some(runner.config.edr_timeout))
        .await
}

/// `edr report`'s arguments: the project in `work_dir`, dbt's profiles dir, the report's
/// path, edr's settings folder, and the job's target when it named one.
fn edr_args(
    work_dir: &Path,
    profiles_dir: Option<&Path>,
    file: &Path,
    config_dir: &Path,
    target: Option<&str>,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = vec!["report".into()];
    if let Some(dir) = profiles_dir {
        out.extend(["--profiles-dir".into(), dir.into()]);
    }
    out.extend([
        "--project-dir".into(),
        work_dir.into(),
        "--file-path".into(),
        file.into(),
        "--config-dir".into(),
        config_dir.into(),
        "--open-browser".into(),
        "false".into(),
    ]);
    if let Some(target) = target {
        out.extend(["--profile-target".into(), target.into()]);
    }
    out
}

/// One line of edr's output as a record: `edr: <line>`, at the level of edr's
/// `<time> — LEVEL — <message>` lines, else `default`.
fn edr_line(line: &str, default: LogLevel) -> LogEntry {
    let line = line.trim_end_matches(['\r', '\n']);
    let level = line
        .split(" — ")
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(default);
    LogEntry {
        time: Utc::now(),
        level,
        message: format!("edr: {line}"),
        source: SOURCE_EDR.into(),
        event: None,
        node: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edr_gets_the_profiles_the_project_the_file_and_the_target() {
        let args = edr_args(
            Path::new("/w/1"),
            Some(Path::new("/p")),
            Path::new("/w/1/target/elementary_report.html"),
            Path::new("/w/1/target/edr-config"),
            Some("prod"),
        );
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "report",
                "--profiles-dir",
                "/p",
                "--project-dir",
                "/w/1",
                "--file-path",
                "/w/1/target/elementary_report.html",
                "--config-dir",
                "/w/1/target/edr-config",
                "--open-browser",
                "false",
                "--profile-target",
                "prod"
            ]
        );
        let bare = edr_args(
            Path::new("/w"),
            None,
            Path::new("/f"),
            Path::new("/c"),
            None,
        );
        assert!(!bare.iter().any(|a| a == Path::new("--profiles-dir")));
        assert!(!bare.iter().any(|a| a == Path::new("--profile-target")));
    }

    #[test]
    fn edr_lines_keep_their_level_and_are_marked() {
        let e = edr_line(
            "2026-12-02 04:39:15 — WARNING — Could not find the elementary profile",
            LogLevel::Info,
        );
        assert_eq!(e.level, LogLevel::Warn);
        assert_eq!(
            e.message,
            "edr: 2026-12-02 04:39:15 — WARNING — Could not find the elementary profile"
        );
        assert_eq!(e.source, "edr");
        let e = edr_line("Traceback (most recent call last):", LogLevel::Warn);
        assert_eq!(e.level, LogLevel::Warn);
        assert_eq!(
            edr_line("a — loud — b", LogLevel::Info).level,
            LogLevel::Info
        );
    }
}
