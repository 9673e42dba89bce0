#!/usr/bin/env bash
# The README's second command: installs what the tests need (the dbt venv, the Firestore and
# Cloud Storage emulators, a test venv with maturin, pytest, mypy and Apache Airflow) and runs
# every test: unit, conformance (also on the emulators), API and end-to-end tests with real dbt,
# doctests, then the Python package's tests (scripts/test-python.sh), the web UI's browser tests
# (scripts/test-ui.sh) and the OpenAPI document
# fuzzed against the real server (scripts/test-api.sh, schemathesis). Before the tests: rustfmt,
# clippy with warnings as errors, and a check of every target with default features.
# Benchmarks are built (not run): run them with `cargo bench` (see docs/testing.md).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

venv="$(scripts/setup-python.sh)"
export DBT_REMOTE_DBT_PATH="$venv/bin/dbt"
# Elementary's edr (its own venv, with the offline packages in its internal project); the
# --elementary tests fail instead of being skipped if it is missing (docs/elementary.md).
# Prints DBT_REMOTE_EDR_PATH=… and DBT_REMOTE_DBT_PACKAGES=… (the offline dbt packages).
elementary="$(scripts/setup-elementary.sh)"
while IFS= read -r setting; do
    export "${setting?}"
done <<< "$elementary"
# Prints DBT_REMOTE_GCS_EMULATOR=… and DBT_REMOTE_FIRESTORE_EMULATOR=…
emulators="$(scripts/setup-emulators.sh)"
while IFS= read -r setting; do
    export "${setting?}"
done <<< "$emulators"
# The GCP store's tests fail instead of being skipped if an emulator is missing.
export DBT_REMOTE_REQUIRE_EMULATORS=1

echo "test: rustfmt" >&2
cargo fmt --all --check
echo "test: clippy on every target, all features (warnings are errors)" >&2
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings
echo "test: every target with default features (no gcp)" >&2
cargo check --workspace --all-targets --quiet
echo "test: building benchmarks" >&2
cargo bench --workspace --no-run --quiet
echo "test: running the test suite" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-features --no-fail-fast 2>&1 | tee "$log" || status=$?
echo "test: the Python package and its Airflow operator (pytest)" >&2
cargo build --quiet --bins
scripts/test-python.sh 2>&1 | tee -a "$log" || status=$?
echo "test: the web UI in headless chromium (Playwright, pytest)" >&2
scripts/test-ui.sh 2>&1 | tee -a "$log" || status=$?
echo "test: the OpenAPI document against the real server (schemathesis)" >&2
scripts/test-api.sh 2>&1 | tee -a "$log" || status=$?
# One closing line for the whole suite (cargo prints one per test binary, pytest its own).
awk '/^test result:/ { p += $4; f += $6 }
     /^=+ .*(passed|failed).* in [0-9.]+s/ {
         for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) }
     }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
