"""The Airflow provider metadata of dbt-remote, found by Airflow's providers manager through the
``apache_airflow_provider`` entry point: the connection type ``dbt_remote`` with its hook, the
operator and its extra link "dbt-remote job". Importing this module needs no Airflow."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["get_provider_info"]

INTEGRATION = "dbt-remote"


def _version() -> str:
    try:
        return version("dbt-remote")
    except PackageNotFoundError:  # pragma: no cover - a source tree, not installed
        return "0.0.0"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "dbt-remote",
        "name": "dbt-remote",
        "description": "Run dbt commands on a dbt-server from Airflow: the dbt_remote connection, "
        "DbtRemoteHook and DbtRemoteOperator (dbt's log lines in the task log, deferrable, a link "
        "to the job's page, OpenLineage datasets from the job's artifacts).",
        "versions": [_version()],
        "integrations": [{"integration-name": INTEGRATION, "tags": ["service"]}],
        "operators": [
            {"integration-name": INTEGRATION, "python-modules": ["dbt_remote.airflow"]}
        ],
        "hooks": [
            {"integration-name": INTEGRATION, "python-modules": ["dbt_remote.airflow_hook"]}
        ],
        "triggers": [
            {"integration-name": INTEGRATION, "python-modules": ["dbt_remote.airflow"]}
        ],
        "extra-links": ["dbt_remote.airflow.DbtRemoteJobLink"],
        "connection-types": [
            {
                "hook-class-name": "dbt_remote.airflow_hook.DbtRemoteHook",
                "connection-type": "dbt_remote",
            }
        ],
    }
