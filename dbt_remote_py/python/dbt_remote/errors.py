"""Exceptions of dbt_remote: every one derives from DbtRemoteError.

They are made in the native module (``dbt_remote._native``), which raises them by the kind of
error the Rust core reports; this module is where they are imported from.

- ``DbtRemoteError``: anything that went wrong talking to dbt-server or running a job.
- ``InvalidInput`` (also a ``ValueError``): the request was refused as invalid (a bad command,
  a bad path, a bad setting).
- ``NotFound`` (also a ``LookupError``): the server has no such job (or artifact).
- ``AuthError``: the server refused the credentials (HTTP 401 or 403).
- ``ServerError``: the server could not be reached or answered with an unexpected error;
  ``status`` is the HTTP status of its answer (``None`` when there was none).
- ``WaitTimeout`` (also a ``TimeoutError``): ``Job.wait(timeout=...)`` gave up; the job goes
  on on the server.
- ``JobFailed``: the job ended failed or cancelled. ``exit_code`` is dbt's (``None`` if dbt did
  not end by itself, e.g. when the job was cancelled); ``failed_nodes`` lists the nodes that
  errored or failed (``FailedNode`` objects with ``unique_id``, ``status`` and ``message``);
  also ``job_id``, ``status`` and ``failure_reason``. Picklable (without the nodes).
"""

from dbt_remote._native import (
    AuthError,
    DbtRemoteError,
    InvalidInput,
    JobFailed,
    NotFound,
    ServerError,
    WaitTimeout,
)

__all__ = [
    "AuthError",
    "DbtRemoteError",
    "InvalidInput",
    "JobFailed",
    "NotFound",
    "ServerError",
    "WaitTimeout",
]
