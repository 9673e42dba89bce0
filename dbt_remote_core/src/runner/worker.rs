//! The runner's side of the warm dbt workers: asks a worker (a Python process that has
//! imported dbt, see `dbt_worker.py` and [`crate::launcher::WorkerPool`]) to fork a child that
//! runs dbt, and follows that child.
//!
//! The protocol, on the pool's Unix socket: the runner sends one JSON line (the
//! [`Request`]) with the write ends of two pipes (the child's stdout and stderr) as
//! `SCM_RIGHTS`; the worker answers `{"pid": N}` once the child runs, then `{"exit": code}`
//! or `{"signal": n}` when it ends. A connection that the runner closes before that makes the
//! worker kill the child: a child never outlives the job process that follows it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// The Python program of a warm dbt worker, run as `python -c ZYGOTE` with the listening
/// socket as fd 3.
pub const ZYGOTE: &str = include_str!("dbt_worker.py");

/// Longest wait for a worker's `{"pid"}` answer: a live worker answers in milliseconds; past
/// it dbt starts as a fresh process.
const PID_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest reply line a worker sends.
const MAX_REPLY: usize = 4096;

/// What the child runs.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// dbt's command line (`dbt <argv>`).
    Dbt,
    /// A Python program, as `python -c <code> <argv>`.
    Python(&'static str),
}

/// The request line a worker reads.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct Request {
    pub argv: Vec<String>,
    pub cwd: String,
    pub env: BTreeMap<String, String>,
    /// `dbt` or `python`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<String>,
}

impl Request {
    /// The request of `kind` for `argv` in `cwd` with exactly `env`; `Err` when a path or a
    /// variable is not UTF-8 (JSON cannot carry it: such a job runs dbt afresh).
    pub(super) fn new(
        argv: &[String],
        cwd: &Path,
        env: &BTreeMap<OsString, OsString>,
        kind: Kind,
    ) -> Result<Request, String> {
        let text = |s: &std::ffi::OsStr, what: &str| {
            s.to_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{what} is not UTF-8"))
        };
        let env = env
            .iter()
            .map(|(k, v)| Ok((text(k, "a variable name")?, text(v, "a variable")?)))
            .collect::<Result<_, String>>()?;
        let (kind, code) = match kind {
            Kind::Dbt => ("dbt", None),
            Kind::Python(code) => ("python", Some(code.to_string())),
        };
        Ok(Request {
            argv: argv.to_vec(),
            cwd: text(cwd.as_os_str(), "the work dir")?,
            env,
            kind: kind.into(),
            code,
        })
    }

    /// The line sent: JSON (which never holds a raw newline) and `\n`.
    pub(super) fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a request serialises");
        line.push(b'\n');
        line
    }
}

/// A worker's answers.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Reply {
    Pid(u32),
    Exit(i32),
    Signal(i32),
    Error(String),
}

impl Reply {
    fn parse(line: &[u8]) -> std::io::Result<Reply> {
        serde_json::from_slice(line).map_err(|e| {
            std::io::Error::other(format!("the warm dbt worker answered nonsense ({e})"))
        })
    }
}

/// dbt started in a warm worker: its pid, and the read ends of its stdout and stderr.
pub(super) struct Warm {
    pub pid: u32,
    pub child: WarmChild,
    pub out: pipe::Receiver,
    pub err: pipe::Receiver,
}

/// A child of a warm worker, leading its own process group; its end comes on the connection.
pub(super) struct WarmChild {
    pid: u32,
    conn: tokio::net::UnixStream,
    buf: Vec<u8>,
}

impl WarmChild {
    /// The child's pid (= its process group id).
    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the worker's word on the child's end (cancel-safe: what was read stays in
    /// the buffer). A connection closed without it: the worker was lost, and the child is
    /// killed (nobody could tell its end).
    pub(super) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return match Reply::parse(&line)? {
                    Reply::Exit(code) => Ok(ExitStatus::from_raw((code & 0xff) << 8)),
                    Reply::Signal(sig) => Ok(ExitStatus::from_raw(sig & 0x7f)),
                    other => Err(std::io::Error::other(format!(
                        "the warm dbt worker answered {other:?}"
                    ))),
                };
            }
            if self.buf.len() > MAX_REPLY {
                return Err(std::io::Error::other(
                    "the warm dbt worker's reply is too long",
                ));
            }
            let mut chunk = [0u8; 512];
            let n = self.conn.read(&mut chunk).await?;
            if n == 0 {
                crate::process::signal_group(self.pid, Signal::SIGKILL);
                return Err(std::io::Error::other("the warm dbt worker was lost"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Asks the worker at `socket` to run `argv` in `cwd` with `env`; `Err` (the reason, for a
/// debug record) when no worker took it, and then no child runs.
pub(super) async fn start(
    socket: &Path,
    argv: &[String],
    cwd: &Path,
    env: &BTreeMap<OsString, OsString>,
    kind: Kind,
) -> Result<Warm, String> {
    let line = Request::new(argv, cwd, env, kind)?.line();
    let (out_r, out_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let socket: PathBuf = socket.to_path_buf();
    let (conn, pid) = tokio::task::spawn_blocking(move || {
        request(&socket, &line, OwnedFd::from(out_w), OwnedFd::from(err_w))
    })
    .await
    .map_err(|e| format!("{e}"))?
    .map_err(|e| e.to_string())?;
    let pipe = |r: std::io::PipeReader| {
        pipe::Receiver::from_owned_fd(OwnedFd::from(r)).map_err(|e| format!("pipe: {e}"))
    };
    let (out, err) = (pipe(out_r)?, pipe(err_r)?);
    conn.set_nonblocking(true)
        .map_err(|e| format!("socket: {e}"))?;
    let conn = tokio::net::UnixStream::from_std(conn).map_err(|e| format!("socket: {e}"))?;
    Ok(Warm {
        pid,
        child: WarmChild {
            pid,
            conn,
            buf: Vec::new(),
        },
        out,
        err,
    })
}

/// Connects, sends `line` with the two write ends (closed here once sent), and reads the
/// `{"pid"}` answer (byte by byte: the next line, the child's end, stays unread).
fn request(
    socket: &Path,
    line: &[u8],
    out_w: OwnedFd,
    err_w: OwnedFd,
) -> std::io::Result<(UnixStream, u32)> {
    let mut conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(PID_TIMEOUT))?;
    conn.set_write_timeout(Some(PID_TIMEOUT))?;
    let fds = [out_w.as_raw_fd(), err_w.as_raw_fd()];
    let sent = sendmsg::<UnixAddr>(
        conn.as_raw_fd(),
        &[IoSlice::new(line)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    drop((out_w, err_w));
    conn.write_all(&line[sent..])?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.last() != Some(&b'\n') {
        if reply.len() > MAX_REPLY || conn.read(&mut byte)? == 0 {
            return Err(std::io::Error::other("the worker closed the connection"));
        }
        reply.push(byte[0]);
    }
    match Reply::parse(&reply)? {
        Reply::Pid(pid) if pid > 1 => {
            conn.set_read_timeout(None)?;
            conn.set_write_timeout(None)?;
            Ok((conn, pid))
        }
        Reply::Error(e) => Err(std::io::Error::other(format!("the worker refused: {e}"))),
        other => Err(std::io::Error::other(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_one_json_line_with_exactly_the_given_environment() {
        let env: BTreeMap<OsString, OsString> =
            [("PATH".into(), "/bin".into()), ("A".into(), "x\ny".into())].into();
        let argv = vec!["run".to_string(), "--select".into(), "a b".into()];
        let request = Request::new(&argv, Path::new("/w/j"), &env, Kind::Dbt).unwrap();
        let line = request.line();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        let back: Request = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, request);
        assert_eq!(back.kind, "dbt");
        assert_eq!(back.code, None);
        assert_eq!(back.env["A"], "x\ny");
        let python = Request::new(&argv, Path::new("/w"), &env, Kind::Python("print(1)")).unwrap();
        assert_eq!(python.kind, "python");
        assert_eq!(python.code.as_deref(), Some("print(1)"));
    }

    #[test]
    fn a_variable_that_is_not_utf8_keeps_the_job_off_the_worker() {
        use std::os::unix::ffi::OsStringExt;
        let env: BTreeMap<OsString, OsString> =
            [("A".into(), OsString::from_vec(vec![0xff, 0xfe]))].into();
        let e = Request::new(&[], Path::new("/w"), &env, Kind::Dbt).unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn replies_parse_and_nonsense_is_an_error() {
        assert_eq!(Reply::parse(b"{\"pid\": 42}\n").unwrap(), Reply::Pid(42));
        assert_eq!(Reply::parse(b"{\"exit\": 1}").unwrap(), Reply::Exit(1));
        assert_eq!(Reply::parse(b"{\"signal\": 9}").unwrap(), Reply::Signal(9));
        assert!(Reply::parse(b"{\"pid\": -1}").is_err());
        assert!(Reply::parse(b"garbage").is_err());
    }

    #[test]
    fn exit_statuses_decode_like_waitpids() {
        let exit = ExitStatus::from_raw((3 & 0xff) << 8);
        assert_eq!(exit.code(), Some(3));
        let killed = ExitStatus::from_raw(9);
        assert_eq!((killed.code(), killed.signal()), (None, Some(9)));
    }
}
