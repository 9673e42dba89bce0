"""A real Apache Airflow 3 runs DAGs that use DbtRemoteOperator against a real dbt-server.

Each DAG runs with `airflow dags test`, which runs the tasks (and, for deferrable tasks, the
trigger) in one process and prints the task log: that output is what the asserts read.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace
from pathlib import Path

import pytest

from conftest import TOKEN
from dbt_remote import Client, JobFailed

pytest.importorskip("airflow", reason="Apache Airflow is not installed (scripts/test-python.sh installs it)")

AIRFLOW = Path(sys.executable).parent / "airflow"

DAGS = """
import datetime
import pendulum
from airflow.sdk import DAG, task
from dbt_remote.airflow import DbtRemoteOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
COMMON = dict(project_dir={project!r}, server_url={url!r}, poll_interval=0.5)

def dag(name):
    return DAG(name, schedule=None, start_date=START, catchup=False)

with dag("dbt_remote_success"):
    build = DbtRemoteOperator(task_id="build", command="build --exclude slow_model", **COMMON)

    @task
    def record_job_id(job_id):
        with open({out!r}, "w") as f:
            f.write(job_id)

    record_job_id(build.output)

with dag("dbt_remote_failure"):
    DbtRemoteOperator(
        task_id="fail",
        command=["run", "--select", "fail_on_demand", "--vars", "{{fail: true}}"],
        **COMMON,
    )

with dag("dbt_remote_deferrable"):
    DbtRemoteOperator(
        task_id="build", command="{{{{ params.command }}}}", deferrable=True,
        params={{"command": "build --exclude slow_model"}}, **COMMON,
    )

with dag("dbt_remote_deferrable_failure"):
    DbtRemoteOperator(
        task_id="fail", command="run --select fail_on_demand --vars '{{fail: true}}'",
        deferrable=True, **COMMON,
    )

with dag("dbt_remote_prod"):
    DbtRemoteOperator(
        task_id="build", command="build --select +stg_orders",
        environment="{{{{ params.environment }}}}", params={{"environment": "airflow-prod"}},
        **COMMON,
    )

with dag("dbt_remote_slim_ci"):
    DbtRemoteOperator(
        task_id="build", command="build --select state:modified+ --defer",
        environment="airflow-ci", defer_to="{{{{ params.prod }}}}",
        params={{"prod": "airflow-prod"}}, **COMMON,
    )

with dag("dbt_remote_connection"):
    # No server_url: the server is the one of the connection dbt_remote_default.
    DbtRemoteOperator(
        task_id="build", command="build --exclude slow_model", project_dir={project!r},
        poll_interval=0.5,
    )

with dag("dbt_remote_connection_token"):
    # A connection with a token, followed in the triggerer (which reads the connection again).
    DbtRemoteOperator(
        task_id="build", command="build --select +stg_orders", project_dir={project!r},
        dbt_remote_conn_id="dbt_remote_auth", deferrable=True, poll_interval=0.5,
    )

with dag("dbt_remote_kill"):
    DbtRemoteOperator(
        task_id="slow", command="run --select slow_model --vars '{{slow_seconds: 121}}'", **COMMON,
    )

with dag("dbt_remote_timeout"):
    DbtRemoteOperator(
        task_id="slow", command="run --select slow_model --vars '{{slow_seconds: 120}}'",
        execution_timeout=datetime.timedelta(seconds=8), **COMMON,
    )
"""


def _conn_uri(url: str, token: str | None = None) -> str:
    """The Airflow connection URI of the dbt-server at `url` (scheme dbt-remote: type dbt_remote)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    auth = f":{token}@" if token else ""
    return f"dbt-remote://{auth}{parts.hostname}:{parts.port}"


@pytest.fixture(scope="module")
def airflow(server, auth_server, tmp_path_factory):
    """An AIRFLOW_HOME with the DAGs, a migrated database and serialized DAGs."""
    home = tmp_path_factory.mktemp("airflow")
    (home / "dags").mkdir()
    out = home / "job_id.txt"
    example = Path(__file__).resolve().parents[2] / "examples" / "jaffle_duckdb"
    (home / "dags" / "dbt_remote_dags.py").write_text(
        textwrap.dedent(DAGS.format(project=str(example), url=server.url, out=str(out)))
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "NO_COLOR": "1",
        "AIRFLOW_CONN_DBT_REMOTE_DEFAULT": _conn_uri(server.url),
        "AIRFLOW_CONN_DBT_REMOTE_AUTH": _conn_uri(auth_server.url, TOKEN),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(AIRFLOW), *args], env=env, cwd=home, capture_output=True, text=True, timeout=600
        )
        if check and done.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    run("db", "migrate")
    listed = run("dags", "reserialize")
    run.out = out  # type: ignore[attr-defined]
    run.env = env  # type: ignore[attr-defined]
    run.home = home  # type: ignore[attr-defined]
    assert "dbt_remote_success" in run("dags", "list").stdout, listed.stdout + listed.stderr
    return run


def dag_test(airflow, dag_id: str) -> tuple[int, str]:
    done = airflow("dags", "test", dag_id, check=False)
    return done.returncode, done.stdout + done.stderr


def test_a_dag_run_streams_dbt_lines_into_the_task_log_and_pushes_the_job_id(airflow, server):
    code, log = dag_test(airflow, "dbt_remote_success")
    assert code == 0, log
    for line in ("OK created sql table model main.orders", "Completed successfully"):
        assert line in log, log
    job_id = airflow.out.read_text()
    job = Client(server.url).job(job_id)
    assert (job.status, job.exit_code) == ("succeeded", 0)
    assert f"job {job_id} succeeded" in log


def test_a_dag_with_only_a_connection_from_the_environment_succeeds(airflow, server):
    before = {j.id for j in Client(server.url).jobs(limit=100)}
    code, log = dag_test(airflow, "dbt_remote_connection")
    assert code == 0, log
    for line in ("OK created sql table model main.orders", "Completed successfully"):
        assert line in log, log
    assert f"submitted to {server.url}" in log, log
    [job] = [j for j in Client(server.url).jobs(limit=100) if j.id not in before]
    assert job.status == "succeeded"


def test_the_token_of_a_connection_reaches_a_server_with_auth_on(airflow, auth_server):
    code, log = dag_test(airflow, "dbt_remote_connection_token")
    assert code == 0, log
    assert "DbtRemoteTrigger" in log, log
    assert "OK created sql view model main.stg_orders" in log, log
    assert TOKEN not in log
    [job] = Client(auth_server.url, token=TOKEN).jobs(limit=10)
    assert job.status == "succeeded"


def test_the_hook_tests_its_connection(server, auth_server, free_url, monkeypatch):
    from dbt_remote.airflow import DbtRemoteHook

    monkeypatch.setenv("AIRFLOW_CONN_DBT_REMOTE_UP", _conn_uri(server.url))
    monkeypatch.setenv("AIRFLOW_CONN_DBT_REMOTE_DOWN", _conn_uri(free_url))
    monkeypatch.setenv("AIRFLOW_CONN_DBT_REMOTE_TOKEN", _conn_uri(auth_server.url, TOKEN))
    monkeypatch.setenv("AIRFLOW_CONN_DBT_REMOTE_BAD_TOKEN", _conn_uri(auth_server.url, "wrong"))
    ok, message = DbtRemoteHook("dbt_remote_up").test_connection()
    assert ok, message
    assert server.url in message
    assert DbtRemoteHook("dbt_remote_token").test_connection()[0]
    ok, message = DbtRemoteHook("dbt_remote_down").test_connection()
    assert not ok and message
    ok, message = DbtRemoteHook("dbt_remote_bad_token").test_connection()
    assert not ok and message
    client = DbtRemoteHook("dbt_remote_up").get_client()
    assert client.server_url == server.url
    assert DbtRemoteHook.default_conn_name == "dbt_remote_default"
    assert DbtRemoteHook.conn_type == "dbt_remote"


def test_the_url_of_a_connection():
    from airflow.sdk import Connection

    from dbt_remote.airflow_hook import server_url_of

    def url(**kw):
        return server_url_of(Connection(conn_id="c", conn_type="dbt_remote", **kw))

    assert url(host="h", port=8001) == "http://h:8001"
    assert url(host="h", port=443, schema="https") == "https://h:443"
    assert url(host="h.example.com", schema="https") == "https://h.example.com"
    assert url(host="https://run.app/") == "https://run.app"
    with pytest.raises(ValueError):
        url(host="h", schema="ftp")
    with pytest.raises(ValueError):
        url(port=1)
    conn = Connection.from_uri("dbt-remote://:t0k@127.0.0.1:8123", conn_id="c")
    assert (conn.conn_type, conn.password, server_url_of(conn)) == (
        "dbt_remote", "t0k", "http://127.0.0.1:8123"
    )


def test_an_explicit_server_url_wins_and_no_connection_keeps_the_settings(free_url, monkeypatch):
    from dbt_remote.airflow import DbtRemoteOperator, DbtRemoteTrigger

    monkeypatch.setenv("AIRFLOW_CONN_DBT_REMOTE_DEFAULT", "dbt-remote://10.9.9.9:1")
    monkeypatch.delenv("DBT_REMOTE_SERVER_URL", raising=False)
    explicit = DbtRemoteOperator(task_id="a", command="run", server_url=free_url)
    assert explicit._connect()[1] is None
    assert explicit._client().server_url == free_url
    from_conn = DbtRemoteOperator(task_id="b", command="run")
    client, conn_id = from_conn._connect()
    assert (client.server_url, conn_id) == ("http://10.9.9.9:1", "dbt_remote_default")
    missing = DbtRemoteOperator(task_id="c", command="run", dbt_remote_conn_id="dbt_remote_none")
    assert missing._connect()[1] is None
    assert missing._client().server_url == Client().server_url
    # The trigger carries the connection's id, never its token.
    _, kwargs = DbtRemoteTrigger(job_id="j", dbt_remote_conn_id="dbt_remote_default").serialize()
    assert kwargs["dbt_remote_conn_id"] == "dbt_remote_default" and kwargs["server_url"] is None


def test_a_failing_model_fails_the_task_naming_the_node(airflow):
    code, log = dag_test(airflow, "dbt_remote_failure")
    assert code != 0, log
    assert "failed: dbt exited with code 1; failing nodes: model.jaffle_duckdb.fail_on_demand" in log, log
    assert "ERROR creating sql table model main.fail_on_demand" in log, log
    assert "state=failed" in log, log


def test_deferrable_mode_streams_logs_from_the_trigger_and_succeeds(airflow):
    code, log = dag_test(airflow, "dbt_remote_deferrable")
    assert code == 0, log
    assert "DEFERRED" in log.upper(), log
    assert "DbtRemoteTrigger" in log, log
    assert "OK created sql table model main.orders" in log, log
    assert "state=success" in log, log


def test_deferrable_failure_is_never_success(airflow):
    code, log = dag_test(airflow, "dbt_remote_deferrable_failure")
    assert code != 0, log
    assert "failing nodes: model.jaffle_duckdb.fail_on_demand" in log, log
    assert "state=failed" in log, log


def test_environment_and_defer_to_are_templated_and_reach_the_job(airflow, server):
    client = Client(server.url)
    # Before prod has a success, deferring to it fails the task with the server's message.
    code, log = dag_test(airflow, "dbt_remote_slim_ci")
    assert code != 0, log
    assert 'environment "airflow-prod" has no succeeded job of project "jaffle_duckdb"' in log, log
    assert client.jobs(environment="airflow-ci") == []

    code, log = dag_test(airflow, "dbt_remote_prod")
    assert code == 0, log
    [prod] = client.jobs(environment="airflow-prod")
    assert prod.status == "succeeded"

    code, log = dag_test(airflow, "dbt_remote_slim_ci")
    assert code == 0, log
    [ci] = client.jobs(environment="airflow-ci")
    assert ci.status == "succeeded"
    # dbt ran with prod's manifest as its state (the server placed it and added --state).
    assert ci.args[-2:] == ["--state", ".dbt-remote/state"], ci.args
    assert "Nothing to do" in log or "nothing to do" in log.lower(), log


def test_a_timeout_cancels_the_remote_job(airflow, server):
    client = Client(server.url)
    code, log = dag_test(airflow, "dbt_remote_timeout")
    assert code != 0, log
    assert "Timeout" in log or "timeout" in log, log
    slow = [j for j in client.jobs(limit=20) if "slow_seconds: 120" in " ".join(j.args)]
    assert slow, "the slow job was submitted"
    job = slow[0]
    with pytest.raises(JobFailed) as ended:
        job.wait(timeout=90, poll_interval=0.5)
    assert ended.value.status == "cancelled", log


def test_a_deferral_timeout_cancels_the_remote_job(server, project):
    # `airflow dags test` runs triggers inline without their timeout, so the operator's resume
    # path is called here as the task runner calls it after a deferral timed out.
    from airflow.exceptions import TaskDeferralTimeout
    from airflow.sdk.bases.operator import TriggerFailureReason

    from dbt_remote.airflow import DbtRemoteOperator

    job = Client(server.url).submit(
        "run --select slow_model --vars '{slow_seconds: 120}'", project
    )

    class TaskInstance:  # the one call the operator makes on it
        def xcom_pull(self, task_ids: str, key: str) -> str:
            assert (task_ids, key) == ("slow", "job_id")
            return job.id

    op = DbtRemoteOperator(task_id="slow", command="run", server_url=server.url, deferrable=True)
    with pytest.raises(TaskDeferralTimeout):
        op.resume_execution(
            "__fail__", {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, {"ti": TaskInstance()}
        )
    with pytest.raises(JobFailed) as ended:
        job.wait(timeout=90, poll_interval=0.5)
    assert ended.value.status == "cancelled"


def _running_job(client: Client, marker: str, timeout: float = 120):
    """The job whose arguments contain `marker`, once dbt runs it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in client.jobs(limit=50):
            if marker in " ".join(job.args) and job.status == "running":
                return job
        time.sleep(0.3)
    raise AssertionError(f"no running job with {marker!r}")


def test_killing_the_task_cancels_the_remote_job(airflow, server):
    # SIGTERM is how Airflow stops a running task (marked failed or cleared, the worker
    # going down): the task runner calls on_kill, which cancels the job, and the task fails.
    client = Client(server.url)
    proc = subprocess.Popen(
        [str(AIRFLOW), "dags", "test", "dbt_remote_kill"], env=airflow.env, cwd=airflow.home,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        job = _running_job(client, "slow_seconds: 121")
        proc.send_signal(signal.SIGTERM)
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(JobFailed) as ended:
        job.wait(timeout=60, poll_interval=0.5)
    assert ended.value.status == "cancelled", log
    assert f"job {job.id} cancelled" in log, log
    assert "state=success" not in log, log


def _follow_in_a_trigger(server, project, monkeypatch, state: str | None, marker: str):
    """A DbtRemoteTrigger following a slow job, cancelled as the triggerer cancels it once
    its task instance is in `state` (the state the Airflow API reports for it)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from dbt_remote.airflow import DbtRemoteTrigger

    client = Client(server.url)
    job = client.submit(f"run --select slow_model --vars '{{slow_seconds: {marker}}}'", project)
    asked = []

    def get_task_states(**kwargs):
        asked.append(kwargs)
        return {"manual__1": {"slow": state}}

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(get_task_states))
    trigger = DbtRemoteTrigger(job_id=job.id, server_url=server.url, poll_interval=0.3)
    trigger.task_instance = SimpleNamespace(
        dag_id="d", task_id="slow", run_id="manual__1", map_index=-1
    )

    async def follow_then_cancel() -> None:
        task = asyncio.ensure_future(anext(trigger.run()))
        deadline = time.monotonic() + 120
        while (await client.job_async(job.id)).status != "running":
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.3)
        await asyncio.sleep(1)
        task.cancel()  # what the triggerer does to a trigger it no longer runs
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(follow_then_cancel())
    assert asked == [
        {"dag_id": "d", "task_ids": ["slow"], "run_ids": ["manual__1"], "map_index": -1}
    ]
    return job


@pytest.mark.parametrize("state", ["failed", None, "success", "up_for_retry", "scheduled"])
def test_a_deferred_task_marked_failed_or_cleared_cancels_its_remote_job(
    server, project, monkeypatch, state
):
    # failed: marked failed; None: cleared; scheduled: the deferral timed out (the task resumes
    # in __fail__, which cancels too).
    marker = {"failed": 131, None: 132, "success": 133, "up_for_retry": 134, "scheduled": 135}
    job = _follow_in_a_trigger(server, project, monkeypatch, state, str(marker[state]))
    with pytest.raises(JobFailed) as ended:
        job.wait(timeout=60, poll_interval=0.5)
    assert ended.value.status == "cancelled"


def test_a_trigger_stopped_while_its_task_is_still_deferred_leaves_the_job_running(
    server, project, monkeypatch
):
    # The triggerer stopping (or handing the trigger to another triggerer) cancels the trigger
    # too: the task is still deferred and will be resumed, so its job goes on.
    job = _follow_in_a_trigger(server, project, monkeypatch, "deferred", "136")
    time.sleep(1)
    job.refresh()
    assert job.status == "running"
    job.cancel()


def test_the_provider_metadata_is_valid_and_found_by_airflow(airflow):
    import json
    from importlib.resources import files

    import jsonschema

    from dbt_remote.airflow_provider import get_provider_info

    schema = json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["connection-types"] == [
        {"hook-class-name": "dbt_remote.airflow_hook.DbtRemoteHook", "connection-type": "dbt_remote"}
    ]
    listed = airflow("providers", "list").stdout
    assert "dbt-remote" in listed, listed
    hooks = airflow("providers", "hooks").stdout
    assert "dbt_remote" in hooks and "DbtRemoteHook" in hooks, hooks
