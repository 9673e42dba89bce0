"""OpenLineage for ``DbtRemoteOperator``: the datasets a finished dbt-remote job read and wrote,
from its ``manifest.json`` and ``run_results.json`` (and ``catalog.json`` when dbt wrote one).

The nodes are turned into datasets by OpenLineage's own dbt artifact processor
(``openlineage.common.provider.dbt``, as the dbt Cloud provider uses it), so names, schemas,
column lineage and output statistics are the ones ``dbt-ol`` reports: the name is
``database.schema.table``, the namespace ``duckdb://<path>`` for DuckDB. dbt-remote adds
the seeds, which that processor leaves out (a seed written by the run is an output, a seed
read but not loaded by it an input).

For the task as a whole:

- outputs: the models, snapshots and seeds that the run built successfully;
- inputs: the sources and the upstream nodes those read, minus what the run built itself.

Importable only with the OpenLineage provider installed
(``apache-airflow-providers-openlineage``); the operator imports it lazily.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from airflow.providers.openlineage.extractors import OperatorLineage
from openlineage.client.facet_v2 import external_query_run
from openlineage.common.provider.dbt.processor import DbtArtifactProcessor, ModelNode

from dbt_remote import Job

__all__ = ["default_namespace", "fetch_artifacts", "job_lineage", "lineage_from_artifacts"]

_PRODUCER = "https://github.com/dbt-remote/dbt-remote"


def default_namespace(manifest: dict[str, Any]) -> str | None:
    """The dataset namespace when none is given: for DuckDB ``duckdb://<database>`` (dbt's
    database of the nodes is the file's stem; the file's path is in the server's profile, which
    the task does not see). None for other adapters, whose namespace needs the profile's host."""
    adapter = (manifest.get("metadata") or {}).get("adapter_type")
    if adapter != "duckdb":
        return None
    for node in manifest.get("nodes", {}).values():
        if node.get("database"):
            return f"duckdb://{node['database']}"
    return None


class _JobArtifactProcessor(DbtArtifactProcessor):
    """OpenLineage's dbt processor over artifacts already read (a job's, downloaded), with
    the dataset namespace given instead of read from a profile."""

    should_raise_on_unsupported_command = False

    def __init__(
        self,
        manifest: dict[str, Any],
        run_results: dict[str, Any],
        catalog: dict[str, Any] | None,
        namespace: str,
        logger: logging.Logger,
    ) -> None:
        super().__init__(producer=_PRODUCER, job_namespace="dbt-remote", logger=logger)
        self._artifacts = (manifest, run_results, catalog)
        self._namespace = namespace

    def get_dbt_metadata(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Any]:
        manifest, run_results, catalog = self._artifacts
        profile = {"type": (manifest.get("metadata") or {}).get("adapter_type", "")}
        return manifest, run_results, profile, catalog

    def extract_namespace(self, profile: dict[str, Any]) -> str:
        return self._namespace

    def dbt_run_run_facet(self) -> dict[str, Any]:
        return {}


def _key(dataset: Any) -> tuple[str, str]:
    return (dataset.namespace, dataset.name)


def lineage_from_artifacts(
    manifest: dict[str, Any],
    run_results: dict[str, Any],
    catalog: dict[str, Any] | None = None,
    namespace: str | None = None,
    logger: logging.Logger | None = None,
) -> OperatorLineage:
    """The inputs and outputs of one dbt invocation, from its artifacts (see the module)."""
    log = logger or logging.getLogger(__name__)
    namespace = namespace or default_namespace(manifest)
    if namespace is None:
        adapter = (manifest.get("metadata") or {}).get("adapter_type")
        raise ValueError(
            f"no OpenLineage namespace for the adapter {adapter!r}: "
            "set DbtRemoteOperator(openlineage_namespace=...), e.g. 'postgres://host:5432'"
        )
    processor = _JobArtifactProcessor(manifest, run_results, catalog, namespace, log)
    events = processor.parse()

    outputs: dict[tuple[str, str], Any] = {}
    inputs: dict[tuple[str, str], Any] = {}
    for event in events.completes:
        if not event.outputs:  # a test's event: it reads, it builds nothing
            continue
        for dataset in event.outputs:
            outputs.setdefault(_key(dataset), dataset)
        for dataset in event.inputs or []:
            inputs.setdefault(_key(dataset), dataset)

    # Seeds: OpenLineage's processor skips them, both as results and as parents.
    nodes = manifest.get("nodes", {})
    parent_map = manifest.get("parent_map", {})
    catalog_nodes = (catalog or {}).get("nodes", {})

    def seed(unique_id: str) -> ModelNode:
        return ModelNode(
            type="seed", metadata_node=nodes[unique_id], catalog_node=catalog_nodes.get(unique_id)
        )

    for result in run_results.get("results", []):
        unique_id = result.get("unique_id", "")
        if result.get("status") != "success":
            continue
        if unique_id.startswith("seed.") and unique_id in nodes:
            dataset = processor.node_to_output_dataset(
                seed(unique_id), has_facets=True, adapter_response=result.get("adapter_response")
            )
            outputs.setdefault(_key(dataset), dataset)
        elif unique_id.startswith(("model.", "snapshot.")):
            for parent in parent_map.get(unique_id, []):
                if parent.startswith("seed.") and parent in nodes:
                    dataset = processor.node_to_dataset(seed(parent), has_facets=True)
                    inputs.setdefault(_key(dataset), dataset)

    return OperatorLineage(
        inputs=[d for k, d in inputs.items() if k not in outputs],
        outputs=list(outputs.values()),
    )


ARTIFACTS = ("manifest.json", "run_results.json", "catalog.json")


def fetch_artifacts(job: Job) -> dict[str, Any]:
    """The job's artifacts that lineage reads, parsed (``{name: document}``, those dbt wrote).

    Called in the task's own process: the OpenLineage listener computes the facets in a forked
    child by default, where the client's runtime cannot run, so the task fetches them before."""
    with tempfile.TemporaryDirectory(prefix="dbt-remote-lineage-") as tmp:
        job.download_artifacts(tmp)
        return {
            name: json.loads((Path(tmp) / name).read_text())
            for name in ARTIFACTS
            if (Path(tmp) / name).is_file()
        }


def job_lineage(
    job_id: str,
    server_url: str,
    artifacts: dict[str, Any],
    namespace: str | None = None,
    logger: logging.Logger | None = None,
) -> OperatorLineage:
    """The lineage of a finished job from its fetched artifacts; the run carries the job as an
    ``externalQuery`` facet (its id, and the server)."""
    missing = [name for name in ARTIFACTS[:2] if name not in artifacts]
    if missing:
        raise ValueError(f"job {job_id} has no {' and no '.join(missing)}")
    lineage = lineage_from_artifacts(
        artifacts["manifest.json"],
        artifacts["run_results.json"],
        artifacts.get("catalog.json"),
        namespace,
        logger,
    )
    lineage.run_facets["externalQuery"] = external_query_run.ExternalQueryRunFacet(
        externalQueryId=job_id, source=server_url
    )
    return lineage
