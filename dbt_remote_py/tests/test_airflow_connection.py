"""The extras of a `dbt_remote` Airflow connection: a service-account key (a file, or its JSON)
whose Google ID tokens a real dbt-server with Google auth on accepts, and a Cloud Run location.

Google's token endpoint and public keys are played by a local HTTP server on 127.0.0.1 that
checks each assertion as Google does (signed by the key, for the token endpoint, with a
`target_audience`) and signs ID tokens with the same key; the dbt-server fetches that key as
its JWKS and checks the tokens itself.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from conftest import Server, free_port
from dbt_remote import AuthError, InvalidInput

pytest.importorskip("airflow", reason="Apache Airflow is not installed (scripts/test-python.sh installs it)")
jwt = pytest.importorskip("jwt", reason="PyJWT (installed with Airflow) signs the test's tokens")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

EMAIL = "airflow@test-project.iam.gserviceaccount.com"
KID = "test-key-1"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class FakeGoogle:
    """The token endpoint (`/token`) and public keys (`/jwks`) of one service account."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.refusals: list[str] = []
        self.audiences: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(fake.key.public_key()))
                self._reply(200, {"keys": [{**jwk, "kid": KID, "alg": "RS256", "use": "sig"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                try:
                    claims = jwt.decode(
                        form["assertion"][0],
                        fake.key.public_key(),
                        algorithms=["RS256"],
                        audience=fake.token_uri,
                        issuer=EMAIL,
                    )
                    audience = claims["target_audience"]
                except Exception as e:  # noqa: BLE001 - refused as Google does
                    fake.refusals.append(str(e))
                    self._reply(400, {"error": "invalid_grant", "error_description": str(e)})
                    return
                fake.audiences.append(audience)
                now = int(time.time())
                token = jwt.encode(
                    {"iss": "https://accounts.google.com", "aud": audience, "sub": "1234",
                     "email": EMAIL, "email_verified": True, "iat": now, "exp": now + 3600},
                    _pem(fake.key), algorithm="RS256", headers={"kid": KID},
                )
                self._reply(200, {"id_token": token})

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        base = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.token_uri, self.jwks_url = f"{base}/token", f"{base}/jwks"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def key_dict(self, key: rsa.RSAPrivateKey | None = None) -> dict[str, str]:
        """A service-account key file's JSON, as `gcloud iam service-accounts keys create` writes."""
        return {
            "type": "service_account", "project_id": "test-project", "private_key_id": KID,
            "private_key": _pem(key or self.key), "client_email": EMAIL,
            "client_id": "1234", "token_uri": self.token_uri,
        }


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    fake = FakeGoogle()
    yield fake
    fake.http.shutdown()


@pytest.fixture(scope="module")
def google_server(google: FakeGoogle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A dbt-server that accepts only Google ID tokens of EMAIL for its own URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    s = Server(
        tmp_path_factory.mktemp("google-server"),
        ["--auth-google", "--auth-audience", url, "--auth-jwks-url", google.jwks_url,
         "--auth-allowed-emails", EMAIL],
        port=port,
    )
    assert s.url == url, s.url
    yield s
    s.stop()


def _connection(**kw):
    from airflow.sdk import Connection

    extra = kw.pop("extra", None)
    return Connection(conn_id="sa", conn_type="dbt_remote", extra=json.dumps(extra) if extra else None, **kw)


def _host(server: Server) -> dict:
    url = urllib.parse.urlsplit(server.url)
    return {"host": url.hostname, "port": url.port}


def test_a_key_in_the_extras_gets_id_tokens_the_server_accepts(google, google_server, tmp_path, monkeypatch):
    from dbt_remote.airflow_hook import DbtRemoteHook, client_of

    # Without credentials the server refuses: auth is on.
    with pytest.raises(AuthError):
        client_of(_connection(**_host(google_server))).jobs(limit=1)

    # The key's JSON itself (as a JSON object or as a string), through an env connection.
    for keyfile in (google.key_dict(), json.dumps(google.key_dict())):
        conn = _connection(**_host(google_server), extra={"keyfile_dict": keyfile})
        monkeypatch.setenv("AIRFLOW_CONN_DBT_REMOTE_SA", conn.as_json())
        ok, message = DbtRemoteHook("dbt_remote_sa").test_connection()
        assert ok, message
    # The ID tokens were made for the server's own URL.
    assert google.audiences and set(google.audiences) == {google_server.url}, google.audiences

    # A key file's path.
    key_file = tmp_path / "sa-key.json"
    key_file.write_text(json.dumps(google.key_dict()))
    client = client_of(_connection(**_host(google_server), extra={"key_path": str(key_file)}))
    assert client.jobs(limit=1) is not None

    # Another key than the account's: the token endpoint refuses it, and the test says so.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    conn = _connection(**_host(google_server), extra={"keyfile_dict": google.key_dict(other)})
    monkeypatch.setenv("AIRFLOW_CONN_DBT_REMOTE_SA", conn.as_json())
    refused = len(google.refusals)
    ok, message = DbtRemoteHook("dbt_remote_sa").test_connection()
    assert not ok and EMAIL in message, message
    assert len(google.refusals) == refused + 1


def test_bad_extras_are_clear_errors(google, google_server, caplog):
    from dbt_remote.airflow_hook import client_of

    host = _host(google_server)
    with pytest.raises(ValueError, match="one of a password"):
        client_of(_connection(**host, password="t", extra={"keyfile_dict": google.key_dict()}))
    with pytest.raises(AuthError, match="the service-account key given to the client is not"):
        client_of(_connection(**host, extra={"keyfile_dict": "{not json"}))
    with pytest.raises(AuthError, match="not a PEM RSA key"):
        client_of(_connection(**host, extra={"keyfile_dict": {**google.key_dict(), "private_key": "x"}}))
    with pytest.raises(ValueError, match="no host"):
        client_of(_connection(extra={"keyfile_dict": google.key_dict()}))
    with caplog.at_level("WARNING"):
        client_of(_connection(**host, extra={"keypath": "/x"}))
    assert "unknown extra 'keypath'" in caplog.text


def test_a_location_without_a_host_asks_for_a_cloud_run_discovery():
    from dbt_remote.airflow_hook import client_of, server_url_of

    conn = _connection(extra={"location": "europe-west1"})
    assert server_url_of(conn) is None
    # The tests' wheel is built without the `gcp` feature: the location reaches the client,
    # which says it cannot discover (a wheel built with --features gcp looks on Cloud Run).
    with pytest.raises(InvalidInput, match="--location europe-west1.*without the `gcp` feature"):
        client_of(conn)


def test_a_client_takes_a_token_or_a_key_not_both(google, google_server):
    from dbt_remote import Client

    with pytest.raises(InvalidInput, match="not both"):
        Client(google_server.url, token="t", service_account_key=json.dumps(google.key_dict()))
    client = Client(google_server.url, service_account_key=json.dumps(google.key_dict()))
    assert client.jobs(limit=1) is not None
