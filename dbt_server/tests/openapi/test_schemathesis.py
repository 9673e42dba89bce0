"""The served OpenAPI document against the real dbt-server, with schemathesis.

schemathesis reads `/api/v1/openapi.json` from a real server (the binary of this workspace, on
127.0.0.1, its own state dir, a static token) and sends it what the document allows and what
it does not: examples, boundary values, random data, and sequences that follow the document's
links (upload, submit, read, cancel). Every check is on (`--checks all`) but one:
`positive_data_acceptance` expects every schema-valid request to succeed, and some cannot
(a blob whose content does not match its hash, a job naming no uploaded file), so they are
answered 400, as the document says. A run fails on any 5xx and on any answer the document does
not describe (status, content type, headers, body schema).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run scripts/test-api.sh", returncode=2)
    return value


class Server:
    """A dbt-server process with a static token; stopped by `stop()`."""

    def __init__(self, home: Path, token: str) -> None:
        self.log_path = home / "server.log"
        self._log = open(self.log_path, "wb")
        digest = hashlib.sha256(token.encode()).hexdigest()
        # Jobs the fuzzer gets accepted run `false` as dbt: they fail at once, as they would
        # with real dbt on a random project, and the API is what is under test.
        self.process = subprocess.Popen(
            [_env("DBT_REMOTE_SERVER_BIN"), "--port", "0", "--state-dir", str(home / "state"),
             "--dbt", "/bin/false", "--auth-token-sha256", digest],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = self._wait_for_address()

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            found = re.search(r"listening on (http://\S+?)/?\s", text)
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


def test_no_answer_is_a_5xx_or_contradicts_the_document(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    server = Server(tmp_path, token)
    seconds = os.environ.get("DBT_REMOTE_FUZZ_SECONDS", "60")
    seed = os.environ.get("DBT_REMOTE_FUZZ_SEED", str(secrets.randbelow(2**63)))
    try:
        run = subprocess.run(
            [_env("DBT_REMOTE_SCHEMATHESIS"), "run", f"{server.url}/api/v1/openapi.json",
             "--checks", "all", "--exclude-checks", "positive_data_acceptance",
             "--header", f"Authorization: Bearer {token}",
             "--max-time", seconds, "--seed", seed, "--workers", "2",
             "--no-color"],
            capture_output=True,
            text=True,
            timeout=float(seconds) + 120,
        )
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert "panicked" not in log, f"the server panicked:\n{log[-4000:]}"
    assert run.returncode == 0, (
        f"schemathesis found problems (replay with DBT_REMOTE_FUZZ_SEED={seed}):\n"
        f"{run.stdout[-12000:]}\n{run.stderr[-2000:]}"
    )
