"""A features run whose clean change feed is gone since its previous run (VACUUM, log retention, a
clean table created anew) recomputes its days whole, says why with the versions, and writes what a
full recompute writes."""

import os
import shutil
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from fs_assets.features import touched
from fs_assets.features.assets import feature_assets
from fs_assets.ingest.assets import clean_sensor_readings
from fs_domain.tables import CLEAN_TABLE, features_table
from fs_resources.change_feed import feed_range, table_identity
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.spark import DeltaSparkResource
from tests.conftest import SIM_START
from tests.ingest_runs import materialize_registry, table
from tests.landing_files import readings, registry, write_readings

pytestmark = pytest.mark.integration

DEVICES = ["dev-a", "dev-b", "dev-c"]
DAY = SIM_START
# The 15-minute size alone: the fallback is decided per run, the same for every size.
FIFTEEN = [a for a in feature_assets if a.key.path[-1] == "device_features_15m"]


def _land(data_root: Path, name: str, minutes: range, shift: float = 0.0) -> None:
    frames = [readings(d, DAY, minutes, temp_condenser=40.0 + i + shift) for i, d in enumerate(DEVICES)]
    write_readings(data_root, DAY, name, pd.concat(frames, ignore_index=True))


def _clean(resources, instance, rebuild: bool = False) -> None:
    result = dg.materialize(
        [clean_sensor_readings], partition_key=DAY.isoformat(), resources=resources, instance=instance,
        run_config={"ops": {"clean_sensor_readings": {"config": {"rebuild": rebuild}}}},
    )  # fmt: skip
    assert result.success


def _features(resources, instance, full: bool = False) -> dict:
    result = dg.materialize(
        FIFTEEN, partition_key=DAY.isoformat(), resources=resources | {"feature_store": FeatureStoreResource()}, instance=instance,
        run_config={"ops": {FIFTEEN[0].op.name: {"config": {"full": full}}}},
    )  # fmt: skip
    assert result.success
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _rows(spark) -> pd.DataFrame:
    rows = table(spark, features_table()).where(F.col("window_date") == DAY.isoformat()).drop("computed_at").toPandas()
    return rows.sort_values(["device_id", "window_start"]).reset_index(drop=True)


def _first_features_then_more_data(resources, instance, data_root) -> tuple[dict, pd.DataFrame]:
    """The day's first features from the morning's readings; then the afternoon lands with a re-sent
    first minute of another value, and is cleaned (a MERGE: change files in the feed)."""
    registry(data_root, DEVICES)
    _land(data_root, "morning.parquet", range(0, 360))
    materialize_registry(resources, instance)
    _clean(resources, instance)
    first = _features(resources, instance)
    assert first[touched.CLEAN_TABLE_ID_KEY] and first[touched.FALLBACK_KEY] == {}
    before = _rows(resources["spark"].spark_session)
    _land(data_root, "afternoon.parquet", range(360, 720))
    _land(data_root, "resent.parquet", range(0, 1), shift=5.0)
    return first, before


def _equal_to_a_full_recompute(spark, resources, instance) -> pd.DataFrame:
    fallen_back = _rows(spark)
    assert _features(resources, instance, full=True)[touched.FALLBACK_KEY] == {}
    # Same windows, same values (the kernel's sums may differ in the last bit with the batch's layout).
    pd.testing.assert_frame_equal(fallen_back, _rows(spark), check_exact=False, rtol=1e-9)
    return fallen_back


def test_a_vacuumed_change_feed_recomputes_the_day_whole_and_says_why(spark, resources, instance, data_root):
    first, before = _first_features_then_more_data(resources, instance, data_root)
    _clean(resources, instance)
    delta = DeltaTables(spark=DeltaSparkResource())
    recorded = first[touched.CLEAN_VERSION_KEY]
    assert feed_range(delta, CLEAN_TABLE, recorded + 1, delta.version(CLEAN_TABLE)).gone is None
    # VACUUM with no retention deletes the change files the feed since the recorded version is read from.
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        DeltaTable.forPath(spark, delta.path(CLEAN_TABLE)).vacuum(0)
    finally:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")

    md = _features(resources, instance)
    fallback = md[touched.FALLBACK_KEY][DAY.isoformat()]
    assert "deleted (VACUUM)" in fallback["reason"] and md["recomputed"][DAY.isoformat()] == "recomputed whole: " + fallback["reason"]
    assert (fallback["recorded_version"], fallback["current_version"]) == (recorded, delta.version(CLEAN_TABLE))
    assert md["windows_recomputed"] == "all (whole days)"
    after = _equal_to_a_full_recompute(spark, resources, instance)
    assert len(after) == len(DEVICES) * 48 and len(before) == len(DEVICES) * 24


def test_a_clean_table_created_anew_recomputes_the_day_whole_and_says_why(spark, resources, instance, data_root):
    first, before = _first_features_then_more_data(resources, instance, data_root)
    delta = DeltaTables(spark=DeltaSparkResource())
    old = table_identity(delta, CLEAN_TABLE)
    recorded = first[touched.CLEAN_VERSION_KEY]
    # Deleted and rebuilt from the landing zone, until its versions reach the one recorded: the
    # version alone no longer tells the tables apart.
    shutil.rmtree(delta.path(CLEAN_TABLE))
    _clean(resources, instance, rebuild=True)
    while delta.version(CLEAN_TABLE) < recorded:
        _clean(resources, instance, rebuild=True)
    new = table_identity(delta, CLEAN_TABLE)
    assert new.table_id != old.table_id

    md = _features(resources, instance)
    fallback = md[touched.FALLBACK_KEY][DAY.isoformat()]
    assert "created anew" in fallback["reason"] and md["recomputed"][DAY.isoformat()] == "recomputed whole: " + fallback["reason"]
    assert (fallback["recorded_table_id"], fallback["table_id"]) == (old.table_id, new.table_id)
    assert (fallback["recorded_version"], fallback["current_version"]) == (recorded, delta.version(CLEAN_TABLE))
    after = _equal_to_a_full_recompute(spark, resources, instance)
    assert len(after) == len(DEVICES) * 48 and len(before) == len(DEVICES) * 24


def test_a_record_without_a_table_id_is_judged_by_the_tables_creation():
    """A run recorded before table ids were kept: a clean table created after it is another table."""
    from fs_resources.change_feed import TableIdentity

    delta = DeltaTables(spark=DeltaSparkResource())
    ran_at = datetime(2026, 1, 6, tzinfo=UTC)
    prev = touched.Previous(clean_version=3, computed_at=ran_at)
    created_later = TableIdentity("id-new", ran_at + timedelta(hours=1), change_feed=True)
    gone = touched.feed_gone(delta, CLEAN_TABLE, prev, created_later, clean_version=5)
    assert gone is not None and "created anew" in gone["reason"] and gone["recorded_version"] == 3 and gone["current_version"] == 5


def test_a_log_cleaned_past_the_recorded_version_is_found_before_reading(spark, data_root):
    """Delta's own log cleanup (after `delta.logRetentionDuration`) removes the commits the feed is read from."""
    delta = DeltaTables(spark=DeltaSparkResource())
    frame = spark.createDataFrame([(date(2026, 1, 5), "dev-a", 1.0)], "day date, device_id string, value double")
    properties = {
        "delta.enableChangeDataFeed": "true",
        "delta.logRetentionDuration": "interval 1 days",
        "delta.deletedFileRetentionDuration": "interval 1 days",
        "delta.checkpointInterval": "3",
    }
    delta.replace_partitions(frame, "feed", {"day": [date(2026, 1, 5)]}, properties=properties)
    for value in (2.0, 3.0):
        delta.replace_partitions(frame.withColumn("value", F.lit(value)), "feed", {"day": [date(2026, 1, 5)]})
    log = Path(delta.path("feed")) / "_delta_log"
    assert feed_range(delta, "feed", 1, 2).gone is None
    # Commits written three days ago by the file system's clock, which the cleanup goes by; the next
    # checkpoint (v3) cleans up what expired before it.
    old = time.time() - 3 * 86400
    for commit in log.glob("*.json"):
        os.utime(commit, (old, old))
    delta.replace_partitions(frame.withColumn("value", F.lit(4.0)), "feed", {"day": [date(2026, 1, 5)]})
    held = sorted(int(p.name[:20]) for p in log.glob("*.json"))
    assert held[0] > 1, held  # Delta's cleanup deleted v0..: the precondition, not what is tested

    feed = feed_range(delta, "feed", 1, delta.version("feed"))
    assert feed.oldest_commit == held[0] and "log retention" in feed.gone and "v1" in feed.gone
    assert feed_range(delta, "feed", held[0], delta.version("feed")).gone is None
