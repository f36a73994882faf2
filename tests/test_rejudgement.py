"""Verdicts that can change are judged again: a device the registry learns late, a reading whose time comes."""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest

from fs_assets.features.assets import feature_assets
from fs_assets.ingest.assets import clean_sensor_readings
from fs_domain.contract import FUTURE_TOLERANCE, Reason
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.spark import DeltaSparkResource
from tests.conftest import SIM_START
from tests.ingest_runs import checks, clean_rows, materialize_clean, materialize_registry, metadata, quarantine_rows
from tests.landing_files import day_folder, readings, registry, write_readings

pytestmark = pytest.mark.integration

DAY = SIM_START.isoformat()


def _rows(df, drop=()):
    return sorted(tuple(str(v) for v in row) for row in df.select(*[c for c in df.columns if c not in drop]).collect())


def _features(resources, instance):
    assert dg.materialize(
        feature_assets, partition_key=DAY, resources={**resources, "feature_store": FeatureStoreResource()}, instance=instance
    ).success
    return DeltaTables(spark=DeltaSparkResource()).read("device_features/v1")


def test_a_device_registered_after_its_readings_ends_with_them_clean_counted_and_in_its_features(spark, resources, instance, data_root):
    registry(data_root, ["dev-a"])
    write_readings(
        data_root,
        SIM_START,
        "a.parquet",
        pd.concat([readings("dev-a", SIM_START, range(0, 120)), readings("dev-b", SIM_START, range(0, 90))]),
    )
    (day_folder(data_root, SIM_START) / "b.csv").write_text(
        "device_id,ts,temp_evaporator\ndev-b,2026-01-05T01:30:00Z,-21.5\ndev-b,2026-01-05T00:10:00Z,NaN\n"
    )
    materialize_registry(resources, instance)
    first = materialize_clean(resources, instance, DAY)
    assert metadata(first)["quarantined_by_reason"] == {Reason.UNKNOWN_DEVICE: 92}
    features = _features(resources, instance)
    assert features.where("device_id = 'dev-b'").count() == 0

    registry(data_root, ["dev-a", "dev-b"])
    learned = materialize_registry(resources, instance)
    assert metadata(learned)["days_to_rejudge"] == [DAY]
    second = materialize_clean(resources, instance, DAY)
    md = metadata(second)
    assert md["files_read"] == 0 and md["readmitted_by_reason"] == {Reason.UNKNOWN_DEVICE: 92}
    assert (md["readmitted_rows_added"], md["readmitted_rows_duplicate"]) == (91, 1)  # b.csv re-sends 00:10 (latest ingested wins)
    assert all(c.passed for c in checks(second).values()), {c.check_name: c.description for c in checks(second).values()}
    assert clean_rows(spark, DAY).where("device_id = 'dev-b'").count() == 91
    held = quarantine_rows(spark, DAY)
    assert held.where("readmitted_at IS NULL").count() == 0 and held.where("readmission = 'added'").count() == 91
    # The registry no longer names the day, and a later run re-admits nothing twice.
    assert metadata(materialize_registry(resources, instance))["days_to_rejudge"] == []
    third = materialize_clean(resources, instance, DAY)
    assert metadata(third)["readmitted_by_reason"] == {} and checks(third)["check_accounting_identity"].passed

    hourly = _features(resources, instance).where("device_id = 'dev-b' AND window_duration_minutes = 60")
    counts = {r["window_start"].hour: r["reading_count"] for r in hourly.collect()}
    assert counts == {0: 60, 1: 31}

    incremental = _rows(clean_rows(spark, DAY))
    rebuilt = dg.materialize(
        [clean_sensor_readings], partition_key=DAY, resources=resources, instance=instance,
        run_config={"ops": {"clean_sensor_readings": {"config": {"rebuild": True}}}},
    )  # fmt: skip
    assert checks(rebuilt)["check_accounting_identity"].passed
    again = _rows(clean_rows(spark, DAY))
    assert again == incremental, (sorted(set(again) - set(incremental))[:3], sorted(set(incremental) - set(again))[:3])


def test_a_reading_stamped_ahead_is_judged_again_once_its_time_has_passed(spark, resources, instance, data_root):
    if (datetime.now(UTC) + timedelta(minutes=11)).date() != datetime.now(UTC).date():
        time.sleep(
            (datetime.combine(datetime.now(UTC).date() + timedelta(days=1), datetime.min.time(), UTC) - datetime.now(UTC)).total_seconds()
            + 1
        )
    # A gateway clock running ahead: its reading is stamped just past what the run tolerates.
    stamped = (datetime.now(UTC) + FUTURE_TOLERANCE + timedelta(seconds=20)).replace(microsecond=0)
    day = stamped.date()
    registry(data_root, ["dev-a"])
    frame = readings("dev-a", day, range(2))
    # The gateway's other reading is on time and on the same day, whatever the hour the test runs at.
    earlier = max(stamped - timedelta(hours=1), datetime.combine(day, datetime.min.time(), UTC))
    frame["ts"] = [pd.Timestamp(earlier), pd.Timestamp(stamped)]
    write_readings(data_root, day, "ahead.parquet", frame)
    materialize_registry(resources, instance)
    first = materialize_clean(resources, instance, day.isoformat())
    md = metadata(first)
    assert md["quarantined_by_reason"] == {Reason.FUTURE_TIMESTAMP: 1} and md["readmitted_by_reason"] == {}
    due = datetime.fromisoformat(md["rejudge_due_at"])
    assert due == stamped - FUTURE_TOLERANCE

    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 1)
    second = materialize_clean(resources, instance, day.isoformat())
    md = metadata(second)
    assert md["files_read"] == 0 and md["readmitted_by_reason"] == {Reason.FUTURE_TIMESTAMP: 1}
    assert md["rejudge_due_at"] == "none"
    assert checks(second)["check_accounting_identity"].passed
    assert clean_rows(spark, day.isoformat()).count() == 2
    (held,) = quarantine_rows(spark, day.isoformat()).collect()
    assert held["reason"] == Reason.FUTURE_TIMESTAMP and held["readmission"] == "added" and held["readmitted_at"] is not None
