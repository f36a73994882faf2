"""A day still in progress: features of closed windows only, every check passing, later runs recomputing only what changed."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
import time_machine
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from fs_assets.features.assets import feature_assets
from fs_checks.data_freshness_checks import data_time_freshness_checks
from fs_checks.feature_checks import build_feature_checks
from fs_domain.contract import LANDING_COLUMNS
from fs_domain.features import WINDOWS
from fs_domain.tables import features_table
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.spark import DeltaSparkResource
from tests.ingest_runs import materialize_clean, materialize_registry, table
from tests.landing_files import NORMAL, registry, write_readings

pytestmark = pytest.mark.integration

DEVICES = ["dev-a", "dev-b", "dev-c"]
# The 15-minute and 1-day sizes: the shortest window, and the one that stays open all day.
SIZES = [w for w in WINDOWS if w.minutes in (15, 1440)]
ASSETS = [a for a in feature_assets if a.key.path[-1] in {w.asset_name for w in SIZES}]
CHECKS = [check for window in SIZES for check in build_feature_checks(window)]
# The test runs 90 minutes into a UTC day: six 15-minute windows closed, some before the first run
# and more before the second, and the same few whatever the hour the suite runs at. This process's
# clock is set back to it (to the previous day's when today is younger). Spark's clock, ahead of it,
# stamps only Delta commits, which a run compares with its start as a lower bound alone; a landing
# file's modification time is capped at the run's start.
INTO_THE_DAY = timedelta(minutes=90)


@pytest.fixture
def day_in_progress():
    now = datetime.now(UTC)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC)
    if now - midnight < INTO_THE_DAY:
        midnight -= timedelta(days=1)
    with time_machine.travel(midnight + INTO_THE_DAY, tick=True):
        yield


def _readings(day: date, start: datetime, end: datetime, shift: float = 0.0) -> pd.DataFrame:
    ts = pd.date_range(start, end, freq="1min", inclusive="left", tz="UTC")
    frames = []
    for i, device in enumerate(DEVICES):
        frame = pd.DataFrame({"device_id": device, "ts": ts})
        for name, value in NORMAL.items():
            frame[name] = value + i + shift + (ts.minute % 7) * 0.1
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)[list(LANDING_COLUMNS)]


def _features(resources, instance, day: str, sizes=ASSETS, with_checks: bool = True, checks_only: bool = False, **config):
    checks = [c for c in CHECKS if any(k.asset_key in {a.key for a in sizes} for k in c.check_keys)] if with_checks else []
    if checks_only:  # the checks' ops alone, judging what the latest materialization wrote
        job = dg.define_asset_job("features", selection=[a.key for a in sizes])
        store = {"feature_store": FeatureStoreResource()}
        defs = dg.Definitions(assets=sizes, asset_checks=checks, jobs=[job], resources=resources | store)
        ops = [f"{key.asset_key.path[-1]}_{key.name}" for c in checks for key in c.check_keys]
        return defs.resolve_job_def("features").execute_in_process(
            partition_key=day, instance=instance, op_selection=ops, raise_on_error=False
        )
    return dg.materialize(
        [*sizes, *checks], partition_key=day, resources=resources | {"feature_store": FeatureStoreResource()}, instance=instance,
        run_config={"ops": {a.op.name: {"config": config} for a in sizes}},
    )  # fmt: skip


def _rows(spark, day: str, closed_by: datetime) -> pd.DataFrame:
    """The day's feature rows of windows closed by `closed_by`, in key order."""
    rows = table(spark, features_table()).where((F.col("window_date") == day) & (F.col("window_end") <= F.lit(closed_by)))
    frame = rows.drop("computed_at").toPandas()
    return frame.sort_values(["window_duration_minutes", "device_id", "window_start"]).reset_index(drop=True)


def test_a_day_in_progress_passes_its_checks_and_later_runs_recompute_only_touched_windows(
    spark, resources, instance, data_root, day_in_progress
):
    now = datetime.now(UTC)
    today = now.date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
    registry(data_root, DEVICES)
    first_part = midnight + (now - midnight) / 2
    write_readings(data_root, today, "first.parquet", _readings(today, midnight, first_part))
    materialize_registry(resources, instance)
    materialize_clean(resources, instance, today.isoformat())

    first = _features(resources, instance, today.isoformat())
    assert first.success
    failed = [c.check_name for c in first.get_asset_check_evaluations() if not c.passed]
    assert failed == [], failed
    written = table(spark, features_table()).where(F.col("window_date") == today.isoformat())
    assert written.where(F.col("window_duration_minutes") == 1440).count() == 0  # the day's only window is open
    assert written.where(F.col("window_end") > F.lit(now)).count() == 0

    # More of the day lands, plus a re-sent reading for the first minute with another value.
    resent = _readings(today, midnight, midnight + timedelta(minutes=1), shift=1.0)
    write_readings(data_root, today, "second.parquet", pd.concat([_readings(today, first_part, now), resent]))
    materialize_clean(resources, instance, today.isoformat())
    second = _features(resources, instance, today.isoformat())
    failed = [c.check_name for c in second.get_asset_check_evaluations() if not c.passed]
    assert failed == [], failed
    by_asset = {e.asset_key.to_user_string(): e.materialization.metadata for e in second.get_asset_materialization_events()}
    fifteen = by_asset["device_features_15m"]
    second_ran_at = datetime.fromisoformat(fifteen["computed_at"].value)
    # Windows between the first minute (re-sent) and the first file's end got no new reading: not
    # recomputed, nor is the window still open. Soon after midnight every closed window is.
    quarter = timedelta(minutes=15)
    closed = int((second_ran_at - midnight) / quarter)
    untouched = max(0, int((first_part - midnight) / quarter) - 1)
    assert fifteen["windows_recomputed"].value <= len(DEVICES) * (closed - untouched), (closed, untouched)
    incremental = _rows(spark, today.isoformat(), second_ran_at)

    # The second run's look-back check counted only the windows closed since the first run (and the
    # re-sent first minute's): a window of that span gone from the table is a mismatch.
    def look_back(result) -> dg.AssetCheckEvaluation:
        (found,) = [
            c
            for c in result.get_asset_check_evaluations()
            if c.check_name == "check_windows_look_backward" and c.asset_key.path[-1] == "device_features_15m"
        ]
        return found

    assert look_back(second).metadata["scope"].value.startswith("windows from "), look_back(second).metadata["scope"].value
    features = DeltaTables(spark=DeltaSparkResource())
    DeltaTable.forPath(spark, features.path(features_table())).delete(
        (F.col("window_duration_minutes") == 15) & (F.col("device_id") == "dev-b") & (F.col("window_start") == F.lit(midnight))
    )
    only_the_checks = _features(resources, instance, today.isoformat(), sizes=ASSETS[:1], checks_only=True)
    assert not look_back(only_the_checks).passed and look_back(only_the_checks).metadata["windows_with_outside_inputs"].value == 1

    # The rebuild (which restores the deleted window) is only compared with the incremental rows: its
    # checks were judged on those rows above.
    assert _features(resources, instance, today.isoformat(), sizes=ASSETS[:1], with_checks=False, full=True).success
    # Same windows, same values (the kernel's sums may differ in the last bit with the batch's layout).
    fifteen_only = incremental[incremental["window_duration_minutes"] == 15].reset_index(drop=True)
    rebuilt = _rows(spark, today.isoformat(), second_ran_at)
    rebuilt = rebuilt[rebuilt["window_duration_minutes"] == 15].reset_index(drop=True)
    pd.testing.assert_frame_equal(rebuilt, fifteen_only, check_exact=False, rtol=1e-9)

    # Judged by data time: readings up to a minute ago are fresh; a Device object never built is not.
    checks_only = dg.Definitions(asset_checks=[data_time_freshness_checks], resources=resources | {"feature_store": FeatureStoreResource()})
    judged = checks_only.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
    verdicts = {e.asset_key.to_user_string(): e.passed for e in judged.get_asset_check_evaluations()}
    assert verdicts["clean_sensor_readings"] and not verdicts["device_objects"]
