"""Apache Airflow integration: run a dbt command on a dbt-server from a DAG, with dbt's log
lines in the task log as they happen.

    from dbt_remote.airflow import DbtRemoteOperator

    DbtRemoteOperator(
        task_id="dbt_build",
        command="build --select orders+",
        project_dir="/opt/airflow/dbt/jaffle",
    )

The server is the one of the Airflow connection ``dbt_remote_default`` (type ``dbt_remote``,
see ``DbtRemoteHook``), e.g. ``AIRFLOW_CONN_DBT_REMOTE_DEFAULT='dbt-remote://dbt-server:8001'``.

Importable only where Airflow (3.x) is installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

try:
    from airflow.exceptions import AirflowException, AirflowNotFoundException
    from airflow.sdk import BaseOperator, BaseOperatorLink
    from airflow.sdk.execution_time.xcom import XCom
    from airflow.triggers.base import BaseTrigger, TriggerEvent
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dbt_remote.airflow needs Apache Airflow 3: pip install 'dbt-remote[airflow]'"
    ) from e

from dbt_remote import Client, Job, JobFailed, LogRecord
from dbt_remote.airflow_hook import DbtRemoteHook

__all__ = ["DbtRemoteHook", "DbtRemoteJobLink", "DbtRemoteOperator", "DbtRemoteTrigger"]

JOB_URL_KEY = "job_url"
"""The XCom key of the URL of the job's page on the server's web UI."""

_LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}


def _log_record(log: Any, record: LogRecord) -> None:
    """One record of the job's log as one line of the task log, at its level."""
    log.log(_LEVELS.get(record.level, 20), "%s", record.message)


def job_url(server_url: str, job_id: str) -> str:
    """The page of a job on dbt-server's web UI."""
    return f"{server_url.rstrip('/')}/ui/jobs/{job_id}"


class DbtRemoteJobLink(BaseOperatorLink):
    """The task's button "dbt-remote job": the job's page on the web UI of the server the task
    used, from the XCom ``job_url`` the task pushed when it submitted the job."""

    name = "dbt-remote job"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        return XCom.get_value(ti_key=ti_key, key=JOB_URL_KEY) or ""


def _failure_message(job: Job) -> str:
    """Why the job did not succeed, with the failing nodes (texts made by dbt_remote)."""
    try:
        job.wait(poll_interval=0.2)  # the job has ended: this returns at once
    except JobFailed as e:
        return str(e)
    except Exception:  # noqa: BLE001 - the outcome below still says it
        pass
    return job.outcome or f"job {job.id} is {job.status}"


class DbtRemoteTrigger(BaseTrigger):
    """Waits for a dbt-remote job in the triggerer, writing its log records to the task log.
    Resumable: it is rebuilt from the job id and where the server is (``server_url``, else the
    connection ``dbt_remote_conn_id``, read again in the triggerer: no token is serialized).
    Fires one event with the final status."""

    def __init__(
        self,
        job_id: str,
        server_url: str | None = None,
        credentials: str | None = None,
        poll_interval: float = 2.0,
        stream_logs: bool = True,
        dbt_remote_conn_id: str | None = None,
    ) -> None:
        super().__init__()
        self.dbt_remote_conn_id = dbt_remote_conn_id
        self.job_id = job_id
        self.server_url = server_url
        self.credentials = credentials
        self.poll_interval = poll_interval
        self.stream_logs = stream_logs

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "dbt_remote.airflow.DbtRemoteTrigger",
            {
                "job_id": self.job_id,
                "server_url": self.server_url,
                "credentials": self.credentials,
                "poll_interval": self.poll_interval,
                "stream_logs": self.stream_logs,
                "dbt_remote_conn_id": self.dbt_remote_conn_id,
            },
        )

    async def _client(self) -> Client:
        if self.server_url is None and self.dbt_remote_conn_id:
            return await DbtRemoteHook(self.dbt_remote_conn_id).aget_client(self.credentials)
        return Client(self.server_url, self.credentials)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            client = await self._client()
            job = await client.job_async(self.job_id)
            if self.stream_logs:
                async for record in job.logs_async():
                    _log_record(self.log, record)
            try:
                await job.wait_async(poll_interval=self.poll_interval)
            except JobFailed:
                pass  # the event carries the status; the operator fails the task
        except asyncio.CancelledError:
            # The triggerer cancels a trigger both when its task left the deferred state
            # (cleared, marked failed or success, deferral timed out) and when the triggerer
            # stops or hands the trigger to another one: only in the first case must the job go.
            if await self._task_left_deferral():
                await self._cancel_job()
            raise
        except Exception as e:  # noqa: BLE001 - reported to the task, not lost in the triggerer
            yield TriggerEvent({"job_id": self.job_id, "status": "error", "error": str(e)})
            return
        yield TriggerEvent(
            {
                "job_id": job.id,
                "status": job.status,
                "exit_code": job.exit_code,
                "failure_reason": job.failure_reason,
                "outcome": job.outcome,
            }
        )


    async def _task_left_deferral(self) -> bool:
        """Whether the task instance of this trigger is no longer deferred (asked of the
        Airflow API through the triggerer's supervisor). Unknown counts as still deferred: the
        task's own resume and kill paths cancel the job then."""
        ti = self.task_instance
        if ti is None:
            return False
        try:
            from asgiref.sync import sync_to_async
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

            states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
                dag_id=ti.dag_id,
                task_ids=[ti.task_id],
                run_ids=[ti.run_id],
                map_index=ti.map_index,
            )
            state = states[ti.run_id][ti.task_id]
        except Exception as e:  # noqa: BLE001 - see the docstring
            self.log.warning("dbt-remote: could not read the state of the task: %s", e)
            return False
        return state != "deferred"

    async def _cancel_job(self) -> None:
        try:
            client = await self._client()
            job = await client.job_async(self.job_id)
            if not job.done:
                await job.cancel_async()
                self.log.warning("dbt-remote: job %s cancelled: the task is no longer deferred", self.job_id)
        except Exception as e:  # noqa: BLE001 - best effort while going down
            self.log.error("dbt-remote: could not cancel job %s: %s", self.job_id, e)


class DbtRemoteOperator(BaseOperator):
    """Runs a dbt command on a dbt-server and fails the task when dbt fails.

    Each record of the job's log is written to the task log as it arrives. The job id is
    pushed to XCom (key ``job_id``, also the return value), and the URL of its page on the
    server's web UI (key ``job_url``: the task's extra link "dbt-remote job"). Killing the task
    or its timeout cancels the remote job. With ``deferrable=True`` the wait runs in the triggerer
    (``DbtRemoteTrigger``), so no worker slot is held while dbt runs.

    ``command`` is a string (split as a shell would, never run by one) or a list of
    arguments. The server is ``server_url`` when given (with ``credentials``), else the one of
    the Airflow connection ``dbt_remote_conn_id`` (default ``dbt_remote_default``; its
    password is a static token), else as in the ``dbt-remote`` CLI (``DBT_REMOTE_*``
    variables, then ``dbt_remote.yml``). The packing options resolve as in the CLI.

    ``environment`` names the environment the job runs for (default: the ``environment``
    setting); ``defer_to="prod"`` runs with the manifest of prod's latest succeeded job as
    dbt's ``--state``, e.g. with ``command="build --select state:modified+ --defer"``
    (docs/slim-ci.md). Both are templated.

    With the OpenLineage provider installed, the task's lineage is the datasets the job read
    and wrote (``get_openlineage_facets_on_complete``, from the job's ``manifest.json`` and
    ``run_results.json``); ``openlineage_namespace`` sets their namespace (default for DuckDB
    ``duckdb://<database>``).
    """

    template_fields: Sequence[str] = (
        "command",
        "project_dir",
        "server_url",
        "manifest",
        "dbt_project",
        "extra_packages",
        "seeds_path",
        "environment",
        "defer_to",
    )
    ui_color = "#ff694a"
    operator_extra_links = (DbtRemoteJobLink(),)

    def __init__(
        self,
        *,
        command: str | list[str],
        project_dir: str = ".",
        server_url: str | None = None,
        credentials: str | None = None,
        manifest: str | None = None,
        dbt_project: str | None = None,
        extra_packages: str | None = None,
        seeds_path: str | None = None,
        environment: str | None = None,
        defer_to: str | None = None,
        poll_interval: float = 2.0,
        deferrable: bool = False,
        dbt_remote_conn_id: str = DbtRemoteHook.default_conn_name,
        openlineage_namespace: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dbt_remote_conn_id = dbt_remote_conn_id
        self.command = command
        self.project_dir = project_dir
        self.server_url = server_url
        self.credentials = credentials
        self.manifest = manifest
        self.dbt_project = dbt_project
        self.extra_packages = extra_packages
        self.seeds_path = seeds_path
        self.environment = environment
        self.defer_to = defer_to
        self.poll_interval = poll_interval
        self.deferrable = deferrable
        self.openlineage_namespace = openlineage_namespace
        self._job: Job | None = None
        self._lineage_artifacts: tuple[str, str, dict[str, Any]] | None = None

    def _conn_id(self) -> str | None:
        """The connection the server comes from: none when ``server_url`` is given or the
        connection does not exist (the CLI's settings then)."""
        if self.server_url or not self.dbt_remote_conn_id:
            return None
        try:
            DbtRemoteHook.get_connection(self.dbt_remote_conn_id)
        except AirflowNotFoundException:
            return None
        return self.dbt_remote_conn_id

    def _connect(self) -> tuple[Client, str | None]:
        """The client, and the connection it was made from (if any)."""
        conn_id = self._conn_id()
        if conn_id is not None:
            return DbtRemoteHook(conn_id).get_client(self.credentials), conn_id
        return Client(self.server_url, self.credentials), None

    def _client(self) -> Client:
        return self._connect()[0]

    def execute(self, context: Any) -> str:
        client, conn_id = self._connect()
        job = client.submit(
            self.command,
            self.project_dir,
            manifest=self.manifest,
            dbt_project=self.dbt_project,
            extra_packages=self.extra_packages,
            seeds_path=self.seeds_path,
            environment=self.environment or None,
            defer_to=self.defer_to or None,
        )
        self._job = job
        self.log.info("dbt-remote: job %s submitted to %s", job.id, client.server_url)
        context["ti"].xcom_push(key="job_id", value=job.id)
        context["ti"].xcom_push(key=JOB_URL_KEY, value=job_url(client.server_url, job.id))
        if self.deferrable:
            self.defer(
                trigger=DbtRemoteTrigger(
                    job_id=job.id,
                    # From a connection, the trigger reads it again (no token serialized).
                    server_url=None if conn_id is not None else client.server_url,
                    credentials=self.credentials,
                    poll_interval=self.poll_interval,
                    dbt_remote_conn_id=conn_id,
                ),
                method_name="execute_complete",
                timeout=self.execution_timeout,
            )
        try:
            for record in job.logs():
                _log_record(self.log, record)
            job.wait(poll_interval=self.poll_interval)
        except JobFailed as e:
            raise AirflowException(str(e)) from e
        except BaseException:
            # Timeout (AirflowTaskTimeout), kill, Ctrl-C: the remote job must not go on.
            self._cancel()
            raise
        self.log.info("dbt-remote: %s", job.outcome)
        self._keep_lineage_artifacts(job.id, client)
        return job.id

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str:
        job_id = event.get("job_id")
        status = event.get("status")
        if status == "succeeded":
            self.log.info("dbt-remote: %s", event.get("outcome") or f"job {job_id} succeeded")
            self._keep_lineage_artifacts(str(job_id))
            return str(job_id)
        if status == "error":
            raise AirflowException(f"dbt-remote: following job {job_id} failed: {event.get('error')}")
        job = self._client().job(str(job_id))
        raise AirflowException(_failure_message(job))

    def resume_execution(
        self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any
    ) -> Any:
        if next_method == "__fail__":
            # The deferral timed out or the trigger failed: the remote job must not go on.
            job_id = context["ti"].xcom_pull(task_ids=self.task_id, key="job_id")
            if job_id:
                self._job = self._client().job(str(job_id))
                self._cancel()
        return super().resume_execution(next_method, next_kwargs, context)

    def _keep_lineage_artifacts(self, job_id: str, client: Client | None = None) -> None:
        """With OpenLineage on, fetch the succeeded job's artifacts now, in the task's process:
        the listener calls ``get_openlineage_facets_on_complete`` in a forked child (by
        default), where the client cannot make requests."""
        try:
            from airflow.providers.openlineage.conf import is_disabled
        except ImportError:
            return  # no OpenLineage provider: nothing to report to
        try:
            if is_disabled():
                return
            from dbt_remote.airflow_openlineage import fetch_artifacts

            client = client or self._client()
            artifacts = fetch_artifacts(client.job(job_id))
            self._lineage_artifacts = (job_id, client.server_url, artifacts)
        except Exception as e:  # noqa: BLE001 - lineage never fails the task
            self.log.warning(
                "dbt-remote: could not fetch the artifacts of job %s for OpenLineage: %s", job_id, e
            )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The datasets the job read and wrote, for the OpenLineage provider's listener (it
        calls this once the task succeeded, also after a deferral), from the artifacts the task
        fetched. Lineage never fails the task: on an error it logs a warning and reports no
        datasets."""
        try:
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:  # pragma: no cover - the provider calls this, so it is installed
            return None
        try:
            from dbt_remote.airflow_openlineage import job_lineage

            if self._lineage_artifacts is None:
                raise ValueError("the task fetched no artifacts of its job")
            job_id, server_url, artifacts = self._lineage_artifacts
            return job_lineage(job_id, server_url, artifacts, self.openlineage_namespace, self.log)
        except Exception as e:  # noqa: BLE001 - see the docstring
            self.log.warning("dbt-remote: no OpenLineage datasets for this task: %s", e)
            return OperatorLineage()

    def on_kill(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        job = self._job
        if job is None or job.done:
            return
        try:
            job.cancel()
            self.log.warning("dbt-remote: job %s cancelled", job.id)
        except Exception as e:  # noqa: BLE001 - cancelling is best effort when going down
            self.log.error("dbt-remote: could not cancel job %s: %s", job.id, e)
