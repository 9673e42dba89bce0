"""Exceptions of dbt_remote: every one derives from DbtRemoteError."""

from __future__ import annotations

from typing import Any, Sequence


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

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WaitTimeout(DbtRemoteError, TimeoutError):
    """``Job.wait(timeout=...)`` gave up; the job goes on on the server."""


class JobFailed(DbtRemoteError):
    """The job ended failed or cancelled. ``exit_code`` is dbt's (``None`` if dbt did not end
    by itself, e.g. when the job was cancelled); ``failed_nodes`` lists the nodes that errored
    or failed (``FailedNode`` objects with ``unique_id``, ``status`` and ``message``)."""

    def __init__(
        self,
        message: str,
        job_id: str,
        status: str,
        exit_code: int | None,
        failure_reason: str | None = None,
        failed_nodes: Sequence[Any] = (),
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status
        self.exit_code = exit_code
        self.failure_reason = failure_reason
        self.failed_nodes = list(failed_nodes)

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (Airflow may carry exceptions across processes).
        return (
            type(self),
            (
                str(self),
                self.job_id,
                self.status,
                self.exit_code,
                self.failure_reason,
                [],
            ),
        )
