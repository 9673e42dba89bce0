#!/usr/bin/env bash
# The web UI's browser tests (part of scripts/test.sh): Debian's chromium (installed with
# apt-get when /usr/bin/chromium is missing; Playwright never downloads a browser), a cached
# venv with Playwright and pytest, then pytest on dbt_server/tests/ui/ against the real
# dbt-server binary running real dbt.
#
# Usage: scripts/test-ui.sh [pytest arguments…]   (e.g. -k cancel)
# DBT_REMOTE_UPDATE_SCREENSHOTS=1 writes the screenshots to docs/ui/ (else to a temp dir).
# Needs the dbt-server binary built (cargo build --bins) in the cargo target dir.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

chromium="${DBT_REMOTE_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
    echo "test-ui: installing chromium (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q chromium >&2; then
        apt-get update -q >&2
        apt-get install -y -q chromium >&2
    fi
fi

dbt_venv="$(scripts/setup-python.sh)"
ui_venv="$(scripts/setup-python.sh scripts/requirements-ui.txt \
    "${DBT_REMOTE_UI_VENV:-$HOME/.cache/dbt-remote/ui-venv}")"
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

export DBT_REMOTE_SERVER_BIN="$target_dir/debug/dbt-server"
export DBT_REMOTE_DBT_PATH="${DBT_REMOTE_DBT_PATH:-$dbt_venv/bin/dbt}"
export DBT_REMOTE_CHROMIUM="$chromium"
[[ -x "$DBT_REMOTE_SERVER_BIN" ]] || cargo build --quiet --bin dbt-server
echo "test-ui: pytest (chromium: $chromium)" >&2
exec "$ui_venv/bin/python" -m pytest -p no:cacheprovider -ra \
    --rootdir "$root/dbt_server/tests/ui" "$root/dbt_server/tests/ui" "$@"
