"""Time travel honoured: tables keep their history as long as VACUUM keeps files, and an `as_of`
older than the retained log is a clear error rather than features that silently read as NULL."""

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from delta.tables import DeltaTable

from fs_resources.delta import DeltaTables, keep_history
from fs_resources.offline import HistoricalFeaturesError, OfflineStore
from fs_resources.spark import HISTORY_RETENTION_DAYS, DeltaSparkResource
from tests.feature_tables import windows_frame, write_windows

pytestmark = pytest.mark.integration

UTC = timezone.utc
START = datetime(2026, 1, 5, tzinfo=UTC)
TABLE = "device_features/v1"


def _entities() -> pd.DataFrame:
    return pd.DataFrame({"device_id": ["dev-1"], "event_time": [START + timedelta(hours=2)]})


def test_new_tables_keep_their_history_as_long_as_vacuum_keeps_files(spark, data_root):
    write_windows(spark, windows_frame([("dev-1", START, 60)]))
    properties = DeltaTable.forPath(spark, DeltaTables(spark=DeltaSparkResource()).path(TABLE)).detail().first()["properties"]
    wanted = f"interval {HISTORY_RETENTION_DAYS} days"
    assert properties["delta.logRetentionDuration"] == wanted and properties["delta.deletedFileRetentionDuration"] == wanted


def test_keep_history_raises_a_table_created_with_delta_defaults(spark, data_root):
    delta = DeltaTables(spark=DeltaSparkResource())
    spark.conf.unset("spark.databricks.delta.properties.defaults.logRetentionDuration")
    try:
        spark.createDataFrame([(1,)], "x int").write.format("delta").save(delta.path("old_table"))
    finally:
        spark.conf.set("spark.databricks.delta.properties.defaults.logRetentionDuration", f"interval {HISTORY_RETENTION_DAYS} days")
    assert "delta.logRetentionDuration" not in (DeltaTable.forPath(spark, delta.path("old_table")).detail().first()["properties"] or {})
    keep_history(delta, "old_table", 24 * 120)
    properties = DeltaTable.forPath(spark, delta.path("old_table")).detail().first()["properties"]
    assert properties["delta.logRetentionDuration"] == "interval 120 days"


def test_as_of_before_the_retained_log_names_the_earliest_time_available(spark, data_root):
    write_windows(spark, windows_frame([("dev-1", START, 60)], seed=1))
    write_windows(spark, windows_frame([("dev-1", START, 60)], seed=2))
    write_windows(spark, windows_frame([("dev-1", START, 60)], seed=3))
    store = OfflineStore(feature_set_version="v1")
    between = datetime.fromtimestamp(Path(store.path, "_delta_log", f"{1:020d}.json").stat().st_mtime, UTC) + timedelta(milliseconds=1)
    # Before any cleanup, that time reads fine.
    assert store.get_historical_features(_entities(), ["temp_evaporator_mean"], 60, as_of=between)["feature_window_end"].notna().all()
    # Delta's log cleanup: a checkpoint at the latest version, then the older commit files removed.
    DeltaTable.forPath(spark, store.path).toDF().count()
    spark.sql(f"ALTER TABLE delta.`{store.path}` SET TBLPROPERTIES ('delta.checkpointInterval' = '1')")
    write_windows(spark, windows_frame([("dev-1", START, 60)], seed=4))
    log = Path(store.path, "_delta_log")
    assert list(log.glob("*.checkpoint.parquet"))
    for version in range(3):
        os.remove(log / f"{version:020d}.json")
    with pytest.raises(HistoricalFeaturesError, match="earliest time it can be read as of is"):
        store.get_historical_features(_entities(), ["temp_evaporator_mean"], 60, as_of=between)
    # Now is still fine.
    assert store.get_historical_features(_entities(), ["temp_evaporator_mean"], 60)["feature_window_end"].notna().all()


def test_as_of_before_the_table_existed_reads_as_nothing_known(spark, data_root):
    write_windows(spark, windows_frame([("dev-1", START, 60)]))
    store = OfflineStore(feature_set_version="v1")
    got = store.get_historical_features(_entities(), ["temp_evaporator_mean"], 60, as_of=datetime(2020, 1, 1, tzinfo=UTC))
    assert got["feature_window_end"].isna().all() and got["temp_evaporator_mean"].isna().all()
