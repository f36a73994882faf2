"""Fault drills: a run killed with SIGKILL mid-write, and two runs writing one table at once.

Each run under test is a separate process (its own Python, Dagster and Spark JVM), as under
`dagster dev`; the test kills it for real and then checks the Delta table on disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from delta.tables import DeltaTable

from fs_assets.features.assets import feature_assets
from fs_resources.delta import DeltaTables
from fs_resources.simulator.fleet import FleetSpec
from fs_resources.spark import DeltaSparkResource
from tests.conftest import SIM_START
from tests.ingest_runs import ingest_with_features, pipeline_resources, range_tags

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
DAYS = [(SIM_START + timedelta(days=i)).isoformat() for i in range(3)]
TABLE = "device_features/v1"
ONE_SIZE = "device_features_1h"

RUN_FEATURES = textwrap.dedent(
    f"""
    import sys
    sys.path.insert(0, {str(ROOT)!r})
    import dagster as dg
    from definitions import defs
    from fs_assets.features.assets import feature_assets
    resources = {{k: v for k, v in defs.resources.items() if k in ("spark", "delta", "feature_store")}}
    assets = [a for a in feature_assets if not sys.argv[1:] or a.key.path[-1] in sys.argv[1:]]
    result = dg.materialize(assets, resources=resources, raise_on_error=False,
                            tags={{"dagster/asset_partition_range_start": {DAYS[0]!r}, "dagster/asset_partition_range_end": {DAYS[-1]!r}}})
    sys.exit(0 if result.success else 3)
    """
)


def contents(spark) -> list[tuple]:
    return sorted(tuple(str(v) for v in r) for r in DeltaTables(spark=DeltaSparkResource()).read(TABLE).drop("computed_at").collect())


def version(spark) -> int:
    return DeltaTable.forPath(spark, DeltaTables(spark=DeltaSparkResource()).path(TABLE)).history(1).first()["version"]


def data_files(root: Path) -> set[Path]:
    return set((root / "delta" / TABLE).rglob("*.parquet"))


def start_run(root: Path, *assets: str) -> subprocess.Popen:
    """A run of the feature assets named (all three when none is) over DAYS, in its own process."""
    env = dict(os.environ, FS_DATA_ROOT=str(root), FS_SPARK_MASTER="local[1]")
    return subprocess.Popen(
        [sys.executable, "-c", RUN_FEATURES, *assets],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def settled(spark, redis_server, tmp_path_factory):
    """Three ingested days and their features, written once undisturbed: the contents every drill must converge to."""
    root = tmp_path_factory.mktemp("drills") / "data"
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("FS_DATA_ROOT", str(root))
        resources = pipeline_resources(redis_server)
        ingest_with_features(resources, instance, root, FleetSpec.clean(devices=40, start=SIM_START, days=3, seed=8), DAYS[0], DAYS[-1])
        tags = range_tags(DAYS[0], DAYS[-1])
        yield root, resources, instance, tags, contents(spark)


def test_a_run_killed_mid_write_leaves_the_previous_version_and_a_rerun_converges(spark, settled, monkeypatch):
    root, resources, instance, tags, expected = settled
    monkeypatch.setenv("FS_DATA_ROOT", str(root))
    before_version, before_files = version(spark), data_files(root)
    run = start_run(root)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None and not (data_files(root) - before_files):
        time.sleep(0.02)
    assert run.poll() is None, f"the run ended before writing: {run.stderr.read()[-2000:]!r}"
    os.killpg(run.pid, signal.SIGKILL)  # the run's Python and its Spark JVM, mid-write
    run.wait()
    assert data_files(root) - before_files, "the run was killed after it had written data files"
    # Files of the killed write sit on disk, but no commit names them: readers see the previous version.
    assert version(spark) == before_version
    assert contents(spark) == expected
    # Re-run as the killed run was launched: the days whole (`full`), not only windows touched since.
    full = {"ops": {a.op.name: {"config": {"full": True}} for a in feature_assets}}
    assert dg.materialize(feature_assets, resources=resources, instance=instance, tags=tags, run_config=full).success
    assert version(spark) > before_version and contents(spark) == expected


def test_two_runs_on_one_table_both_commit_and_the_table_converges(spark, settled, monkeypatch):
    """Two runs over the same partitions at once: a commit Delta refuses is repeated on the new
    version (the write replaces whole partitions, so repeating it is safe), and both runs succeed.
    One window size is enough: the three sizes write the one table through the same code."""
    root, resources, instance, tags, expected = settled
    monkeypatch.setenv("FS_DATA_ROOT", str(root))
    before = version(spark)
    runs = [start_run(root, ONE_SIZE), start_run(root, ONE_SIZE)]
    outcomes = [(r.wait(timeout=600), r.stderr.read().decode(errors="replace")) for r in runs]
    assert [code for code, _ in outcomes] == [0, 0], [err[-3000:] for _, err in outcomes]
    # Nothing lost: each run's write is its own commit.
    assert version(spark) - before == 2
    assert contents(spark) == expected
