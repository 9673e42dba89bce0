//! How the runner follows a program it runs: its output, line by line, into the job's log
//! (within the log cap), a cancel or time limit turned into an interrupt, its end into an
//! [`Outcome`]. The program is a [`Proc`]: a fresh child process, or a child of a warm dbt
//! worker ([`super::worker`]).

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::worker::WarmChild;
use super::{Outcome, Runner, Tool};
use crate::job::JobId;
use crate::log::{LogEntry, LogLevel};
use crate::state::{StateStore, StateStoreExt};
use crate::{Error, Result};

/// Most log entries written to the store in one append.
const MAX_BATCH: usize = 500;

/// A running program the runner follows.
pub(super) enum Proc {
    /// A child process of this process.
    Fresh(tokio::process::Child),
    /// A child of a warm dbt worker, leading its own process group.
    Warm(WarmChild),
}

impl Proc {
    /// Waits for its end (cancel-safe: a `select!` may drop it and call again).
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Proc::Fresh(child) => child.wait().await,
            Proc::Warm(child) => child.wait().await,
        }
    }

    /// SIGINT: dbt stops its queries and exits.
    fn interrupt(&self) {
        match self {
            Proc::Fresh(child) => {
                if let Some(pid) = child.id() {
                    crate::process::signal(pid, Signal::SIGINT);
                }
            }
            Proc::Warm(child) => {
                crate::process::signal_group(child.pid(), Signal::SIGINT);
            }
        }
    }

    /// SIGKILL.
    fn kill(&mut self) {
        match self {
            Proc::Fresh(child) => {
                let _ = child.start_kill();
            }
            Proc::Warm(child) => {
                crate::process::signal_group(child.pid(), Signal::SIGKILL);
            }
        }
    }
}

impl Runner<'_> {
    /// Runs `cmd` (the program `tool`) to its end, its stdout and stderr turned line by line
    /// into log records (stderr's at `warn` when a line carries no level). A cancel interrupts
    /// it ([`Outcome::Cancelled`]); so does running past `limit` ([`Outcome::TimedOut`]).
    pub(super) async fn stream(
        &self,
        mut cmd: Command,
        tool: &Tool,
        limit: Option<Duration>,
    ) -> Result<Outcome> {
        let program = PathBuf::from(cmd.as_std().get_program());
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // A process started in the background may inherit SIGINT ignored, and then dbt would
        // not stop on interrupt: give dbt the default dispositions back.
        // SAFETY: only async-signal-safe calls (sigaction) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                crate::process::reset_signals();
                Ok(())
            });
        }
        let mut child = spawn_retrying_busy(&mut cmd).await.map_err(|e| {
            tracing::error!(job = %self.id, "could not start {}: {e}", program.display());
            Error::backend(
                tool.name,
                format!(
                    "could not start {} ({}): check the server's {}",
                    tool.name,
                    e.kind(),
                    tool.flag
                ),
            )
        })?;
        let (out, err) = match (child.stdout.take(), child.stderr.take()) {
            (Some(out), Some(err)) => (out, err),
            _ => return Err(Error::backend(tool.name, "its output could not be read")),
        };
        self.follow(Proc::Fresh(child), out, err, tool, limit).await
    }

    /// Follows `proc` (the program `tool`, writing to `out` and `err`) to its end, as
    /// [`stream`](Self::stream) does.
    pub(super) async fn follow(
        &self,
        mut proc: Proc,
        out: impl AsyncRead + Unpin + Send + 'static,
        err: impl AsyncRead + Unpin + Send + 'static,
        tool: &Tool,
        limit: Option<Duration>,
    ) -> Result<Outcome> {
        let (tx, rx) = mpsc::channel::<LogEntry>(4096);
        let stdout = tokio::spawn(pump(out, LogLevel::Info, tool.line, tx.clone()));
        let stderr = tokio::spawn(pump(err, LogLevel::Warn, tool.line, tx));
        let cap = LogCap::new(self.config.max_log_records, self.config.max_log_bytes);
        let window = if self.store.batches_log_appends() {
            self.config.log_flush
        } else {
            Duration::ZERO
        };
        let writer = tokio::spawn(write_logs(self.store.clone(), self.id, rx, cap, window));

        let mut interrupted = false;
        let mut timed_out = false;
        let mut poll = tokio::time::interval(self.config.cancel_poll);
        let deadline = tokio::time::sleep(limit.unwrap_or(Duration::MAX));
        tokio::pin!(deadline);
        let status = loop {
            tokio::select! {
                status = proc.wait() => break status,
                _ = self.cancel.cancelled(), if !interrupted => {
                    interrupted = true;
                }
                _ = poll.tick(), if !interrupted => {
                    interrupted = matches!(self.store.get_job(self.id).await, Ok(j) if j.cancel_requested);
                }
                _ = &mut deadline, if limit.is_some() => {
                    timed_out = true;
                }
            }
            if interrupted {
                let note = format!("dbt-remote: cancel requested, interrupting {}", tool.name);
                self.note(LogLevel::Warn, note).await;
                break interrupt(&mut proc, self.config.interrupt_grace).await;
            }
            if timed_out {
                break interrupt(&mut proc, self.config.interrupt_grace).await;
            }
        }
        .map_err(|e| Error::backend(tool.name, e))?;
        let _ = stdout.await;
        let _ = stderr.await;
        writer
            .await
            .map_err(|e| Error::backend("log writer", e))??;
        if interrupted {
            return Ok(Outcome::Cancelled);
        }
        if let (true, Some(limit)) = (timed_out, limit) {
            return Ok(Outcome::TimedOut(limit));
        }
        Ok(exit_outcome(status, tool.name))
    }
}

/// Starts `cmd`, trying again for a moment while its executable is busy (ETXTBSY): a file
/// just written is busy while any process forked meanwhile, by any thread, still holds it open
/// (until that process execs), and dbt's executable may be being replaced.
async fn spawn_retrying_busy(cmd: &mut Command) -> std::io::Result<tokio::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

fn exit_outcome(status: ExitStatus, name: &str) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(sig)) => Outcome::Signalled(format!("{name} was killed by signal {sig}")),
        (None, None) => Outcome::Signalled(format!("{name} ended without an exit code")),
    }
}

/// SIGINT (dbt stops its queries and exits), then SIGKILL after `grace`.
async fn interrupt(proc: &mut Proc, grace: Duration) -> std::io::Result<ExitStatus> {
    proc.interrupt();
    match tokio::time::timeout(grace, proc.wait()).await {
        Ok(status) => status,
        Err(_) => {
            proc.kill();
            proc.wait().await
        }
    }
}

/// Reads lines of a program's output into log entries made by `entry`.
async fn pump(
    out: impl AsyncRead + Unpin,
    level: LogLevel,
    entry: fn(&str, LogLevel) -> LogEntry,
    tx: mpsc::Sender<LogEntry>,
) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        if tx.send(entry(&line, level)).await.is_err() {
            break;
        }
    }
}

/// Appends the entries of `rx` to job `id`'s log as they come, each append at least
/// `window` after the previous one (gathering what arrives meanwhile, up to 500 entries), with
/// no cap: what the runner does, for benchmarks and embedders.
pub async fn write_log_stream(
    store: Arc<dyn StateStore>,
    id: JobId,
    rx: mpsc::Receiver<LogEntry>,
    window: Duration,
) -> Result<()> {
    write_logs(store, id, rx, LogCap::new(u64::MAX, u64::MAX), window).await
}

/// Appends entries as they come, batching whatever is already waiting and, with a `window`,
/// what arrives until `window` after the previous append (so that one job's appends, each a
/// write of the store's log head, stay that far apart), until the job's log reaches `cap`;
/// then one "log truncated" record, and the rest is read and dropped (so dbt is never blocked
/// on its output).
async fn write_logs(
    store: Arc<dyn StateStore>,
    id: JobId,
    mut rx: mpsc::Receiver<LogEntry>,
    mut cap: LogCap,
    window: Duration,
) -> Result<()> {
    let mut batch = Vec::new();
    let mut next = tokio::time::Instant::now();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        gather_until(&mut rx, &mut batch, next).await;
        let kept = cap.admit(&mut batch);
        if !batch.is_empty() {
            store.append_logs(id, &batch).await?;
        }
        next = tokio::time::Instant::now() + window;
        if !kept {
            store.log(id, cap.truncated_note()).await?;
            while rx.recv().await.is_some() {}
        }
        batch.clear();
    }
    Ok(())
}

/// Adds to `batch` what `rx` holds or receives until `deadline`, up to [`MAX_BATCH`] entries
/// or until every sender is gone. A deadline already past takes only what is waiting.
async fn gather_until(
    rx: &mut mpsc::Receiver<LogEntry>,
    batch: &mut Vec<LogEntry>,
    deadline: tokio::time::Instant,
) {
    while batch.len() < MAX_BATCH {
        let room = MAX_BATCH - batch.len();
        match tokio::time::timeout_at(deadline, rx.recv_many(batch, room)).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// What is left of a job's log cap: records and message bytes.
#[derive(Debug, Clone, Copy)]
struct LogCap {
    records: u64,
    bytes: u64,
    max_records: u64,
    max_bytes: u64,
}

impl LogCap {
    fn new(max_records: u64, max_bytes: u64) -> Self {
        LogCap {
            records: max_records,
            bytes: max_bytes,
            max_records,
            max_bytes,
        }
    }

    /// Keeps the entries of `batch` that fit; `false` (and `batch` cut) once one did not.
    fn admit(&mut self, batch: &mut Vec<LogEntry>) -> bool {
        for (i, entry) in batch.iter().enumerate() {
            let size = entry.message.len() as u64;
            if self.records == 0 || size > self.bytes {
                batch.truncate(i);
                return false;
            }
            self.records -= 1;
            self.bytes -= size;
        }
        true
    }

    fn truncated_note(&self) -> LogEntry {
        LogEntry::remote(
            LogLevel::Warn,
            format!(
                "dbt-remote: log truncated: this job's log reached its cap ({} records or {} \
                 bytes); later output of dbt is not stored",
                self.max_records, self.max_bytes
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_cap_keeps_what_fits_and_stops() {
        let entry = |n: usize| LogEntry::remote(LogLevel::Info, "x".repeat(n));
        let mut cap = LogCap::new(3, 10);
        let mut batch = vec![entry(4), entry(4)];
        assert!(cap.admit(&mut batch));
        assert_eq!(batch.len(), 2);
        let mut batch = vec![entry(1), entry(5), entry(1)];
        assert!(!cap.admit(&mut batch), "5 bytes do not fit in the 2 left");
        assert_eq!(batch.len(), 1);
        let mut cap = LogCap::new(1, 100);
        let mut batch = vec![entry(1), entry(1)];
        assert!(!cap.admit(&mut batch));
        assert_eq!(batch.len(), 1);
        assert!(cap.truncated_note().message.contains("log truncated"));
    }
}
