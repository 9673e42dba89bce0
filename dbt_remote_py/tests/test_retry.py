"""`Job.retry()` with real dbt (docs/slim-ci.md): dbt's `retry` of a failed job re-runs only its
failed and skipped nodes, on the project as it is now or on the failed job's own files.

The jobs share one DuckDB file (`JAFFLE_DUCKDB_PATH`, passed to them with `--job-env`), as jobs
share a warehouse, so a retried model finds the tables its parents made in the failed run.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from conftest import Server
from dbt_remote import Client, Job, JobFailed

LATE = "model.jaffle_duckdb.needs_late_data"
AFTER_LATE = "model.jaffle_duckdb.after_late_data"


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("retry")
    s = Server(
        root / "server",
        ["--job-env", "JAFFLE_DUCKDB_PATH", "--dbt-workers", "0"],
        env={"JAFFLE_DUCKDB_PATH": str(root / "warehouse.duckdb")},
    )
    yield s
    s.stop()


def results(job: Job, tmp: Path) -> dict[str, str]:
    """`{unique_id: status}` of the job's `run_results.json`."""
    out = tmp / f"artifacts-{job.id}"
    job.download_artifacts(out)
    doc = json.loads((out / "run_results.json").read_text())
    return {r["unique_id"]: r["status"] for r in doc["results"]}


def retryable(job: Job, tmp: Path) -> set[str]:
    return {n for n, s in results(job, tmp).items() if s in ("error", "fail", "skipped", "runtime error")}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} has no {old!r}"
    path.write_text(text.replace(old, new))


def test_retry_with_a_project_dir_sends_the_fix_and_runs_only_the_failed_and_skipped_nodes(
    shared_server, project, tmp_path
):
    client = Client(shared_server.url)
    orders = project / "models" / "marts" / "orders.sql"
    good = "coalesce(order_payments.total_amount, 0) as amount"
    bad = "cast('x' as integer) as amount"
    edit(orders, good, bad)
    failed = client.submit("build --target ci", project, environment="py-ci")
    with pytest.raises(JobFailed):
        failed.wait(timeout=300, poll_interval=0.5)
    todo = retryable(failed, tmp_path)
    assert {"model.jaffle_duckdb.orders", "model.jaffle_duckdb.customers"} <= todo, todo
    assert "model.jaffle_duckdb.stg_orders" not in todo

    edit(orders, bad, good)

    async def retry_async() -> Job:
        return await failed.retry_async(project)

    retry = asyncio.run(retry_async())
    retry.wait(timeout=300, poll_interval=0.5)
    assert retry.args == ["retry", "--target", "ci", "--state", ".dbt-remote/state"]
    assert (retry.environment, retry.target) == ("py-ci", "ci")
    ran = results(retry, tmp_path)
    assert set(ran) == todo, "retried exactly the failed and skipped nodes"
    assert set(ran.values()) <= {"success", "pass"}, ran


def test_retry_without_a_project_dir_runs_on_the_failed_jobs_own_files(
    shared_server, project, tmp_path
):
    # A model reads a table an upstream load makes (named plainly, as dbt does not know the
    # load); the load has not landed when the build runs.
    late = project / "models" / "late"
    late.mkdir()
    (late / "needs_late_data.sql").write_text(
        "select * from {{ target.schema }}_raw.late_arrivals\n"
    )
    (late / "after_late_data.sql").write_text(
        "select count(*) as n from {{ ref('needs_late_data') }}\n"
    )
    (project / "seeds" / "late_arrivals.csv").write_text("id\n1\n2\n")
    client = Client(shared_server.url)
    failed = client.submit("build --select needs_late_data+", project, environment="py-late")
    with pytest.raises(JobFailed) as ended:
        failed.wait(timeout=300, poll_interval=0.5)
    assert [n.unique_id for n in ended.value.failed_nodes] == [LATE]
    assert results(failed, tmp_path) == {LATE: "error", AFTER_LATE: "skipped"}

    # The load lands; then the project folder is gone: the retry cannot have read it.
    client.submit("seed --select late_arrivals", project).wait(timeout=300, poll_interval=0.5)
    shutil.rmtree(project)
    retry = failed.retry()
    retry.wait(timeout=300, poll_interval=0.5)
    assert retry.args == ["retry", "--target", "dev", "--state", ".dbt-remote/state"]
    assert (retry.environment, retry.target) == ("py-late", "dev")
    assert results(retry, tmp_path) == {LATE: "success", AFTER_LATE: "success"}
    assert retry.outcome == f"job {retry.id} succeeded"
