"""Types of the native module (dbt_remote_py/src). Checked against it by mypy.stubtest in CI."""

import os
import pathlib
from collections.abc import Awaitable, Sequence
from typing import Any, final

__all__ = [
    "AsyncLogIterator",
    "Artifact",
    "AuthError",
    "Client",
    "DbtRemoteError",
    "FailedNode",
    "InvalidInput",
    "Job",
    "JobFailed",
    "LogIterator",
    "LogRecord",
    "NotFound",
    "Schedule",
    "ServerError",
    "WaitTimeout",
    "__version__",
    "split_command",
]

__version__: str

class DbtRemoteError(Exception):
    """Anything that went wrong talking to dbt-server or running a job."""

class InvalidInput(DbtRemoteError, ValueError):
    """The request was refused as invalid (a bad command, a bad path, a bad setting)."""

class NotFound(DbtRemoteError, LookupError):
    """The server has no such job (or artifact)."""

class AuthError(DbtRemoteError):
    """The server refused the credentials (HTTP 401 or 403)."""

class ServerError(DbtRemoteError):
    """The server could not be reached or answered with an unexpected error."""

    status: int | None
    def __init__(self, message: str, status: int | None = None) -> None: ...

class WaitTimeout(DbtRemoteError, TimeoutError):
    """``Job.wait(timeout=...)`` gave up; the job goes on on the server."""

class JobFailed(DbtRemoteError):
    """The job ended failed or cancelled."""

    job_id: str
    status: str
    exit_code: int | None
    failure_reason: str | None
    failed_nodes: list[FailedNode]
    def __init__(
        self,
        message: str,
        job_id: str,
        status: str,
        exit_code: int | None,
        failure_reason: str | None = None,
        failed_nodes: Sequence[Any] | None = ...,
    ) -> None: ...
    def __reduce__(self) -> tuple[Any, ...]: ...

def split_command(command: str) -> list[str]:
    """dbt's arguments from a command line, split as a shell would (never run by one)."""

@final
class Client:
    def __new__(
        cls,
        server_url: str | None = None,
        credentials: str | os.PathLike[str] | None = None,
        *,
        project_dir: str | os.PathLike[str] | None = None,
        manifest: str | os.PathLike[str] | None = None,
        dbt_project: str | os.PathLike[str] | None = None,
        extra_packages: str | os.PathLike[str] | None = None,
        seeds_path: str | os.PathLike[str] | None = None,
        location: str | None = None,
        config_dir: str | os.PathLike[str] | None = None,
        environment: str | None = None,
        token: str | None = None,
        service_account_key: str | None = None,
    ) -> Client: ...
    @property
    def server_url(self) -> str: ...
    def settings(self) -> dict[str, str]: ...
    def submit(
        self,
        command: str | list[str],
        project_dir: str | os.PathLike[str] | None = None,
        *,
        manifest: str | os.PathLike[str] | None = None,
        dbt_project: str | os.PathLike[str] | None = None,
        extra_packages: str | os.PathLike[str] | None = None,
        seeds_path: str | os.PathLike[str] | None = None,
        elementary: bool | None = None,
        environment: str | None = None,
        defer_to: str | None = None,
    ) -> Job: ...
    def submit_async(
        self,
        command: str | list[str],
        project_dir: str | os.PathLike[str] | None = None,
        *,
        manifest: str | os.PathLike[str] | None = None,
        dbt_project: str | os.PathLike[str] | None = None,
        extra_packages: str | os.PathLike[str] | None = None,
        seeds_path: str | os.PathLike[str] | None = None,
        elementary: bool | None = None,
        environment: str | None = None,
        defer_to: str | None = None,
    ) -> Awaitable[Job]: ...
    def health(self) -> dict[str, str]: ...
    def health_async(self) -> Awaitable[dict[str, str]]: ...
    def job(self, id: str) -> Job: ...
    def job_async(self, id: str) -> Awaitable[Job]: ...
    def jobs(
        self,
        status: str | None = None,
        limit: int = 50,
        *,
        project: str | None = None,
        environment: str | None = None,
        target: str | None = None,
    ) -> list[Job]: ...
    def jobs_async(
        self,
        status: str | None = None,
        limit: int = 50,
        *,
        project: str | None = None,
        environment: str | None = None,
        target: str | None = None,
    ) -> Awaitable[list[Job]]: ...
    def create_schedule(
        self,
        cron: str,
        args: str | list[str],
        name: str | None = None,
        project_dir: str | os.PathLike[str] | None = None,
        *,
        manifest: str | os.PathLike[str] | None = None,
        dbt_project: str | os.PathLike[str] | None = None,
        extra_packages: str | os.PathLike[str] | None = None,
        seeds_path: str | os.PathLike[str] | None = None,
    ) -> Schedule: ...
    def create_schedule_async(
        self,
        cron: str,
        args: str | list[str],
        name: str | None = None,
        project_dir: str | os.PathLike[str] | None = None,
        *,
        manifest: str | os.PathLike[str] | None = None,
        dbt_project: str | os.PathLike[str] | None = None,
        extra_packages: str | os.PathLike[str] | None = None,
        seeds_path: str | os.PathLike[str] | None = None,
    ) -> Awaitable[Schedule]: ...
    def list_schedules(self) -> list[Schedule]: ...
    def list_schedules_async(self) -> Awaitable[list[Schedule]]: ...
    def schedule(self, name: str) -> Schedule: ...
    def schedule_async(self, name: str) -> Awaitable[Schedule]: ...
    def delete_schedule(self, name: str) -> None: ...
    def delete_schedule_async(self, name: str) -> Awaitable[None]: ...
    def run_schedule(self, name: str) -> Job: ...
    def run_schedule_async(self, name: str) -> Awaitable[Job]: ...

@final
class Schedule:
    @property
    def name(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def cron(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def command(self) -> str: ...
    @property
    def args(self) -> list[str]: ...
    @property
    def file_count(self) -> int: ...
    @property
    def created_at(self) -> str: ...
    @property
    def next_run(self) -> str | None: ...
    @property
    def last_run(self) -> str | None: ...
    @property
    def last_job(self) -> str | None: ...
    @property
    def environment(self) -> str | None: ...

@final
class Job:
    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def failure_reason(self) -> str | None: ...
    @property
    def args(self) -> list[str]: ...
    @property
    def project(self) -> str | None: ...
    @property
    def target(self) -> str | None: ...
    @property
    def environment(self) -> str | None: ...
    @property
    def created_at(self) -> str: ...
    @property
    def started_at(self) -> str | None: ...
    @property
    def finished_at(self) -> str | None: ...
    @property
    def done(self) -> bool: ...
    @property
    def elementary(self) -> bool: ...
    def report_url(self) -> str | None: ...
    @property
    def outcome(self) -> str | None: ...
    def refresh(self) -> None: ...
    def refresh_async(self) -> Awaitable[None]: ...
    def logs(self, follow: bool = True, after: int = 0) -> LogIterator: ...
    def logs_async(self, follow: bool = True, after: int = 0) -> AsyncLogIterator: ...
    def wait(self, timeout: float | None = None, poll_interval: float = 1.0) -> None: ...
    def wait_async(self, poll_interval: float = 1.0) -> Awaitable[None]: ...
    def cancel(self) -> None: ...
    def cancel_async(self) -> Awaitable[None]: ...
    def artifacts(self) -> list[Artifact]: ...
    def artifacts_async(self) -> Awaitable[list[Artifact]]: ...
    def download_artifacts(self, dir: str | os.PathLike[str]) -> list[pathlib.Path]: ...
    def download_artifacts_async(
        self, dir: str | os.PathLike[str]
    ) -> Awaitable[list[pathlib.Path]]: ...
    def failed_nodes(self) -> list[FailedNode]: ...
    def failed_nodes_async(self) -> Awaitable[list[FailedNode]]: ...
    def retry(self, project_dir: str | os.PathLike[str] | None = None) -> Job: ...
    def retry_async(
        self, project_dir: str | os.PathLike[str] | None = None
    ) -> Awaitable[Job]: ...

@final
class Artifact:
    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...

@final
class FailedNode:
    @property
    def unique_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def message(self) -> str | None: ...

@final
class LogRecord:
    @property
    def seq(self) -> int: ...
    @property
    def time(self) -> str: ...
    @property
    def level(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def node(self) -> str | None: ...
    @property
    def node_status(self) -> str | None: ...
    @property
    def event(self) -> str | None: ...

@final
class LogIterator:
    def __iter__(self) -> LogIterator: ...
    def __next__(self) -> LogRecord: ...

@final
class AsyncLogIterator:
    def __aiter__(self) -> AsyncLogIterator: ...
    def __anext__(self) -> Awaitable[LogRecord]: ...
