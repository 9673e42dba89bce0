#!/usr/bin/env bash
# Create (once; cached) the venv holding Elementary's `edr` for the tests, and make its internal
# dbt project work offline.
#
# Usage: eval "$(scripts/setup-elementary.sh | sed 's/^/export /')"
#
# The venv lives at ${DBT_REMOTE_EDR_VENV:-$HOME/.cache/dbt-remote/edr-venv}; its requirements are
# scripts/requirements-elementary.txt (installed by scripts/setup-python.sh, which skips pip when
# they did not change). `edr report` runs `dbt deps` in its internal project
# (site-packages/elementary/monitor/dbt_project) unless its dbt_packages/ already holds
# `elementary/` and `dbt_utils/`: they are copied there from the offline packages,
# ${DBT_REMOTE_DBT_PACKAGES:-<repo>/../shared/dbt-packages} (see its README.md).
# Progress goes to stderr. stdout: `DBT_REMOTE_EDR_PATH=<edr>` and `DBT_REMOTE_DBT_PACKAGES=<folder>`.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${script_dir}/.." && pwd)"
venv="${DBT_REMOTE_EDR_VENV:-${HOME}/.cache/dbt-remote/edr-venv}"
# The offline packages: DBT_REMOTE_DBT_PACKAGES, else the workplace's shared folder next to the
# repository, else /work/shared (where it is when the repository was cloned elsewhere, as CI does).
packages="${DBT_REMOTE_DBT_PACKAGES:-}"
if [[ -z "${packages}" ]]; then
    for candidate in "${root}/../shared/dbt-packages" /work/shared/dbt-packages; do
        if [[ -d "${candidate}" ]]; then
            packages="$(cd "${candidate}" && pwd)"
            break
        fi
    done
    packages="${packages:-${root}/../shared/dbt-packages}"
fi

log() { printf 'setup-elementary: %s\n' "$*" >&2; }

"${script_dir}/setup-python.sh" "${script_dir}/requirements-elementary.txt" "${venv}" >/dev/null

for package in elementary-0.25.1 dbt_utils-0.8.6; do
    if [[ ! -d "${packages}/${package}" ]]; then
        log "offline dbt package not found: ${packages}/${package} (set DBT_REMOTE_DBT_PACKAGES)"
        exit 1
    fi
done

internal="$("${venv}/bin/python" -c \
    'import elementary, os; print(os.path.join(os.path.dirname(elementary.__file__), "monitor", "dbt_project"))')"
installed="${internal}/dbt_packages"
if [[ -f "${installed}/elementary/dbt_project.yml" && -f "${installed}/dbt_utils/dbt_project.yml" ]]; then
    log "edr's internal project already holds its packages"
else
    log "copying the offline packages into ${installed}"
    rm -rf "${installed}/elementary" "${installed}/dbt_utils"
    mkdir -p "${installed}"
    cp -R "${packages}/elementary-0.25.1" "${installed}/elementary"
    cp -R "${packages}/dbt_utils-0.8.6" "${installed}/dbt_utils"
fi

printf 'DBT_REMOTE_EDR_PATH=%s\nDBT_REMOTE_DBT_PACKAGES=%s\n' "${venv}/bin/edr" "${packages}"
