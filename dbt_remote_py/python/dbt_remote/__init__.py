"""dbt-remote from Python: submit dbt commands to a dbt-server, follow their logs live, wait,
cancel and fetch artifacts. A thin shell over the Rust core (``dbt_remote._native``).

    >>> from dbt_remote import Client
    >>> job = Client("http://127.0.0.1:8001").submit("build --select orders+", "my_project")
    >>> for record in job.logs():
    ...     print(record.level, record.message)
    >>> job.wait()  # raises JobFailed when dbt failed
"""

from dbt_remote import errors  # noqa: F401 (`import dbt_remote` loads dbt_remote.errors)
from dbt_remote._native import *  # noqa: F403

# The names of the native module: every class and exception (the exceptions are those of
# dbt_remote.errors, the same classes), split_command and __version__. (Imported as is,
# mypy reads the list from the stub.)
from dbt_remote._native import __all__ as __all__
