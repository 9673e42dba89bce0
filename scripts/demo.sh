#!/usr/bin/env bash
# The README's first command: sets everything up on this machine and runs a real `dbt build`
# of the example project through a local dbt-server, printing dbt's logs live.
#
# Usage: scripts/demo.sh [dbt arguments…]      (default: build)
#   e.g. scripts/demo.sh build --select orders+
#        scripts/demo.sh run --vars '{fail: true}'     (exits with dbt's code 1)
# Exits with dbt's exit code. The server is stopped at the end; its state stays in
# target/demo/ so `dbt-server --state-dir target/demo/state` can show the job again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

venv="$(scripts/setup-python.sh)"
echo "demo: building dbt-server and dbt-remote" >&2
cargo build --quiet --bins
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/debug"

demo_dir="$root/target/demo"
mkdir -p "$demo_dir"
server_log="$demo_dir/server.log"
"$bin/dbt-server" --port 0 --state-dir "$demo_dir/state" \
    --dbt "$venv/bin/dbt" --profiles-dir "$root/examples/profiles" >"$server_log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true' EXIT

url=""
for _ in $(seq 1 100); do
    url="$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$server_log" | head -n 1)"
    [[ -n "$url" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "demo: dbt-server did not start:" >&2
        cat "$server_log" >&2
        exit 1
    fi
    sleep 0.1
done
[[ -n "$url" ]] || { echo "demo: dbt-server did not report its address" >&2; exit 1; }
echo "demo: dbt-server is at $url (log: $server_log)" >&2

if [[ $# -eq 0 ]]; then
    set -- build
fi
status=0
"$bin/dbt-remote" --server-url "$url" --project-dir "$root/examples/jaffle_duckdb" "$@" || status=$?
exit "$status"
