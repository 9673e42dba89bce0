"""The web UI with authentication on (`--auth-token-sha256`): before the token is given the
page shows the token form and nothing else; after it, the jobs list. The token travels in
the login request's body only, never in a URL or in the page's storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import TOKEN, TOKEN_SHA256, Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, project: Path) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("ui-auth-server"), ["--auth-token-sha256", TOKEN_SHA256], token=TOKEN)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def job(server: Server, project: Path) -> dict[str, Any]:
    submitted = server.submit(project, ["ls", "--select", "orders"])
    return server.wait(submitted["id"])


def test_nothing_but_the_token_form_before_the_token_then_the_list(page, server, job, shots):
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(server.url + "/")
    page.locator("form#login").wait_for()
    # Only the form: no job, no navigation, no data of the API.
    assert page.locator("#jobs").count() == 0
    assert not page.locator("#nav").is_visible()
    assert job["id"] not in page.content()
    assert page.inner_text("main").strip().startswith("Token")
    page.screenshot(path=str(shots / "login.png"))

    # A wrong token: the form says so and still shows nothing else.
    page.fill("#token", "not-the-token")
    page.click("form#login button")
    page.locator("#login-error").wait_for(state="visible")
    assert page.locator("#jobs").count() == 0

    page.fill("#token", TOKEN)
    page.click("form#login button")
    page.locator(f"#jobs tr[data-job-id='{job['id']}']").wait_for()
    assert page.locator("#nav").is_visible()
    # The session is an HttpOnly cookie: the page's script cannot read it, and the token
    # is in no URL and no storage.
    assert TOKEN not in page.evaluate("document.cookie")
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert not any(TOKEN in u for u in urls), urls
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["dbt_remote_session"]["httpOnly"]
    assert cookies["dbt_remote_session"]["sameSite"] == "Strict"

    # Signing out clears the cookie: the page is back to the form alone.
    page.click("#logout")
    page.locator("form#login").wait_for()
    assert page.locator("#jobs").count() == 0
    assert "dbt_remote_session" not in {c["name"] for c in page.context.cookies()}


def test_job_page_asks_for_the_token_too(page, server, job):
    page.goto(f"{server.url}/ui/jobs/{job['id']}")
    page.locator("form#login").wait_for()
    assert page.locator("#fields").count() == 0
    assert page.locator("#logs").count() == 0
    page.fill("#token", TOKEN)
    page.click("form#login button")
    page.locator("#fields").wait_for()
    # The log stream carries the cookie too.
    page.locator("#log-state").filter(has_text="ended").wait_for()
    assert page.locator("#logs li").count() > 0
