//! What job code can see of the server: an allow-listed environment for job processes and
//! dbt, and a server process whose environment and memory other processes cannot read.
//!
//! A job runs its project's SQL, Jinja and Python with the server's user id, so it can read
//! whatever that user can read. These rules keep the server's own secrets (its auth token,
//! the token's hash, unrelated settings of the server's environment) out of its reach:
//!
//! - Job processes (`dbt-server run-job`) start with a cleared environment plus
//!   [`job_process_env`]; the runner starts dbt with a cleared environment plus [`dbt_env`].
//! - The server and job processes call [`protect_this_process`] first thing: the initial
//!   environment block, which `/proc/<pid>/environ` shows to same-uid processes whatever the
//!   process did with its variables since, is blanked (the variables live on in this
//!   process's heap), and the process is made non-dumpable, so `/proc/<pid>/mem` and ptrace
//!   need `CAP_SYS_PTRACE`.
//! - Job processes drop `CAP_SYS_PTRACE` from their capability bounding set
//!   ([`drop_ptrace_capability`]), so a job run as root cannot get around the last rule.

use std::ffi::OsString;

use crate::env;

/// Variables that job processes and dbt get from the server's environment, when set: the
/// process basics, the TLS trust and proxy settings dbt's connections need, and
/// `GOOGLE_APPLICATION_CREDENTIALS` (dbt-bigquery's application default credentials).
pub const BASE_VARS: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "GOOGLE_APPLICATION_CREDENTIALS",
];

/// Variables of the job process only (its own logging), on top of [`BASE_VARS`].
const JOB_PROCESS_VARS: &[&str] = &["RUST_LOG"];

/// Whether a variable of the server's environment passes to job code by default: the
/// [`BASE_VARS`], `LC_*`, and dbt's own `DBT_*` (e.g. `DBT_ENV_SECRET_*` used by the
/// server's profiles) but never `DBT_REMOTE_*`, the server's own settings.
pub fn passes_by_default(name: &str) -> bool {
    BASE_VARS.contains(&name)
        || name.starts_with("LC_")
        || (name.starts_with("DBT_") && !name.starts_with("DBT_REMOTE_"))
}

/// The variables of this process's environment that pass: by default, or named in `extra`
/// (the server's `--job-env`).
fn allowed(extra: &[String], also: &[&str]) -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(name, _)| {
            let name = name.to_string_lossy();
            passes_by_default(&name)
                || also.contains(&name.as_ref())
                || extra.iter().any(|e| *e == name)
        })
        .collect()
}

/// The environment of a job process, from the server's: what passes to dbt, plus the settings
/// of the GCP store (a job process opens the same store) and `RUST_LOG`. The launcher adds
/// [`JobSettings::to_env`](crate::server::JobSettings::to_env) on top.
pub fn job_process_env(extra: &[String]) -> Vec<(OsString, OsString)> {
    let also: Vec<&str> = JOB_PROCESS_VARS
        .iter()
        .chain(env::GCP_STORE_SETTINGS)
        .copied()
        .collect();
    allowed(extra, &also)
}

/// The environment of dbt, from the job process's: [`BASE_VARS`], `LC_*`, `DBT_*` but not
/// `DBT_REMOTE_*`, and the variables named in `extra`.
pub fn dbt_env(extra: &[String]) -> Vec<(OsString, OsString)> {
    allowed(extra, &[])
}

/// The names of `--job-env`: comma-separated, blanks ignored.
pub fn parse_names(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect()
}

/// Hides this process's environment and memory from other processes of the same user (see
/// the module's doc). Call it first thing in `main`, before any other thread runs. Returns
/// what could not be done, for the log; the process works either way.
pub fn protect_this_process() -> Vec<String> {
    let mut failed = Vec::new();
    if let Err(e) = blank_initial_environ() {
        failed.push(format!("could not blank the initial environment: {e}"));
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        failed.push(format!("could not make the process non-dumpable: {e}"));
    }
    failed
}

/// `CAP_SYS_PTRACE` in `<linux/capability.h>` (the libc crate does not name capabilities).
const CAP_SYS_PTRACE: nix::libc::c_ulong = 19;

/// Drops `CAP_SYS_PTRACE` from this process's capability bounding set, so that neither it nor
/// anything it executes can read the memory of a non-dumpable process. Async-signal-safe (one
/// `prctl`), for `pre_exec`. Without `CAP_SETPCAP` (not root) it fails; such a process has no
/// `CAP_SYS_PTRACE` to lose.
pub fn drop_ptrace_capability() {
    // SAFETY: prctl(PR_CAPBSET_DROP) takes integer arguments and touches no memory.
    unsafe {
        nix::libc::prctl(nix::libc::PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0);
    }
}

/// Moves every variable out of the environment block the kernel set up at exec (which
/// `/proc/<pid>/environ` reads) into the heap, and zeroes the block.
fn blank_initial_environ() -> std::io::Result<()> {
    let (start, end) = environ_block()?;
    let shown = std::fs::read("/proc/self/environ")?;
    let len = end - start;
    // SAFETY: [start, end) is this process's own environment block, as the kernel reports it;
    // it is only read here, and only compared below.
    let block = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
    if block != shown.as_slice() {
        return Err(std::io::Error::other(
            "the environment block is not what /proc/self/environ shows",
        ));
    }
    let vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (name, _) in &vars {
        std::env::remove_var(name);
    }
    // SAFETY: no variable points into the block any more (all were removed above), no other
    // thread runs yet, and the block is writable memory of this process (its initial stack).
    unsafe { std::ptr::write_bytes(start as *mut u8, 0, len) };
    for (name, value) in &vars {
        std::env::set_var(name, value);
    }
    Ok(())
}

/// `env_start` and `env_end` of `/proc/self/stat` (fields 50 and 51).
fn environ_block() -> std::io::Result<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let bad = || std::io::Error::other("unexpected /proc/self/stat");
    // Fields after the command name in parentheses start with field 3.
    let rest = stat.rsplit_once(')').ok_or_else(bad)?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> std::io::Result<usize> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(bad)
    };
    let (start, end) = (field(50)?, field(51)?);
    if start == 0 || end < start || end - start > 16 << 20 {
        return Err(bad());
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_settings_never_pass_by_default() {
        for name in [
            "DBT_REMOTE_AUTH_TOKEN",
            "DBT_REMOTE_AUTH_TOKEN_SHA256",
            "DBT_REMOTE_STATE_DIR",
            "AWS_SECRET_ACCESS_KEY",
            "UNRELATED_SECRET_CANARY",
        ] {
            assert!(!passes_by_default(name), "{name}");
        }
        for name in ["PATH", "HOME", "LC_ALL", "DBT_ENV_SECRET_PASSWORD", "TZ"] {
            assert!(passes_by_default(name), "{name}");
        }
        assert_eq!(parse_names(" A, ,B "), ["A", "B"]);
    }

    #[test]
    fn the_environment_block_is_found() {
        let (start, end) = environ_block().unwrap();
        assert!(end > start);
    }
}
