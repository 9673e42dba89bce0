#!/usr/bin/env bash
# The Python package's tests (part of scripts/test.sh): builds the wheel with maturin, installs
# it with pip into the test venv, checks the stubs against the native module
# (mypy.stubtest), then runs pytest against a real dbt-server with real dbt, and a real
# Apache Airflow run of DAGs using the operator.
#
# Usage: scripts/test-python.sh [pytest arguments…]
# Needs the dbt-server binary built (cargo build --bins) in the cargo target dir.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

dbt_venv="$(scripts/setup-python.sh)"
py_venv="$(scripts/setup-python.sh scripts/requirements-py.txt \
    "${DBT_REMOTE_PY_VENV:-$HOME/.cache/dbt-remote/py-venv}")"
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

echo "test-python: building the wheel (maturin)" >&2
wheels="$target_dir/wheels"
rm -f "$wheels"/dbt_remote-*.whl
"$py_venv/bin/maturin" build --quiet --manifest-path dbt_remote_py/Cargo.toml \
    --interpreter "$py_venv/bin/python" --out "$wheels" >&2
"$py_venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps \
    "$wheels"/dbt_remote-*.whl >&2

echo "test-python: checking the stubs (mypy.stubtest)" >&2
# Run from outside the source tree so the installed package is the one checked.
(cd "$target_dir" && "$py_venv/bin/python" -m mypy.stubtest dbt_remote._native \
    --allowlist "$root/dbt_remote_py/stubtest-allowlist.txt")

echo "test-python: pytest" >&2
export DBT_REMOTE_SERVER_BIN="$target_dir/debug/dbt-server"
export DBT_REMOTE_DBT_PATH="${DBT_REMOTE_DBT_PATH:-$dbt_venv/bin/dbt}"
export DBT_REMOTE_PY_VENV="$py_venv"
[[ -x "$DBT_REMOTE_SERVER_BIN" ]] || cargo build --quiet --bin dbt-server
if [[ $# -eq 0 ]]; then
    set -- "$root/dbt_remote_py/tests"
fi
cd "$target_dir"
exec "$py_venv/bin/python" -m pytest -p no:cacheprovider -ra "$@"
