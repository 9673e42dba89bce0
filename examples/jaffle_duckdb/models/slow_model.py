# Fast by default; sleeps N seconds when run with --vars '{slow_seconds: N}'.
# The var reaches this model as the `slow_seconds` config, which
# dbt_project.yml sets from var('slow_seconds') (no Jinja allowed in .py models).
# Useful for exercising cancellation of a running dbt job.
#
# Note: dbt only injects config keys it finds via static analysis of direct
# `dbt.config.get("literal")` calls, so keep the call on its own (not nested
# inside e.g. `float(... or 0)`).
import time


def model(dbt, session):
    dbt.config(materialized="table")
    slow_seconds = dbt.config.get("slow_seconds", 0)
    seconds = float(slow_seconds or 0)
    if seconds > 0:
        time.sleep(seconds)
    return session.sql(f"select 1 as x, {seconds} as slept_seconds")
