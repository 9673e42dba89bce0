"""dbt-remote from Python: submit dbt commands to a dbt-server, follow their logs live, wait,
cancel and fetch artifacts. A thin shell over the Rust core (``dbt_remote._native``).

    >>> from dbt_remote import Client
    >>> job = Client("http://127.0.0.1:8001").submit("build --select orders+", "my_project")
    >>> for record in job.logs():
    ...     print(record.level, record.message)
    >>> job.wait()  # raises JobFailed when dbt failed
"""

from dbt_remote._native import (
    Artifact,
    AsyncLogIterator,
    Client,
    FailedNode,
    Job,
    LogIterator,
    LogRecord,
    __version__,
    split_command,
)
from dbt_remote.errors import (
    AuthError,
    DbtRemoteError,
    InvalidInput,
    JobFailed,
    NotFound,
    ServerError,
    WaitTimeout,
)

__all__ = [
    "Artifact",
    "AsyncLogIterator",
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
    "ServerError",
    "WaitTimeout",
    "__version__",
    "split_command",
]
