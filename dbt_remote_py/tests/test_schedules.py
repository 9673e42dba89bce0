"""Schedules from Python against a real dbt-server running real dbt on the example project."""

from __future__ import annotations

import asyncio

import pytest

from dbt_remote import Client, InvalidInput, NotFound, Schedule, ServerError


def test_schedules_are_created_listed_run_and_deleted(server, project):
    client = Client(server.url)
    created = client.create_schedule(
        name="py-nightly", cron="0 8 * * *", args=["run", "--select", "fail_on_demand"],
        project_dir=project,
    )
    assert isinstance(created, Schedule)
    assert (created.name, created.cron, created.description) == ("py-nightly", "0 8 * * *", "At 08:00.")
    assert created.args == ["run", "--select", "fail_on_demand"]
    assert created.file_count > 0 and created.next_run is not None and created.last_job is None
    assert "py-nightly" in [s.name for s in client.list_schedules()]
    assert created.environment is None
    # A client's environment is the schedule's: each run is a job of it.
    prod = Client(server.url, environment="py-prod").create_schedule(
        name="py-prod-nightly", cron="0 8 * * *", args="build", project_dir=project
    )
    assert prod.environment == "py-prod"
    assert {s.name: s.environment for s in client.list_schedules()}["py-prod-nightly"] == "py-prod"
    client.delete_schedule("py-prod-nightly")

    with pytest.raises(ServerError, match="already exists"):
        client.create_schedule(name="py-nightly", cron="0 9 * * *", args="build", project_dir=project)
    with pytest.raises(InvalidInput, match="cron"):
        client.create_schedule(name="py-bad", cron="every day", args="build", project_dir=project)

    # Edited after creation so that it would fail: the run uses the files stored before.
    model = project / "models" / "fail_on_demand.sql"
    model.write_text("{{ config(materialized='table') }}\nselect cast('x' as integer) as ok\n")
    job = client.run_schedule("py-nightly")
    assert job.args == ["run", "--select", "fail_on_demand"]
    job.wait()
    assert job.exit_code == 0
    assert client.schedule("py-nightly").last_job == job.id

    async def delete_async() -> None:
        await client.delete_schedule_async("py-nightly")
        with pytest.raises(NotFound):
            await client.schedule_async("py-nightly")

    asyncio.run(delete_async())
    assert "py-nightly" not in [s.name for s in client.list_schedules()]
    with pytest.raises(NotFound):
        client.run_schedule("py-nightly")
    with pytest.raises(InvalidInput, match="schedule name"):
        client.delete_schedule("../x")
