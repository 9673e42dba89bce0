#!/usr/bin/env bash
# Create or update a Python venv: by default the one holding dbt (dbt-core + dbt-duckdb).
#
# Usage: VENV=$(scripts/setup-python.sh)                       # the dbt venv
#        VENV=$(scripts/setup-python.sh REQUIREMENTS VENV_DIR)   # another one
#
# The dbt venv lives at ${DBT_REMOTE_VENV:-$HOME/.cache/dbt-remote/venv}.
# Requirements come from scripts/requirements-dbt.txt; a marker file in the
# venv records a hash of that file, so re-runs with unchanged requirements
# skip pip entirely. All progress output goes to stderr; the only line on
# stdout is the venv path (printed last).
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req_file="${1:-${script_dir}/requirements-dbt.txt}"
venv="${2:-${DBT_REMOTE_VENV:-${HOME}/.cache/dbt-remote/venv}}"
python="${PYTHON:-python3}"
marker="${venv}/.dbt-remote-requirements.sha256"

log() { printf 'setup-python: %s\n' "$*" >&2; }

if [[ ! -f "${req_file}" ]]; then
    log "requirements file not found: ${req_file}"
    exit 1
fi

req_hash="$(sha256sum "${req_file}" | cut -d' ' -f1)"

# One setup of a venv at a time: two test runs on one machine (or a test run and a build) must
# not create or fill the same venv together; the second waits, then finds it ready.
mkdir -p "$(dirname "${venv}")"
exec 9>"${venv}.lock"
flock 9

# A venv without pip was cut short while being made (a run killed half-way): make it again.
if [[ ! -x "${venv}/bin/python" ]] || ! "${venv}/bin/python" -m pip --version >/dev/null 2>&1; then
    log "creating venv at ${venv}"
    "${python}" -m venv --clear "${venv}" >&2
    rm -f "${marker}"
fi

if [[ -f "${marker}" && "$(cat "${marker}")" == "${req_hash}" ]]; then
    log "requirements already installed (${req_hash:0:12}), skipping pip"
else
    log "installing requirements from ${req_file}"
    rm -f "${marker}"
    "${venv}/bin/python" -m pip install --disable-pip-version-check --quiet \
        --upgrade pip >&2
    "${venv}/bin/python" -m pip install --disable-pip-version-check --quiet \
        -r "${req_file}" >&2
    if [[ -x "${venv}/bin/dbt" ]]; then "${venv}/bin/dbt" --version >&2; fi
    printf '%s\n' "${req_hash}" > "${marker}"
    log "installed; marker written to ${marker}"
fi

printf '%s\n' "${venv}"
