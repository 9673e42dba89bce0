"""dbt_remote against a real dbt-server running real dbt on the example project."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import dbt_remote
from dbt_remote import Client, DbtRemoteError, InvalidInput, JobFailed, NotFound, ServerError, WaitTimeout

SLOW = ["run", "--select", "slow_model", "--vars", "{slow_seconds: 60}"]


def wait_until_running(job: dbt_remote.Job, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while job.status == "queued":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)
        job.refresh()


def test_build_follows_logs_live_and_succeeds(server, project, tmp_path):
    client = Client(server.url)
    # Each job builds into a fresh DuckDB file: the whole project, so tests find their parents.
    job = client.submit("build --exclude slow_model", project)
    assert job.status in ("queued", "running")
    assert job.args == ["build", "--exclude", "slow_model"]

    records = list(job.logs())
    # The followed log ended with the job: its final state is known without asking.
    assert job.status == "succeeded", "\n".join(str(r) for r in records)
    assert job.exit_code == 0
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    orders = [r for r in records if r.node == "model.jaffle_duckdb.orders"]
    assert any(r.node_status == "success" for r in orders), [str(r) for r in records]
    assert all(r.level in ("debug", "info", "warn", "error") for r in records)
    assert "orders" in str(orders[-1])

    job.wait()  # succeeded: no exception
    assert job.done
    assert job.finished_at is not None
    # What the job is about: the project's name and the profile's default target.
    assert (job.project, job.target) == ("jaffle_duckdb", "dev")

    again = list(job.logs(follow=False))
    assert [r.seq for r in again] == [r.seq for r in records]
    assert [r.seq for r in job.logs(follow=False, after=5)][:1] == [6]

    names = {a.name for a in job.artifacts()}
    assert {"manifest.json", "run_results.json"} <= names
    written = job.download_artifacts(tmp_path / "out")
    assert all(isinstance(p, Path) for p in written)
    assert {p.name for p in written} == names
    assert (tmp_path / "out" / "run_results.json").stat().st_size > 0

    same = client.job(job.id)
    assert (same.id, same.status) == (job.id, "succeeded")
    assert job.id in [j.id for j in client.jobs(limit=10)]
    assert job.id in [j.id for j in client.jobs(status="succeeded")]


def test_a_failing_model_raises_job_failed_with_dbts_code_and_the_node(server, project):
    job = Client(server.url).submit(
        ["run", "--select", "fail_on_demand", "--vars", "{fail: true}"], project_dir=project
    )
    with pytest.raises(JobFailed) as failed:
        job.wait(poll_interval=0.2)
    e = failed.value
    assert isinstance(e, DbtRemoteError)
    assert (e.exit_code, e.status, e.job_id) == (1, "failed", job.id)
    assert [n.unique_id for n in e.failed_nodes] == ["model.jaffle_duckdb.fail_on_demand"]
    assert e.failed_nodes[0].status == "error"
    assert "model.jaffle_duckdb.fail_on_demand" in str(e)
    assert "code 1" in str(e)
    assert job.exit_code == 1


def test_invalid_vars_give_dbts_code_2(server, project):
    job = Client(server.url).submit(["run", "--vars", "{not yaml"], project)
    with pytest.raises(JobFailed) as failed:
        job.wait(poll_interval=0.2)
    assert failed.value.exit_code == 2
    assert failed.value.failed_nodes == []


def test_cancel_ends_the_job_cancelled(server, project):
    job = Client(server.url).submit(SLOW, project)
    wait_until_running(job)
    job.cancel()
    with pytest.raises(JobFailed) as failed:
        job.wait(timeout=90, poll_interval=0.2)
    assert failed.value.status == "cancelled"
    assert job.status == "cancelled"
    assert "cancelled" in str(failed.value)


def test_wait_timeout_leaves_the_job_running(server, project):
    job = Client(server.url).submit(SLOW, project)
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        job.wait(timeout=1.5, poll_interval=0.2)
    assert time.monotonic() - started < 10
    job.refresh()
    assert not job.done
    job.cancel()


def test_ctrl_c_interrupts_a_wait_and_the_gil_is_released(server, project):
    job = Client(server.url).submit(SLOW, project)
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.01)

    # Ctrl-C from 2 s on, every 0.5 s until the wait gives up (a busy machine may take a while
    # to deliver one); the first raises KeyboardInterrupt, the later ones are ignored.
    interrupted = threading.Event()

    def on_sigint(signum, frame):  # type: ignore[no-untyped-def]
        if not interrupted.is_set():
            interrupted.set()
            raise KeyboardInterrupt

    def press_ctrl_c() -> None:
        stop.wait(2.0)
        while not stop.is_set() and not interrupted.is_set():
            os.kill(os.getpid(), signal.SIGINT)
            stop.wait(0.5)

    previous = signal.signal(signal.SIGINT, on_sigint)
    counter = threading.Thread(target=count)
    counter.start()
    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            job.wait(poll_interval=0.2)
    finally:
        stop.set()
        counter.join()
        presser.join()
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 10
    # Another thread ran Python while wait() blocked: the GIL was released.
    assert ticks > 50
    job.cancel()


def test_unknown_jobs_are_not_found(server):
    client = Client(server.url)
    with pytest.raises(NotFound):
        client.job("01900000-0000-7000-8000-000000000000")
    with pytest.raises(NotFound):
        client.job("not-a-job-id")


def test_a_bad_command_is_refused_before_the_server_is_asked(free_url, project):
    client = Client(free_url)
    with pytest.raises(InvalidInput, match="rm"):
        client.submit("rm -rf /", project)
    with pytest.raises(InvalidInput):
        client.submit("build --profiles-dir /etc", project)
    with pytest.raises(InvalidInput, match="quote"):
        client.submit("run --select 'unclosed", project)


def test_a_server_that_is_down_gives_a_clear_error(free_url, project):
    with pytest.raises(ServerError, match="could not reach dbt-server") as e:
        Client(free_url).submit("build", project)
    assert e.value.status is None
    with pytest.raises(ServerError):
        Client(free_url).job("01900000-0000-7000-8000-000000000000")


def test_settings_resolve_like_the_cli(tmp_path, monkeypatch, free_url):
    with pytest.raises(InvalidInput):
        Client("ftp://example")
    (tmp_path / "dbt_remote.yml").write_text(f"server_url: {free_url}\n")
    monkeypatch.delenv("DBT_REMOTE_SERVER_URL", raising=False)
    assert Client(config_dir=tmp_path).server_url == free_url
    monkeypatch.setenv("DBT_REMOTE_SERVER_URL", "http://127.0.0.1:9")
    assert Client(config_dir=tmp_path).server_url == "http://127.0.0.1:9"
    assert Client("http://127.0.0.1:10", config_dir=tmp_path).server_url == "http://127.0.0.1:10"
    assert Client(config_dir=tmp_path).settings()["server_url"] == "http://127.0.0.1:9"


def test_split_command_splits_like_a_shell():
    assert dbt_remote.split_command("run --select 'a b' --vars \"{x: 1}\"") == [
        "run", "--select", "a b", "--vars", "{x: 1}",
    ]
    with pytest.raises(InvalidInput):
        dbt_remote.split_command("run 'open")


def test_exceptions_share_one_base():
    from dbt_remote import _native

    names = dbt_remote.errors.__all__
    # Every exception of the native module is one of dbt_remote.errors, and of dbt_remote.
    classes = [getattr(_native, n) for n in _native.__all__]
    exceptions = [c.__name__ for c in classes if isinstance(c, type) and issubclass(c, BaseException)]
    assert sorted(exceptions) == sorted(names)
    for name in names:
        cls = getattr(dbt_remote.errors, name)
        assert getattr(dbt_remote, name) is cls and name in dbt_remote.__all__
        assert issubclass(cls, DbtRemoteError)


def test_async_twins(server, project):
    async def main() -> tuple[list[int], str, str]:
        client = Client(server.url)
        job = client.submit("build --select +stg_orders", project)
        seqs = [r.seq async for r in job.logs_async()]
        await job.wait_async(poll_interval=0.2)
        again = await client.job_async(job.id)
        slow = client.submit(SLOW, project)
        await slow.cancel_async()
        try:
            await slow.wait_async(poll_interval=0.2)
        except JobFailed as e:
            return seqs, again.status, e.status
        return seqs, again.status, "no JobFailed"

    seqs, status, cancelled = asyncio.run(main())
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 3
    assert status == "succeeded"
    assert cancelled == "cancelled"


def test_async_unknown_job_and_failure(server, project):
    async def main() -> None:
        client = Client(server.url)
        with pytest.raises(NotFound):
            await client.job_async("01900000-0000-7000-8000-000000000000")
        job = client.submit(["run", "--select", "fail_on_demand", "--vars", "{fail: true}"], project)
        with pytest.raises(JobFailed) as e:
            await job.wait_async(poll_interval=0.2)
        assert e.value.exit_code == 1

    asyncio.run(main())


def test_exceptions_come_from_the_native_module_with_their_builtin_bases():
    import pickle

    from dbt_remote import _native

    assert dbt_remote.errors.JobFailed is _native.JobFailed
    assert issubclass(InvalidInput, ValueError)
    assert issubclass(NotFound, LookupError)
    assert issubclass(WaitTimeout, TimeoutError)
    e = ServerError("down")
    assert (str(e), e.status) == ("down", None)
    assert ServerError("refused", 503).status == 503
    failed = JobFailed("job x failed", "x", "failed", 1, "dbt exited with code 1", ["n"])
    assert (str(failed), failed.job_id, failed.status, failed.exit_code) == (
        "job x failed", "x", "failed", 1,
    )
    assert (failed.failure_reason, failed.failed_nodes) == ("dbt exited with code 1", ["n"])
    back = pickle.loads(pickle.dumps(failed))
    assert type(back) is JobFailed
    assert (str(back), back.job_id, back.exit_code, back.failed_nodes) == ("job x failed", "x", 1, [])
    assert JobFailed("m", "x", "cancelled", None).failed_nodes == []


def test_a_client_of_a_fixed_url_makes_no_request(free_url):
    # Nothing listens at free_url: making the client and reading its URL must not need it.
    client = Client(free_url + "/")
    assert client.server_url == free_url
    assert repr(client) == f"Client({free_url!r})".replace("'", '"')


def test_every_operation_has_an_async_twin(server, project, tmp_path):
    async def main() -> None:
        client = Client(server.url)
        job = await client.submit_async("build --select +stg_orders", project)
        await job.wait_async(poll_interval=0.2)
        assert job.outcome == f"job {job.id} succeeded"
        await job.refresh_async()
        assert job.status == "succeeded"
        assert job.id in [j.id for j in await client.jobs_async(limit=10)]
        names = {a.name for a in await job.artifacts_async()}
        assert "run_results.json" in names
        written = await job.download_artifacts_async(tmp_path / "out")
        assert {p.name for p in written} == names
        assert await job.failed_nodes_async() == []
        failing = await client.submit_async(
            ["run", "--select", "fail_on_demand", "--vars", "{fail: true}"], project
        )
        with pytest.raises(JobFailed):
            await failing.wait_async(poll_interval=0.2)
        nodes = await failing.failed_nodes_async()
        assert [n.unique_id for n in nodes] == ["model.jaffle_duckdb.fail_on_demand"]
        assert failing.outcome == f"job {failing.id} failed: dbt exited with code 1"

    asyncio.run(main())


def test_an_explicit_token_reaches_a_server_with_auth_on(auth_server, monkeypatch):
    from conftest import TOKEN

    from dbt_remote import AuthError

    monkeypatch.delenv("DBT_REMOTE_TOKEN", raising=False)
    with pytest.raises(AuthError):
        Client(auth_server.url).jobs()
    # The auth server is shared by the session (Airflow's tests run jobs on it): the list
    # answering at all is what the token proves.
    assert isinstance(Client(auth_server.url, token=TOKEN).jobs(), list)
    assert Client(auth_server.url, token=TOKEN).health()["status"]
    # The token given wins over the environment's, and is never put into it.
    monkeypatch.setenv("DBT_REMOTE_TOKEN", "wrong")
    assert isinstance(Client(auth_server.url, token=TOKEN).jobs(), list)
    with pytest.raises(AuthError):
        Client(auth_server.url).jobs()
    assert os.environ["DBT_REMOTE_TOKEN"] == "wrong"


def test_health_answers_without_credentials(auth_server, free_url):
    health = Client(auth_server.url).health()
    assert set(health) == {"status", "version"}
    async def main() -> dict[str, str]:
        return await Client(auth_server.url).health_async()

    assert asyncio.run(main()) == health
    with pytest.raises(DbtRemoteError):
        Client(free_url).health()
