//! Helpers of the benchmarks (`dbt_server/benches/dbt_build.rs`, `dbt_remote_cli/benches/cli.rs`):
//! copying and generating dbt projects, timing plain `dbt build`, medians and percentiles, the
//! environment variables that size a run, and the server configurations a benchmark compares
//! ([`Config`]), kept only when the `dbt-server` binary at hand knows their flags.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::{dbt_path, repo_root};

/// Runs per figure (`DBT_REMOTE_BENCH_RUNS`, default 3).
pub const RUNS_ENV: &str = "DBT_REMOTE_BENCH_RUNS";
/// Models of the generated project (`DBT_REMOTE_BENCH_MODELS`, default 300).
pub const MODELS_ENV: &str = "DBT_REMOTE_BENCH_MODELS";
/// Seconds to wait after a server starts, so its warm dbt workers are up before anything is
/// timed (`DBT_REMOTE_BENCH_WARMUP_SECS`, default 5).
pub const WARMUP_ENV: &str = "DBT_REMOTE_BENCH_WARMUP_SECS";

/// `name`'s value as a number, else `default`. Panics on a value that is not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        _ => default,
    }
}

/// Runs per figure: [`RUNS_ENV`], at least 1.
pub fn runs() -> usize {
    env_usize(RUNS_ENV, 3).max(1)
}

/// Models of the generated project: [`MODELS_ENV`], at least 4.
pub fn models() -> usize {
    env_usize(MODELS_ENV, 300).max(4)
}

/// The wait after a server starts: [`WARMUP_ENV`].
pub fn warmup() -> Duration {
    Duration::from_secs(env_usize(WARMUP_ENV, 5) as u64)
}

/// The profiles dir the benchmarks use locally and give the server (`examples/profiles`,
/// profile `jaffle_duckdb`, DuckDB in the working directory).
pub fn profiles_dir() -> PathBuf {
    repo_root().join("examples/profiles")
}

/// Copies the directory `from` into `to` (made if missing), recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Writes a dbt project for DuckDB with `models` models (at least 4) into `dir`: three source
/// models selecting literals (no seeds), then `model_3`… each `select * from` an earlier one
/// (a binary fan: `model_i` reads `model_{(i-3)/2}`; a comment naming it makes every file's
/// content unique, as in a real project), and a `schema.yml` with a `not_null` test on `id` of
/// every tenth model. Its profile is `jaffle_duckdb` ([`profiles_dir`]).
pub fn generate_project(dir: &Path, models: usize) {
    let models = models.max(4);
    std::fs::create_dir_all(dir.join("models")).unwrap();
    let project = "name: generated\nversion: '1.0'\nconfig-version: 2\nprofile: jaffle_duckdb\n";
    std::fs::write(dir.join("dbt_project.yml"), project).unwrap();
    let mut schema = String::from("version: 2\n\nmodels:\n");
    for i in 0..models {
        let sql = if i < 3 {
            format!("select {i} as id, 'source {i}' as name, {i} * 10 as amount\n")
        } else {
            format!(
                "-- model_{i}\nselect * from {{{{ ref('model_{}') }}}}\n",
                (i - 3) / 2
            )
        };
        std::fs::write(dir.join(format!("models/model_{i}.sql")), sql).unwrap();
        if i % 10 == 0 {
            schema.push_str(&format!(
                "  - name: model_{i}\n    columns:\n      - name: id\n        data_tests:\n          - not_null\n"
            ));
        }
    }
    std::fs::write(dir.join("models/schema.yml"), schema).unwrap();
}

/// Times plain `dbt build` in `project` with [`profiles_dir`], its output discarded. Panics
/// with dbt's output if it fails.
pub fn time_local_build(project: &Path) -> Duration {
    let start = Instant::now();
    let out = Command::new(dbt_path())
        .args(["build", "--profiles-dir"])
        .arg(profiles_dir())
        .current_dir(project)
        .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        .env_remove("DBT_PROFILES_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("dbt runs (scripts/setup-python.sh makes the venv)");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "plain dbt build failed in {}:\n{}",
        project.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    took
}

/// The median of `values` (the mean of the middle two for an even count; NaN if empty).
pub fn median(values: &[f64]) -> f64 {
    let sorted = sorted(values);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The `p` percentile (0..=1) of `values`, nearest rank (NaN if empty).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let sorted = sorted(values);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * p.clamp(0.0, 1.0)).ceil() as usize).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// A server configuration a benchmark compares: a name and the flags `dbt-server` gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub name: &'static str,
    pub server_flags: Vec<String>,
}

impl Config {
    fn new(name: &'static str, flags: &[&str]) -> Config {
        Config {
            name,
            server_flags: flags.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// The flags as `&str`s, for [`RealServer::start_in`](crate::server::RealServer::start_in).
    pub fn flags(&self) -> Vec<&str> {
        self.server_flags.iter().map(String::as_str).collect()
    }

    /// The flags as one string, `(none)` without any.
    pub fn describe(&self) -> String {
        if self.server_flags.is_empty() {
            "(none)".into()
        } else {
            self.server_flags.join(" ")
        }
    }

    /// The options (`--…`) among the flags that `help` (a `--help` text) does not name.
    pub fn unknown_flags(&self, help: &str) -> Vec<&str> {
        let words: std::collections::HashSet<&str> = help
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .collect();
        self.server_flags
            .iter()
            .map(String::as_str)
            .filter(|f| f.starts_with("--") && !words.contains(f))
            .collect()
    }
}

/// Every configuration the benchmarks compare: `default` (no flag), `no pool`
/// (`--dbt-workers 0`), `no caches` (`--no-parse-cache --no-deps-cache`) and `nothing` (all
/// three).
pub fn all_configs() -> Vec<Config> {
    vec![
        Config::new("default", &[]),
        Config::new("no pool", &["--dbt-workers", "0"]),
        Config::new("no caches", &["--no-parse-cache", "--no-deps-cache"]),
        Config::new(
            "nothing",
            &["--dbt-workers", "0", "--no-parse-cache", "--no-deps-cache"],
        ),
    ]
}

/// The configurations of [`all_configs`] whose flags `server --help` names, and a line for
/// each one left out (which flags the binary lacks).
pub fn supported_configs(server: &Path) -> (Vec<Config>, Vec<String>) {
    let out = Command::new(server)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{} --help: {e}", server.display()));
    let help = String::from_utf8_lossy(&out.stdout);
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    for config in all_configs() {
        let unknown = config.unknown_flags(&help);
        if unknown.is_empty() {
            kept.push(config);
        } else {
            skipped.push(format!(
                "{} (this dbt-server has no {})",
                config.name,
                unknown.join(", ")
            ));
        }
    }
    (kept, skipped)
}

/// The `dbt-remote` binary next to `sibling` (another binary of the same build), if built.
pub fn cli_next_to(sibling: &Path) -> Option<PathBuf> {
    let cli = sibling.with_file_name(format!("dbt-remote{}", std::env::consts::EXE_SUFFIX));
    cli.is_file().then_some(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.9), 90.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn configs_need_every_flag_in_the_help() {
        let help = "Options:\n      --port <PORT>\n      --dbt-workers <N>  warm workers\n      --no-parse-cache-x\n";
        let configs = all_configs();
        assert!(configs[0].unknown_flags(help).is_empty());
        assert!(configs[1].unknown_flags(help).is_empty());
        assert_eq!(
            configs[2].unknown_flags(help),
            ["--no-parse-cache", "--no-deps-cache"]
        );
        assert_eq!(
            configs[3].unknown_flags(help),
            ["--no-parse-cache", "--no-deps-cache"]
        );
    }

    #[test]
    fn generated_project_has_its_models_and_tests() {
        let dir = tempfile::tempdir().unwrap();
        generate_project(dir.path(), 25);
        let models = std::fs::read_dir(dir.path().join("models"))
            .unwrap()
            .count();
        assert_eq!(models, 26, "25 models and schema.yml");
        let last = std::fs::read_to_string(dir.path().join("models/model_24.sql")).unwrap();
        assert_eq!(last, "-- model_24\nselect * from {{ ref('model_10') }}\n");
        let schema = std::fs::read_to_string(dir.path().join("models/schema.yml")).unwrap();
        assert_eq!(schema.matches("not_null").count(), 3);
    }
}
