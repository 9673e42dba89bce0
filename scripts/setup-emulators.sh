#!/usr/bin/env bash
# Install the emulators the GCP store's tests run against (docs/testing.md):
# - Cloud Storage: gcp-storage-emulator (PyPI) in a venv at
#   ${DBT_REMOTE_EMULATORS_VENV:-$HOME/.cache/dbt-remote/emulators-venv}, from
#   scripts/requirements-emulators.txt;
# - Firestore: @firestore-emulator/server (npm) with our launcher, scripts/firestore-emulator/
#   copied to ${DBT_REMOTE_FIRESTORE_EMULATOR_DIR:-$HOME/.cache/dbt-remote/firestore-emulator}
#   and `npm ci` there.
#
# Re-runs with unchanged files skip pip and npm (marker files hold their hashes). Progress goes to stderr. Prints two lines on stdout, for `eval`:
#   DBT_REMOTE_GCS_EMULATOR=<path of the gcp-storage-emulator executable>
#   DBT_REMOTE_FIRESTORE_EMULATOR=<path of scripts/firestore-emulator/start.js>
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req_file="${script_dir}/requirements-emulators.txt"
venv="${DBT_REMOTE_EMULATORS_VENV:-${HOME}/.cache/dbt-remote/emulators-venv}"
src_dir="${script_dir}/firestore-emulator"
node_dir="${DBT_REMOTE_FIRESTORE_EMULATOR_DIR:-${HOME}/.cache/dbt-remote/firestore-emulator}"

log() { printf 'setup-emulators: %s\n' "$*" >&2; }

# Cloud Storage (Python): a venv of its own, made and kept up to date as the dbt venv is.
venv="$("${script_dir}/setup-python.sh" "${req_file}" "${venv}")"

# Firestore (Node), one setup at a time (as setup-python.sh does for venvs).
mkdir -p "${node_dir}"
exec 9>"${node_dir}.lock"
flock 9
cp "${src_dir}/start.js" "${node_dir}/start.js"
lock_hash="$(cat "${src_dir}/package.json" "${src_dir}/package-lock.json" | sha256sum | cut -d' ' -f1)"
node_marker="${node_dir}/node_modules/.dbt-remote-lock.sha256"
if [[ -f "${node_marker}" && "$(cat "${node_marker}")" == "${lock_hash}" ]]; then
    log "@firestore-emulator/server already installed (${lock_hash:0:12}), skipping npm ci"
else
    log "npm ci in ${node_dir}"
    cp "${src_dir}/package.json" "${src_dir}/package-lock.json" "${node_dir}/"
    (cd "${node_dir}" && npm ci --no-audit --no-fund --loglevel=error >&2)
    printf '%s\n' "${lock_hash}" > "${node_marker}"
fi

printf 'DBT_REMOTE_GCS_EMULATOR=%s\n' "${venv}/bin/gcp-storage-emulator"
printf 'DBT_REMOTE_FIRESTORE_EMULATOR=%s\n' "${node_dir}/start.js"
