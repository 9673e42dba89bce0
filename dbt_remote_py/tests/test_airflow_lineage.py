"""The operator's extra link and its OpenLineage datasets, in a real Airflow 3.1 with the
OpenLineage provider installed, against a real dbt-server running real dbt.

The DAGs run with `airflow dags test`; the OpenLineage provider's listener emits its events
through the file transport configured in the environment, and the asserts read the COMPLETE
event of the task from that file. The extra link is computed from the metadata database the
run left, as Airflow's API server computes it (the serialized task's `get_extra_links`).

The server's jobs share one DuckDB file (`JAFFLE_DUCKDB_PATH`), so a job can run models whose
parents an earlier job built: those parents are the task's inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import EXAMPLE, Server
from dbt_remote import Client

pytest.importorskip("airflow", reason="Apache Airflow is not installed (scripts/test-python.sh installs it)")
pytest.importorskip(
    "airflow.providers.openlineage",
    reason="apache-airflow-providers-openlineage is not installed (scripts/test-python.sh installs it)",
)

AIRFLOW = Path(sys.executable).parent / "airflow"

DAGS = """
import pendulum
from airflow.sdk import DAG
from dbt_remote.airflow import DbtRemoteOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
COMMON = dict(project_dir={project!r}, server_url={url!r}, poll_interval=0.5)

def dag(name):
    return DAG(name, schedule=None, start_date=START, catchup=False)

with dag("dbt_remote_lineage"):
    # stg_payments and the seeds were built by an earlier job: inputs, not outputs.
    DbtRemoteOperator(task_id="run", command="run --select stg_orders orders", **COMMON)

with dag("dbt_remote_lineage_deferrable"):
    DbtRemoteOperator(
        task_id="run", command="run --select stg_payments", deferrable=True,
        openlineage_namespace="duckdb:///srv/warehouse.duckdb", **COMMON,
    )

with dag("dbt_remote_lineage_none"):
    # dbt ls writes no run_results.json: no datasets, and the task still succeeds.
    DbtRemoteOperator(task_id="ls", command="ls --select orders", **COMMON)
"""

# What the task runner imports to compute a link, as Airflow's API server does
# (airflow/api_fastapi/core_api/routes/public/extra_links.py): the serialized DAG of the run,
# its task, and `get_extra_links(ti, name)`.
LINK = """
import json, sys
from sqlalchemy import select
from airflow.models import DagRun, TaskInstance
from airflow.models.serialized_dag import SerializedDagModel
from airflow.utils.session import create_session

dag_id, task_id = sys.argv[1:3]
with create_session() as session:
    run = session.scalars(
        select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc())
    ).first()
    ti = session.scalars(
        select(TaskInstance).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id,
            TaskInstance.task_id == task_id,
        )
    ).one()
    task = SerializedDagModel.get_dag(dag_id, session=session).get_task(task_id)
    print(json.dumps({
        "state": str(ti.state),
        "links": sorted(task.extra_links),
        "url": task.get_extra_links(ti, "dbt-remote job"),
    }))
"""


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("lineage")
    s = Server(
        root / "server",
        ["--job-env", "JAFFLE_DUCKDB_PATH", "--dbt-workers", "0"],
        env={"JAFFLE_DUCKDB_PATH": str(root / "warehouse.duckdb")},
    )
    # The warehouse before the DAGs: the seeds and the staging models.
    Client(s.url).submit("build --select +stg_payments +stg_orders", EXAMPLE).wait(
        timeout=300, poll_interval=0.5
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def airflow(shared_server, tmp_path_factory):
    """An AIRFLOW_HOME with the DAGs and a migrated database, the OpenLineage provider's
    file transport writing every event to `events.jsonl`."""
    home = tmp_path_factory.mktemp("airflow-lineage")
    (home / "dags").mkdir()
    (home / "dags" / "dbt_remote_lineage_dags.py").write_text(
        textwrap.dedent(DAGS.format(project=str(EXAMPLE), url=shared_server.url))
    )
    events = home / "events.jsonl"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "NO_COLOR": "1",
        "AIRFLOW__OPENLINEAGE__DISABLED": "False",
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "dbt-remote-tests",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events), "append": True}
        ),
    }
    env.pop("OPENLINEAGE_DISABLED", None)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(AIRFLOW), *args], env=env, cwd=home, capture_output=True, text=True, timeout=600
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"airflow {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    run("db", "migrate")
    run("dags", "reserialize")
    run.env = env  # type: ignore[attr-defined]
    run.events = events  # type: ignore[attr-defined]
    return run


def dag_test(airflow, dag_id: str) -> str:
    done = airflow("dags", "test", dag_id, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    return log


def complete_event(airflow, dag_id: str, task_id: str) -> dict[str, Any]:
    """The last OpenLineage COMPLETE event of the task `dag_id.task_id`."""
    assert airflow.events.exists(), "the OpenLineage provider emitted no event"
    found = [
        event
        for event in map(json.loads, airflow.events.read_text().splitlines())
        if event["eventType"] == "COMPLETE" and event["job"]["name"] == f"{dag_id}.{task_id}"
    ]
    assert found, f"no COMPLETE event of {dag_id}.{task_id}"
    return found[-1]


def names(datasets: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["namespace"], d["name"]) for d in datasets}


def new_job(server: Server, before: set[str]):
    [job] = [j for j in Client(server.url).jobs(limit=100) if j.id not in before]
    return job


def test_the_lineage_of_a_run_names_the_models_it_built_and_what_they_read(airflow, shared_server):
    log = dag_test(airflow, "dbt_remote_lineage")
    event = complete_event(airflow, "dbt_remote_lineage", "run")
    ns = "duckdb://warehouse"  # the database of the DuckDB file warehouse.duckdb
    assert names(event["outputs"]) == {(ns, "warehouse.main.stg_orders"), (ns, "warehouse.main.orders")}, log
    # stg_orders reads the seed raw_orders; orders reads stg_orders (built here, so not an
    # input) and stg_payments (built by the earlier job).
    assert names(event["inputs"]) == {
        (ns, "warehouse.main_raw.raw_orders"), (ns, "warehouse.main.stg_payments")
    }, log
    orders = next(d for d in event["outputs"] if d["name"] == "warehouse.main.orders")
    assert {f["name"] for f in orders["facets"]["schema"]["fields"]} >= {"order_id", "amount"}
    job_id = event["run"]["facets"]["externalQuery"]["externalQueryId"]
    assert event["run"]["facets"]["externalQuery"]["source"] == shared_server.url
    assert Client(shared_server.url).job(job_id).args[:1] == ["run"]


def test_a_deferred_run_has_its_lineage_and_its_link(airflow, shared_server):
    before = {j.id for j in Client(shared_server.url).jobs(limit=100)}
    log = dag_test(airflow, "dbt_remote_lineage_deferrable")
    assert "DbtRemoteTrigger" in log, log
    event = complete_event(airflow, "dbt_remote_lineage_deferrable", "run")
    ns = "duckdb:///srv/warehouse.duckdb"  # openlineage_namespace
    assert names(event["outputs"]) == {(ns, "warehouse.main.stg_payments")}, log
    assert names(event["inputs"]) == {(ns, "warehouse.main_raw.raw_payments")}, log
    job = new_job(shared_server, before)
    assert event["run"]["facets"]["externalQuery"]["externalQueryId"] == job.id
    assert_job_page(extra_link(airflow, "dbt_remote_lineage_deferrable", "run")["url"], shared_server, job.id)


def test_no_lineage_never_fails_the_task(airflow):
    log = dag_test(airflow, "dbt_remote_lineage_none")
    assert "dbt-remote: no OpenLineage datasets for this task" in log, log
    assert "has no run_results.json" in log, log
    event = complete_event(airflow, "dbt_remote_lineage_none", "ls")
    assert event["inputs"] == [] and event["outputs"] == []


def extra_link(airflow, dag_id: str, task_id: str) -> dict[str, Any]:
    """The task's extra links of the DAG's latest run, as Airflow's API server computes them."""
    done = subprocess.run(
        [sys.executable, "-c", LINK, dag_id, task_id],
        env=airflow.env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_job_page(url: str, server: Server, job_id: str) -> None:
    assert url == f"{server.url}/ui/jobs/{job_id}"
    with urllib.request.urlopen(url, timeout=10) as page:  # the web UI's shell
        assert page.status == 200
        assert "text/html" in page.headers.get("content-type", "")
    # ... and the job it shows exists.
    with urllib.request.urlopen(f"{server.url}/api/v1/jobs/{job_id}", timeout=10) as job:
        assert json.load(job)["id"] == job_id


def test_the_extra_link_is_the_job_page_on_the_server(airflow, shared_server):
    before = {j.id for j in Client(shared_server.url).jobs(limit=100)}
    dag_test(airflow, "dbt_remote_lineage")
    job = new_job(shared_server, before)
    link = extra_link(airflow, "dbt_remote_lineage", "run")
    assert link["state"] == "success"
    assert link["links"] == ["dbt-remote job"]
    assert_job_page(link["url"], shared_server, job.id)


def test_the_link_is_registered_by_the_provider(airflow):
    from dbt_remote.airflow import DbtRemoteJobLink, DbtRemoteOperator

    assert [type(link) for link in DbtRemoteOperator.operator_extra_links] == [DbtRemoteJobLink]
    assert "dbt_remote.airflow.DbtRemoteJobLink" in airflow("providers", "links").stdout


def test_the_operator_needs_no_openlineage_to_import():
    # Lineage is imported lazily: the operator's module never loads the provider.
    code = (
        "import sys, dbt_remote.airflow; "
        "print(sorted(m for m in sys.modules if m.startswith(('openlineage', "
        "'airflow.providers.openlineage', 'dbt_remote.airflow_openlineage'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
