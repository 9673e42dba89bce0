"""The Airflow connection type ``dbt_remote`` and its hook: a dbt-server as an Airflow
Connection. Host, port and schema (``http``, the default, or ``https``) give the server URL; the
password, when set, is a static token sent as it is.

    AIRFLOW_CONN_DBT_REMOTE_DEFAULT='dbt-remote://dbt-server:8001'
    AIRFLOW_CONN_DBT_REMOTE_DEFAULT='dbt-remote://:TOKEN@dbt-server.example.com:443/https'

Importable only where Airflow (3.x) is installed.
"""

from __future__ import annotations

from typing import Any

try:
    from airflow.sdk import BaseHook
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dbt_remote.airflow needs Apache Airflow 3: pip install 'dbt-remote[airflow]'"
    ) from e

from dbt_remote import Client

__all__ = ["DbtRemoteHook", "server_url_of"]


def server_url_of(conn: Any) -> str:
    """The server URL of a ``dbt_remote`` connection: ``{schema}://{host}:{port}``."""
    host = (conn.host or "").strip()
    if not host:
        raise ValueError(f"connection {conn.conn_id!r}: no host (the dbt-server's address)")
    if "://" in host:  # a whole URL written as the host
        return host.rstrip("/")
    scheme = (conn.schema or "http").strip().lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"connection {conn.conn_id!r}: schema must be http or https, not {scheme!r}")
    return f"{scheme}://{host}:{conn.port}" if conn.port else f"{scheme}://{host}"


def client_of(conn: Any, credentials: str | None = None) -> Client:
    """A client of the server of a ``dbt_remote`` connection, with its password as token."""
    return Client(server_url_of(conn), credentials, token=conn.password or None)


class DbtRemoteHook(BaseHook):
    """A client of the dbt-server of an Airflow connection of type ``dbt_remote``.

    ``get_client()`` makes the client (``dbt_remote.Client``); ``test_connection()`` asks the
    server for its health, then lists one job, so a wrong token fails the test too.
    """

    conn_name_attr = "dbt_remote_conn_id"
    default_conn_name = "dbt_remote_default"
    conn_type = "dbt_remote"
    hook_name = "dbt-remote"

    def __init__(self, dbt_remote_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dbt_remote_conn_id = dbt_remote_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["login", "extra"],
            "relabeling": {"password": "Static token", "schema": "Scheme (http or https)"},
            "placeholders": {"host": "dbt-server.example.com", "port": "8001", "schema": "http"},
        }

    def get_conn(self) -> Client:
        return self.get_client()

    def get_client(self, credentials: str | None = None) -> Client:
        return client_of(self.get_connection(self.dbt_remote_conn_id), credentials)

    async def aget_client(self, credentials: str | None = None) -> Client:
        """``get_client`` for a trigger: reads the connection without blocking the loop."""
        return client_of(await self.aget_connection(self.dbt_remote_conn_id), credentials)

    def test_connection(self) -> tuple[bool, str]:
        try:
            client = self.get_client()
            health = client.health()
            client.jobs(limit=1)
        except Exception as e:  # noqa: BLE001 - the UI shows the message
            return False, str(e)
        return True, f"dbt-server {health.get('version', '')} at {client.server_url}: {health.get('status', 'ok')}"
