"""Browser tests of the web UI: the real dbt-server binary running real dbt on a copy of
examples/jaffle_duckdb, on 127.0.0.1 and a free port, driven through Debian's chromium by
Playwright (never a downloaded browser).

scripts/test-ui.sh sets the environment: DBT_REMOTE_SERVER_BIN (the dbt-server binary),
DBT_REMOTE_DBT_PATH (dbt in its venv), DBT_REMOTE_CHROMIUM (default /usr/bin/chromium).
With DBT_REMOTE_UPDATE_SCREENSHOTS=1 the screenshots go to docs/ui/ (else to a temp dir).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "jaffle_duckdb"
PROFILES = ROOT / "examples" / "profiles"
SKIPPED = {"target", "dbt_packages", "logs"}
FINAL = {"succeeded", "failed", "cancelled"}

# A token and its SHA-256, for the server with authentication on.
TOKEN = "ui-test-token-0123456789"
TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()


def required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run the tests with scripts/test-ui.sh", returncode=2)
    return value


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Polls `condition` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Server:
    """A dbt-server process on 127.0.0.1 and a free port, with its own state dir."""

    def __init__(self, state: Path, extra: list[str] | None = None, token: str | None = None) -> None:
        binary = required_env("DBT_REMOTE_SERVER_BIN")
        dbt = required_env("DBT_REMOTE_DBT_PATH")
        state.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.log_path = state / "server.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", "0", "--state-dir", str(state / "state"),
             "--dbt", dbt, "--profiles-dir", str(PROFILES), "--cancel-grace-seconds", "5",
             *(extra or [])],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = self._wait_for_address()

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            found = re.search(r"listening on (http://\S+)", text)
            if found:
                return found.group(1).rstrip("/")
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
        if os.environ.get("DBT_REMOTE_SHOW_SERVER_LOG"):
            sys.stderr.write(self.log_path.read_text(errors="replace"))

    # ---- the API, as the CLI calls it ----

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
        """One HTTP call; returns the status and the body (error statuses too)."""
        headers = {"content-type": content_type} if body is not None else {}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, method: str, path: str, value: Any = None) -> Any:
        body = None if value is None else json.dumps(value).encode()
        status, answer = self.request(method, path, body)
        assert 200 <= status < 300, f"{method} {path}: {status} {answer[:500]!r}"
        return json.loads(answer) if answer else None

    def upload(self, project: Path) -> list[dict[str, str]]:
        """Uploads the project's files the server lacks; returns the submit's file list."""
        files, contents = [], {}
        for path in sorted(project.rglob("*")):
            rel = path.relative_to(project)
            if not path.is_file() or rel.parts[0] in SKIPPED or path.suffix == ".duckdb":
                continue
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            contents[digest] = data
            files.append({"path": rel.as_posix(), "sha256": digest})
        missing = self.json("POST", "/api/v1/blobs/missing", {"hashes": sorted(contents)})["missing"]
        for digest in missing:
            status, answer = self.request("PUT", f"/api/v1/blobs/{digest}", contents[digest],
                                          "application/octet-stream")
            assert status == 201, answer
        return files

    def submit(self, project: Path, args: list[str], elementary: bool = False,
               environment: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"args": args, "files": self.upload(project), "elementary": elementary}
        if environment:
            body["environment"] = environment
        return self.json("POST", "/api/v1/jobs", body)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.json("GET", f"/api/v1/jobs/{job_id}")

    def wait(self, job_id: str, timeout: float = 120, statuses: set[str] = FINAL) -> dict[str, Any]:
        return wait_for(lambda: (j := self.job(job_id))["status"] in statuses and j,
                        timeout, f"job {job_id} to be {'/'.join(sorted(statuses))}")


def copy_project(dest: Path) -> Path:
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(*SKIPPED, "*.duckdb"))
    return dest


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example project (the jobs never write to it: the server has its own)."""
    return copy_project(tmp_path_factory.mktemp("project") / "jaffle_duckdb")


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: docs/ui/ when DBT_REMOTE_UPDATE_SCREENSHOTS=1, else a temp dir."""
    if os.environ.get("DBT_REMOTE_UPDATE_SCREENSHOTS") == "1":
        out = ROOT / "docs" / "ui"
        out.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("DBT_REMOTE_CHROMIUM", "/usr/bin/chromium")
    if not Path(executable).exists():
        pytest.exit(f"{executable} is missing: run the tests with scripts/test-ui.sh", returncode=2)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True)
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) in a fixed time zone and locale."""
    context = browser.new_context(
        timezone_id="America/New_York", locale="en-US", viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(20_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
