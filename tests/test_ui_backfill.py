"""A backfill launched as the UI launches it: a real webserver and daemon on 127.0.0.1, the
`launchPartitionBackfill` GraphQL mutation over a date range of the feature assets and what
follows them down to Redis, polled to completion, then the Delta tables and Redis checked.

A second backfill over one of the same days, launched while the first is running (as a scheduled
or sensor run on those partitions would be), must wait for the Delta table's pool rather than
write at the same time, and the tables must end as an undisturbed run leaves them.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
import redis
from delta.tables import DeltaTable

from fs_resources.dagster_ui import DagsterUI
from fs_resources.delta import DeltaTables
from fs_resources.online import OnlineStore
from fs_resources.simulator.fleet import FleetSpec
from fs_resources.spark import DeltaSparkResource
from tests.conftest import SIM_START
from tests.ingest_runs import ingest_with_features, pipeline_resources

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
DAYS = [(SIM_START + timedelta(days=i)).isoformat() for i in range(2)]
DEVICES = 8
FEATURES = "device_features/v1"
# A daily feature asset and what follows it to Redis. The other window sizes run the same code path
# (one factory) and are materialized in process by the fixture; the monitoring assets' range runs are
# tested in process (`tests/ingest_runs.train_and_monitor`). Here they would add Spark steps, not paths.
DAILY = ["device_features_1h"]
BACKFILLED = [*DAILY, "device_objects", "device_online_store"]
DAILY_TABLES = {FEATURES: "window_date"}


def snapshot(spark) -> dict[str, list[tuple]]:
    """Every daily table's rows for the range, without the columns that record when a row was written."""
    tables = DeltaTables(spark=DeltaSparkResource())
    out = {}
    for name, day_column in DAILY_TABLES.items():
        df = tables.read(name).where(f"{day_column} BETWEEN DATE'{DAYS[0]}' AND DATE'{DAYS[-1]}'")
        # When a row was written, and which table versions it read, differ between two writes of the same rows.
        df = df.drop(*[c for c in df.columns if c in ("computed_at", "scored_at", "reported_at", "run_id") or c.endswith("_delta_version")])
        # Statistics summed in another row order differ in the last bits: compared to 12 digits.
        out[name] = sorted(tuple(f"{v:.12g}" if isinstance(v, float) else str(v) for v in r) for r in df.collect())
    return out


def versions(spark) -> dict[str, int]:
    tables = DeltaTables(spark=DeltaSparkResource())
    return {name: DeltaTable.forPath(spark, tables.path(name)).history(1).first()["version"] for name in DAILY_TABLES}


@pytest.fixture(scope="module")
def fleet(spark, redis_server, tmp_path_factory):
    """Two ingested days with their features materialized once in process: what the backfill must reproduce."""
    root = tmp_path_factory.mktemp("ui_backfill") / "data"
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("FS_DATA_ROOT", str(root))
        resources = pipeline_resources(redis_server)
        ingest_with_features(
            resources, instance, root, FleetSpec.clean(devices=DEVICES, start=SIM_START, days=len(DAYS), seed=21), DAYS[0], DAYS[-1]
        )
        yield root, snapshot(spark)


def test_a_ui_backfill_runs_the_range_as_one_run_waits_for_an_overlapping_run_and_reaches_redis(
    spark, fleet, redis_server, tmp_path, monkeypatch
):
    root, expected = fleet
    monkeypatch.setenv("FS_DATA_ROOT", str(root))
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")  # the pools and run limits of `make run`
    before = versions(spark)
    redis.Redis.from_url(redis_server).flushdb()
    launched_at = datetime.now(timezone.utc)

    with DagsterUI(home, env={"FS_DATA_ROOT": str(root), "REDIS_URL": redis_server, "FS_SPARK_MASTER": "local[1]"}) as ui:
        # Only the backfills act: the landing and automation sensors would otherwise re-run the days too.
        assert "landing_zone_sensor" in ui.pause_automation()
        ui.start_daemon()
        backfill = ui.launch_backfill(BACKFILLED, DAYS, title="features and what follows")
        overlapping = ui.launch_backfill(["device_features_1h"], DAYS[1:], title="one day again")
        first = ui.wait_for_backfill(backfill)
        second = ui.wait_for_backfill(overlapping)

        for state in (first, second):
            assert state["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (state, ui.log_tail("daemon"))
            assert state["runs"] and all(r["status"] == "SUCCESS" for r in state["runs"]), state["runs"]

        # BackfillPolicy.single_run(): each daily asset's range is materialized by one run, not one per day.
        runs_per_asset = {a: [r for r in first["runs"] if [a] in [k["path"] for k in r["assetSelection"]]] for a in BACKFILLED}
        assert all(len(runs) == 1 for runs in runs_per_asset.values()), runs_per_asset
        features_run = runs_per_asset["device_features_1h"][0]
        tags = {t["key"]: t["value"] for t in features_run["tags"]}
        assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (DAYS[0], DAYS[-1])

        # The pool `delta_device_features` (limit 1) kept the two writers of the features table apart.
        writes = sorted(
            (step["startTime"], step["endTime"], step["stepKey"], run["runId"])
            for run in (features_run, *second["runs"])
            for step in ui.run_steps(run["runId"])
            if step["stepKey"] in DAILY
        )
        assert len(writes) == 2, writes
        assert all(a[1] <= b[0] for a, b in zip(writes, writes[1:])), writes

    after = versions(spark)
    assert all(after[name] > before[name] for name in DAILY_TABLES), (before, after)
    assert snapshot(spark) == expected
    recomputed = (
        DeltaTables(spark=DeltaSparkResource())
        .read(FEATURES)
        .where(f"window_date = DATE'{DAYS[0]}' AND window_end = window_start + INTERVAL 60 MINUTES")  # the 1-hour windows
        .agg({"computed_at": "min"})
        .first()[0]
    )
    assert recomputed.replace(tzinfo=timezone.utc) >= launched_at - timedelta(seconds=1)

    # ... and on to Redis: every device of the fleet is served, with the 1-day window's values.
    served = OnlineStore.connect(redis_server).get_online_features([f"dev-{i:05d}" for i in range(1, DEVICES + 1)])
    assert all(entry is not None for entry in served), served
    assert {entry["features_window_end"] for entry in served} == {
        datetime.fromisoformat(DAYS[-1]).replace(tzinfo=timezone.utc) + timedelta(days=1)
    }
