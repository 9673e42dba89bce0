"""Fixtures: a real dbt-server (the binary of this workspace) running real dbt, on 127.0.0.1.

The paths come from the environment, as scripts/test-python.sh sets it:
DBT_REMOTE_SERVER_BIN (the dbt-server binary) and DBT_REMOTE_DBT_PATH (dbt in its venv).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "jaffle_duckdb"
PROFILES = ROOT / "examples" / "profiles"


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run the tests with scripts/test-python.sh", returncode=2)
    return value


class Server:
    """A dbt-server process; stopped by `stop()`."""

    def __init__(
        self,
        state: Path,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        port: int = 0,
    ) -> None:
        binary = _required_env("DBT_REMOTE_SERVER_BIN")
        dbt = _required_env("DBT_REMOTE_DBT_PATH")
        state.mkdir(parents=True, exist_ok=True)
        self.log_path = state / "server.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [binary, "--port", str(port), "--state-dir", str(state / "state"), "--dbt", dbt,
             "--profiles-dir", str(PROFILES), *(extra or [])],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.url = self._wait_for_address()

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            found = re.search(r"listening on (http://\S+)", text)
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                raise RuntimeError(f"dbt-server did not start:\n{text}")
            time.sleep(0.05)
        raise RuntimeError("dbt-server did not report its address")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("server"))
    yield s
    s.stop()
    if os.environ.get("DBT_REMOTE_SHOW_SERVER_LOG"):
        sys.stderr.write(s.log_path.read_text(errors="replace"))


TOKEN = "py-static-token-17"


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A dbt-server started with auth on: the static token `TOKEN`."""
    import hashlib

    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    s = Server(tmp_path_factory.mktemp("auth-server"), ["--auth-token-sha256", digest])
    yield s
    s.stop()


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A fresh copy of the example project."""
    dest = tmp_path / "jaffle_duckdb"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("target", "dbt_packages", "logs"))
    return dest


def free_port() -> int:
    """A port of 127.0.0.1 where nothing listens (now)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def free_url() -> str:
    """The URL of a port of 127.0.0.1 where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
