# dbt-remote: runs dbt from a compiled manifest.json, without model sources.
#
# The runner executes this with `python -c <this file> <dbt arguments...>` in the job's work
# dir, which holds manifest.json, dbt_project.yml and the seed CSVs. Exit codes follow dbt's:
# 0 success, 1 a node failed, 2 dbt could not run.
import json
import os
import sys


def main(argv):
    work_dir = os.getcwd()
    try:
        import msgpack
        from dbt.cli.main import dbtRunner
        from dbt.contracts.graph.manifest import Manifest
    except ImportError as e:
        print(f"dbt-remote: this Python cannot run dbt ({e}); set the server's --python", file=sys.stderr)
        return 2
    try:
        with open(os.path.join(work_dir, "manifest.json"), encoding="utf-8") as f:
            manifest = Manifest.from_msgpack(msgpack.packb(json.load(f)))
    except Exception as e:  # any unreadable or incompatible manifest
        print(f"dbt-remote: could not load manifest.json: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    for node in manifest.nodes.values():
        if node.resource_type == "seed":
            node.root_path = work_dir
            # The 0.4.6 CLI sends seeds as seeds/<name>.csv whatever the project's seed-paths.
            sent = os.path.join("seeds", os.path.basename(node.original_file_path))
            if not os.path.exists(os.path.join(work_dir, node.original_file_path)) and os.path.exists(sent):
                node.original_file_path = sent
    manifest.build_flat_graph()
    result = dbtRunner(manifest=manifest).invoke(argv)
    if result.success:
        return 0
    return 2 if result.exception is not None else 1


sys.exit(main(sys.argv[1:]))
