//! What the CLI's test binaries share: the `dbt-remote` and `dbt-server` binaries, running
//! dbt-remote with a clean environment, and a copy of the example project.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dbt_remote_test_support::server::example_project;

pub fn cli() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dbt-remote"))
}

/// dbt-server, built next to dbt-remote by `cargo test --workspace`.
pub fn server_binary() -> PathBuf {
    let path = cli().with_file_name("dbt-server");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo test --workspace`",
        path.display()
    );
    path
}

/// Runs dbt-remote in `cwd` with a clean DBT_REMOTE_* environment.
pub fn run(cwd: &Path, args: &[&str]) -> Output {
    run_with(cwd, args, &[])
}

/// Runs dbt-remote as [`run`] does, with `env` set too.
pub fn run_with(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(cli());
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("DBT_REMOTE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A copy of the example project (so artifacts can land in its target/).
pub fn project_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(example_project().join("."))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}
