"""Weekly Delta maintenance on real tables: retention drops old days, OPTIMIZE keeps contents, VACUUM is safe."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from delta.tables import DeltaTable

from fs_resources.delta import DeltaTables
from fs_resources.spark import DeltaSparkResource
from fs_sensors.maintenance_schedule import table_maintenance_job
from tests.feature_tables import windows_frame, write_windows

pytestmark = pytest.mark.integration

TODAY = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def rows(spark):
    return sorted(
        tuple(map(str, r)) for r in DeltaTables(spark=DeltaSparkResource()).read("device_features/v1").drop("computed_at").collect()
    )


def test_maintenance_moves_expired_days_out_compacts_and_reports_each_step(spark, data_root):
    old, recent = TODAY - timedelta(days=100), TODAY - timedelta(days=2)
    write_windows(spark, windows_frame([("dev-00001", old, 60)], seed=1))
    write_windows(spark, windows_frame([(f"dev-{d:05d}", recent + timedelta(hours=h), 60) for d in range(1, 4) for h in range(4)], seed=7))
    # Rewrite the recent day as four small files, as many small appends would leave it.
    path = DeltaTables(spark=DeltaSparkResource()).path("device_features/v1")
    spark.read.format("delta").load(path).where(f"window_date = DATE'{recent.date()}'").repartition(4).write.format("delta").mode(
        "overwrite"
    ).option("replaceWhere", f"window_date = DATE'{recent.date()}'").save(path)
    kept = [r for r in rows(spark) if str(recent.date()) in r]
    result = table_maintenance_job.execute_in_process(
        resources={"spark": DeltaSparkResource(), "delta": DeltaTables(spark=DeltaSparkResource())},
        run_config={"ops": {"drop_expired_partitions": {"config": {"retention_days": 30}}}},
    )
    assert result.success
    remaining = rows(spark)
    assert remaining == kept and not [r for r in remaining if str(old.date()) in r]
    dropped = result.output_for_node("drop_expired_partitions")
    assert dropped == ["device_features/v1"]
    md = {e.step_key: e.event_specific_data.metadata for e in result.all_events if e.event_type_value == "STEP_OUTPUT"}
    assert md["drop_expired_partitions"]["partitions_archived"].value == 1  # features are archived, not deleted
    assert md["compact_tables"]["files_removed"].value >= 4 and md["compact_tables"]["files_added"].value >= 1
    assert (
        "device_features/v1" in {r.data["table"] for r in md["vacuum_tables"]["tables"].records}
        and md["vacuum_tables"]["retention_hours"].value == 2160
    )
    operations = [h["operation"] for h in DeltaTable.forPath(spark, path).history().collect()]
    assert operations[:4] == ["VACUUM END", "VACUUM START", "OPTIMIZE", "DELETE"]


def test_vacuum_refuses_a_retention_that_could_break_running_readers(spark, data_root):
    write_windows(spark, windows_frame([("dev-00001", TODAY - timedelta(days=1), 60)], seed=1))
    result = table_maintenance_job.execute_in_process(
        resources={"spark": DeltaSparkResource(), "delta": DeltaTables(spark=DeltaSparkResource())},
        run_config={"ops": {"vacuum_tables": {"config": {"vacuum_retention_hours": 1}}}},
        raise_on_error=False,
    )
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "below 168" in failure.event_specific_data.error_display_string


def test_expired_days_move_to_the_archive_once_and_training_reads_them_when_asked(spark, data_root):
    import pandas as pd

    from fs_resources.offline import OfflineStore

    old, recent = TODAY - timedelta(days=100), TODAY - timedelta(days=2)
    write_windows(spark, windows_frame([("dev-00001", old, 60), ("dev-00002", old, 60)], seed=1))
    write_windows(spark, windows_frame([("dev-00001", recent, 60)], seed=7))
    before = rows(spark)
    resources = {"spark": DeltaSparkResource(), "delta": DeltaTables(spark=DeltaSparkResource())}
    config = {"ops": {"drop_expired_partitions": {"config": {"retention_days": 30}}}}
    result = table_maintenance_job.execute_in_process(resources=resources, run_config=config)
    assert result.success
    md = {e.step_key: e.event_specific_data.metadata for e in result.all_events if e.event_type_value == "STEP_OUTPUT"}
    assert md["drop_expired_partitions"]["partitions_archived"].value == 1 and md["drop_expired_partitions"]["rows_archived"].value == 2
    assert md["drop_expired_partitions"]["partitions_dropped"].value == 0
    hot = rows(spark)
    archive = DeltaTables(spark=DeltaSparkResource(), root=str(data_root / "archive"))
    archived = sorted(tuple(map(str, r)) for r in archive.read("device_features/v1").drop("computed_at").collect())
    assert sorted(hot + archived) == before and all(str(old.date()) in r for r in archived)

    # A run killed after the archive's commit and before the delete leaves the day in both: run again,
    # the day is archived once.
    write_windows(spark, windows_frame([("dev-00001", old, 60), ("dev-00002", old, 60)], seed=1))
    assert table_maintenance_job.execute_in_process(resources=resources, run_config=config).success
    assert archive.read("device_features/v1").count() == 2 and sorted(rows(spark)) == sorted(hot)

    # Training over more than the hot table keeps: the old window only through the archive.
    entity = pd.DataFrame({"device_id": ["dev-00002"], "event_time": [old + timedelta(hours=2)]})
    hot_only = OfflineStore().get_historical_features(entity, ["temp_evaporator_mean"], 60, tolerance=timedelta(hours=2))
    assert pd.isna(hot_only["feature_window_end"].iloc[0])
    with_archive = OfflineStore(archive=True).get_historical_features(entity, ["temp_evaporator_mean"], 60, tolerance=timedelta(hours=2))
    assert with_archive["feature_window_end"].iloc[0] == old + timedelta(hours=1)
    sparked = OfflineStore(archive=True).get_historical_features(
        spark.createDataFrame(entity), ["temp_evaporator_mean"], 60, tolerance=timedelta(hours=2)
    )
    assert sparked.first()["feature_window_end"].replace(tzinfo=timezone.utc) == old + timedelta(hours=1)
