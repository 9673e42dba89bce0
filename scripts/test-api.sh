#!/usr/bin/env bash
# The OpenAPI document against the real server (part of scripts/test.sh): schemathesis
# generates requests from the document dbt-server serves (valid and invalid ones, and
# sequences following its links) and checks that no answer is a 5xx and none contradicts the
# document. Runs under pytest (dbt_server/tests/openapi/).
#
# Usage: scripts/test-api.sh [pytest arguments…]
# Settings: DBT_REMOTE_FUZZ_SECONDS (time budget per run, default 60), DBT_REMOTE_FUZZ_SEED.
# Needs the dbt-server binary built (cargo build --bins) in the cargo target dir.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

venv="$(scripts/setup-python.sh scripts/requirements-api.txt \
    "${DBT_REMOTE_API_VENV:-$HOME/.cache/dbt-remote/api-venv}")"
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
export DBT_REMOTE_SERVER_BIN="$target_dir/debug/dbt-server"
export DBT_REMOTE_SCHEMATHESIS="$venv/bin/schemathesis"
[[ -x "$DBT_REMOTE_SERVER_BIN" ]] || cargo build --quiet --bin dbt-server
if [[ $# -eq 0 ]]; then
    set -- "$root/dbt_server/tests/openapi"
fi
cd "$target_dir"
exec "$venv/bin/python" -m pytest -p no:cacheprovider -ra "$@"
