# Fast by default; takes N seconds when run with --vars '{slow_seconds: N}'.
# Useful for exercising cancellation of a running dbt job.
#
# The var reaches this model as the `slow_seconds` config, which
# dbt_project.yml sets from var('slow_seconds') (no Jinja allowed in .py models).
# dbt only injects config keys it finds by static analysis of direct
# `dbt.config.get("literal")` calls, so keep that call on its own line.
#
# Why not just time.sleep(N)? On SIGINT dbt cancels open connections
# (dbt-duckdb interrupts each node's DuckDB cursor) and then waits for the
# worker threads to finish; a plain sleep cannot be interrupted, so dbt would
# only exit after the full N seconds. Instead we wait by running DuckDB
# queries on `session` (this node's cursor) until the deadline: an interrupt
# aborts the running query, the model fails, and dbt exits promptly.
# Each query is sized to last about a second, because an interrupt landing in
# the short gap between two queries is lost. The price is one busy CPU core.
import time


def model(dbt, session):
    dbt.config(materialized="table")
    slow_seconds = dbt.config.get("slow_seconds", 0)
    seconds = float(slow_seconds or 0)
    deadline = time.monotonic() + seconds
    rows, rows_per_second = 1_000_000, None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if rows_per_second is not None:
            rows = max(10_000, int(rows_per_second * min(remaining, 1.0)))
        started = time.monotonic()
        session.execute(f"select count(*) from range({rows}) t(i) where i % 7 = 3").fetchall()
        rows_per_second = rows / max(time.monotonic() - started, 1e-3)
    return session.sql(f"select 1 as x, {seconds} as slow_seconds")
