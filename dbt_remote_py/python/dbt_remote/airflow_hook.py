"""The Airflow connection type ``dbt_remote`` and its hook: a dbt-server as an Airflow
Connection. Host, port and schema (``http``, the default, or ``https``) give the server URL; the
password, when set, is a static token sent as it is. Extras (JSON): ``key_path`` (a Google
service-account key file) or ``keyfile_dict`` (the key's JSON itself), whose ID tokens are
sent instead; ``location`` (a Cloud Run region) finds the server on Cloud Run when no host is
set.

    AIRFLOW_CONN_DBT_REMOTE_DEFAULT='dbt-remote://dbt-server:8001'
    AIRFLOW_CONN_DBT_REMOTE_DEFAULT='dbt-remote://:TOKEN@dbt-server.example.com:443/https'
    AIRFLOW_CONN_DBT_REMOTE_DEFAULT='{"conn_type": "dbt_remote",
        "extra": {"location": "europe-west1", "key_path": "/secrets/sa.json"}}'

Importable only where Airflow (3.x) is installed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

try:
    from airflow.sdk import BaseHook
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dbt_remote.airflow needs Apache Airflow 3: pip install 'dbt-remote[airflow]'"
    ) from e

from dbt_remote import Client

__all__ = ["DbtRemoteHook", "server_url_of"]

#: The extras a ``dbt_remote`` connection reads.
EXTRAS = ("key_path", "keyfile_dict", "location")

_log = logging.getLogger(__name__)


def extras_of(conn: Any) -> dict[str, Any]:
    """The known extras of a connection (also under the ``extra__dbt_remote__`` prefix of
    Airflow 2's forms); others are named in a warning, empty ones are unset."""
    raw = conn.extra_dejson or {}
    extras: dict[str, Any] = {}
    for name, value in raw.items():
        key = name.removeprefix("extra__dbt_remote__")
        if key not in EXTRAS:
            _log.warning("connection %r: unknown extra %r (known: %s)", conn.conn_id, name, ", ".join(EXTRAS))
        elif value not in (None, "", {}):
            extras[key] = value
    return extras


def server_url_of(conn: Any) -> str | None:
    """The server URL of a ``dbt_remote`` connection: ``{schema}://{host}:{port}``; ``None``
    without a host when the extra ``location`` asks for a Cloud Run discovery."""
    host = (conn.host or "").strip()
    if not host:
        if "location" in extras_of(conn):
            return None
        raise ValueError(
            f"connection {conn.conn_id!r}: no host (the dbt-server's address), and no extra "
            "location (a Cloud Run region to find it in)"
        )
    if "://" in host:  # a whole URL written as the host
        return host.rstrip("/")
    scheme = (conn.schema or "http").strip().lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"connection {conn.conn_id!r}: schema must be http or https, not {scheme!r}")
    return f"{scheme}://{host}:{conn.port}" if conn.port else f"{scheme}://{host}"


def client_of(conn: Any, credentials: str | None = None) -> Client:
    """A client of the server of a ``dbt_remote`` connection: its password as token, or the
    service-account key of its extras (``credentials``, a key file given to the operator,
    wins over ``key_path``)."""
    extras = extras_of(conn)
    token = conn.password or None
    key = extras.get("keyfile_dict")
    if key is not None and not isinstance(key, str):
        key = json.dumps(key)
    if sum(x is not None for x in (token, key, extras.get("key_path"))) > 1:
        raise ValueError(
            f"connection {conn.conn_id!r}: give one of a password (a static token), the extra "
            "key_path or the extra keyfile_dict"
        )
    return Client(
        server_url_of(conn),
        credentials or extras.get("key_path"),
        location=extras.get("location"),
        token=token,
        service_account_key=key,
    )


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
            "hidden_fields": ["login"],
            "relabeling": {"password": "Static token", "schema": "Scheme (http or https)"},
            "placeholders": {
                "host": "dbt-server.example.com (empty: found on Cloud Run in the extra location)",
                "port": "8001",
                "schema": "http",
                "extra": json.dumps(
                    {"key_path": "/secrets/sa-key.json", "keyfile_dict": "", "location": "europe-west1"}
                ),
            },
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
